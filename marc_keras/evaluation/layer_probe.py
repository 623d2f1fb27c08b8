"""Layer-wise probing: score every layer's pooled vectors downstream (the MRA curve, DESIGN.md Sec. 5).

MARC's motivation is the mid-layer representation advantage: after
fine-tune-then-compress training, a middle layer of the LLM gives a better
downstream ranker than the last one. The probe pools every layer of a
backbone for every user and item text, trains the downstream DCNv2 on each
layer's vectors, and reports test AUC per layer.
"""

import dataclasses
import json
import re
import time
from pathlib import Path

import keras
import numpy as np

from marc_keras.evaluation.ctr_metrics import relative_improvement
from marc_keras.evaluation.downstream_evaluator import BASELINE_ROW, DownstreamEvaluator
from marc_keras.evaluation.mra_plot import write_mra_report
from marc_keras.evaluation.ranking_features import RankingFeatures
from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.length_batches import encode_in_length_order
from marc_keras.marc_run import CONFIG_FILE, MARCRun, build_split, default_preset, write_atomically
from marc_keras.run_config import RunConfig

TOWERS = ("user", "item")
FROZEN = "frozen"
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclasses.dataclass
class LayerVectors:
    """Every layer's pooled vectors for the users and items of a split.

    Args:
        user_ids: (U,) ids, sorted.
        users: (U, L + 1, d) float32: the pooled embeddings, then each block.
        item_ids: (I,) ids, sorted.
        items: (I, L + 1, d) float32.
        compressed: `None`, or {"user": (U, k), "item": (I, k)}: a trained
            MARC's compressed vectors (MARC-C) of the same texts.
    """

    user_ids: np.ndarray
    users: np.ndarray
    item_ids: np.ndarray
    items: np.ndarray
    compressed: dict | None = None

    @property
    def num_layers(self):
        """L + 1: the embeddings and the L blocks."""
        return self.users.shape[1]

    def save(self, path, fingerprint=""):
        """Writes an `.npz` atomically; `fingerprint` names what made the vectors."""
        arrays = {
            "fingerprint": np.array(fingerprint),
            "user_ids": np.asarray(self.user_ids),
            "item_ids": np.asarray(self.item_ids),
            "user/layers": self.users,
            "item/layers": self.items,
        }
        for tower, vectors in (self.compressed or {}).items():
            arrays[f"{tower}/compressed"] = vectors
        write_atomically(path, lambda temporary: np.savez(temporary, **arrays))

    @classmethod
    def load(cls, path, fingerprint=None, split=None):
        """Reads vectors saved by `save`, or `None` when they are not current.

        Args:
            path: the `.npz` file.
            fingerprint: when given, the file must have been saved with it.
            split: when given, the file must hold exactly its users and items.

        Returns:
            `LayerVectors`, or `None` when the file is missing or was made by
            another model or for another split.
        """
        path = Path(path)
        if not path.is_file():
            return None
        with np.load(path) as stored:
            if "fingerprint" not in stored.files:
                return None
            if fingerprint is not None and str(stored["fingerprint"]) != fingerprint:
                return None
            user_ids, item_ids = stored["user_ids"], stored["item_ids"]
            if split is not None and (
                user_ids.tolist() != sorted(split.user_texts) or item_ids.tolist() != sorted(split.item_texts)
            ):
                return None
            compressed = {tower: stored[f"{tower}/compressed"] for tower in TOWERS if f"{tower}/compressed" in stored.files}
            return cls(user_ids, stored["user/layers"], item_ids, stored["item/layers"], compressed or None)


def _feed_forward(model, vectors, batch_size):
    """Runs a small (B, d) -> (B, k) network over numpy rows, without gradients."""
    inputs = keras.Input((vectors.shape[1],))
    return keras.Model(inputs, model(inputs)).predict(vectors, batch_size=batch_size, verbose=0).astype("float32")


class LayerProbe:
    """Encodes texts with every layer of a backbone and scores each layer downstream.

    Draws one point per backbone layer of the MRA curve (DESIGN.md Sec. 5):
    the backbone's `return_all_layers=True` output gives each text's pooled
    embeddings and the pooled output of each of the L blocks; the
    downstream DCNv2 is then trained on each layer's user and item vectors.
    `probe` does both; `encode_split` and `evaluate_layers` are the two
    steps alone, and the encoded vectors can be cached in an `.npz` file.

    Args:
        backbone: a `LoRABackbone` with a tokenizer: a frozen preset
            backbone (`lora_rank=0`) or the `backbone` of a trained `MARC`.
        compression: `None`, or a dict tower -> the trained MARC's
            compression network, to also emit MARC-C vectors from the last
            layer.
        batch_size: texts per forward pass.
        verbose: show progress bars.

    Example:
    >>> probe = LayerProbe(LoRABackbone.from_preset(path, lora_rank=0))
    >>> rows = probe.probe(split, features, DownstreamConfig(seeds=(0, 1, 2)), method="frozen",
    ...                    cache_path="probe/layers-frozen.npz", fingerprint="minilm")
    >>> [(row["layer"], row["auc_mean"]) for row in rows]
    """

    def __init__(self, backbone, compression=None, batch_size=64, verbose=1):
        if not isinstance(backbone, LoRABackbone):
            raise TypeError(f"LayerProbe needs a LoRABackbone; got {type(backbone).__name__}.")
        self.backbone = backbone
        self.compression = compression
        self.batch_size = int(batch_size)
        self.verbose = verbose
        token_inputs = {
            name: keras.Input((None,), dtype="int32", name=name) for name in ("token_ids", "padding_mask")
        }
        # A functional view, so that `predict_on_batch` runs without gradients.
        self._layer_states = keras.Model(
            token_inputs, backbone(token_inputs, return_all_layers=True)["layers"]
        )

    @property
    def num_layers(self):
        """L + 1: the embeddings and the L blocks."""
        return self.backbone.num_layers + 1

    def encode(self, texts):
        """Pools every layer for each text, batching texts of similar length.

        Args:
            texts: a sequence of strings.

        Returns:
            A float32 (N, L + 1, d) array; row i is `texts[i]`, entry
            [:, -1] is the backbone's pooled output.
        """
        texts = list(texts)
        layers, dim = self.num_layers, self.backbone.hidden_dim
        if not texts:
            return np.zeros((0, layers, dim), "float32")
        tokens = self.backbone.tokenize(texts)
        progress = keras.utils.Progbar(len(texts), unit_name="text") if self.verbose else None

        def run_batch(batch):
            states = np.asarray(self._layer_states.predict_on_batch(batch))
            return {"layers": states.reshape(len(states), layers * dim)}

        flat = encode_in_length_order(
            tokens,
            {"layers": layers * dim},
            run_batch,
            batch_size=self.batch_size,
            on_batch=progress.add if progress is not None else None,
        )["layers"]
        return flat.reshape(len(texts), layers, dim)

    def encode_split(self, split, cache_path=None, fingerprint=""):
        """Encodes every user text and item text of a split.

        Args:
            split: a `KARSplit`.
            cache_path: an `.npz` file; vectors already there for the same
                `fingerprint` and the same users and items are reused,
                otherwise the file is (re)written atomically.
            fingerprint: a string naming the model and the data settings
                the texts came from.

        Returns:
            `LayerVectors`, ids sorted.
        """
        if cache_path is not None:
            cached = LayerVectors.load(cache_path, fingerprint, split)
            if cached is not None:
                return cached
        user_ids, item_ids = sorted(split.user_texts), sorted(split.item_texts)
        users = self.encode(split.user_texts[user] for user in user_ids)
        items = self.encode(split.item_texts[item] for item in item_ids)
        compressed = None
        if self.compression is not None:
            compressed = {
                tower: _feed_forward(self.compression[tower], vectors[:, -1], 4 * self.batch_size)
                for tower, vectors in (("user", users), ("item", items))
            }
        vectors = LayerVectors(np.array(user_ids), users, np.array(item_ids), items, compressed)
        if cache_path is not None:
            vectors.save(cache_path, fingerprint)
        return vectors

    def probe(self, split, features, config=None, layers=None, method="probe", cache_path=None, fingerprint="", log=print):
        """Encodes a split (see `encode_split`) and scores each layer (see `evaluate_layers`).

        Args:
            split: a `KARSplit`.
            features: its `RankingFeatures`.
            config: a `DownstreamConfig`, `None` for the defaults.
            layers: layer indices to score, `None` for all L + 1.
            method: the name of the curve.
            cache_path: `.npz` cache of the encoded vectors, or `None`.
            fingerprint: names the model and data settings of the cache.
            log: callable taking one progress line.

        Returns:
            One row per scored layer, as `evaluate_layers` returns them.
        """
        check_layers(layers, self.num_layers, method)
        vectors = self.encode_split(split, cache_path, fingerprint)
        return evaluate_layers(DownstreamEvaluator(features, config, log=log), vectors, layers, method)


def check_layers(layers, num_layers, method):
    """The layer indices to probe: all by default; out-of-range ones are errors."""
    if layers is None:
        return list(range(num_layers))
    layers = [int(layer) for layer in layers]
    wrong = [layer for layer in layers if not 0 <= layer < num_layers]
    if wrong or not layers:
        raise ValueError(
            f"Layers {wrong or '[]'} are not in 0..{num_layers - 1} for '{method}' "
            f"(0 = embeddings, {num_layers - 1} = last block); choose --layers in that range."
        )
    return sorted(set(layers))


def evaluate_layers(evaluator, vectors, layers=None, method="probe"):
    """Trains the downstream DCNv2 on each layer's vectors.

    Args:
        evaluator: a `DownstreamEvaluator` (its features, config and seeds).
        vectors: `LayerVectors` of the evaluator's split.
        layers: layer indices to score, `None` for all L + 1.
        method: the name of the curve (e.g. "frozen" or a run's label).

    Returns:
        One row per layer, in layer order: `method`, `layer` and the fields
        of `DownstreamEvaluator.summary_row` (`auc_mean`, `auc_std`,
        `logloss_mean`, `logloss_std`, per-seed `aucs`, `loglosses`, `seconds`).
    """
    features = evaluator.features
    rows = []
    for layer in check_layers(layers, vectors.num_layers, method):
        tables = (
            features.vector_table(vectors.user_ids, vectors.users[:, layer], "user"),
            features.vector_table(vectors.item_ids, vectors.items[:, layer], "item"),
        )
        (row,) = evaluator.evaluate({f"{method}/layer-{layer}": lambda seed, tables=tables: tables})
        rows.append({"method": method, "layer": layer, **row})
    return rows


def evaluate_compressed(evaluator, vectors, method):
    """The downstream row of a run's MARC-C vectors, placed at its last layer."""
    tables = tuple(
        evaluator.features.vector_table(ids, vectors.compressed[tower], tower)
        for tower, ids in (("user", vectors.user_ids), ("item", vectors.item_ids))
    )
    (row,) = evaluator.evaluate({f"{method}/marc-c": lambda seed: tables})
    return {"method": method, "layer": vectors.num_layers - 1, **row}


def _source(source, config, load):
    """What a curve is encoded with: a description, the cache fingerprint, a loader."""
    # The texts depend on the [data] settings, the vectors on the model.
    fingerprint = json.dumps({"source": source, "data": dataclasses.asdict(config.data)}, sort_keys=True)
    return {"source": source, "fingerprint": fingerprint, "load": load}


def _model_fingerprint(path):
    status = Path(path).stat()
    return f"{Path(path).resolve()}:{status.st_size}:{status.st_mtime_ns}"


def _open_runs(run_dirs, labels, overrides):
    labels = list(labels or ())
    if labels and len(labels) != len(run_dirs):
        raise ValueError(f"Got {len(labels)} --label values for {len(run_dirs)} --run-dir values; give one per run or none.")
    runs = []
    for index, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        if not (run_dir / CONFIG_FILE).is_file():
            raise ValueError(f"'{run_dir}' holds no {CONFIG_FILE}; pass a run directory made by `marc-keras fit`.")
        label = labels[index] if labels else run_dir.resolve().name
        runs.append((label, MARCRun(run_dir, RunConfig.from_file(run_dir / CONFIG_FILE, overrides))))
    if any(run.config.data != runs[0][1].config.data for _, run in runs):
        raise ValueError("Runs probed together must share the same [data] settings (same split).")
    return runs


def _run_source(run):
    if not run.model_path.is_file():
        raise ValueError(f"Run '{run.run_dir}' has no model.keras yet; finish it with `marc-keras fit` first.")

    def load():
        model = keras.saving.load_model(run.model_path)
        return model.backbone, {tower: model.tower_compression(tower) for tower in TOWERS}

    return _source({"run": str(run.run_dir.resolve()), "model": _model_fingerprint(run.model_path)}, run.config, load)


def _frozen_source(config):
    settings = config.model
    preset = settings.preset or default_preset()

    def load():
        backbone = LoRABackbone.from_preset(
            preset, lora_rank=0, pooling=settings.pooling, max_length=settings.max_length
        )
        return backbone, None

    source = {"preset": str(preset), "pooling": settings.pooling, "max_length": settings.max_length}
    return _source(source, config, load)


def probe_runs(
    run_dirs,
    output_dir,
    labels=None,
    frozen=False,
    overrides=(),
    layers=None,
    markers=True,
    batch_size=64,
    log=print,
    verbose=1,
    config=None,
):
    """The MRA curve of trained MARC runs (and the frozen backbone): AUC per layer.

    Builds the runs' split and ranking features once, encodes every user and
    item text with every layer of each backbone (cached as
    `layers-METHOD.npz` in `output_dir` and reused while the model file and
    `[data]` settings are unchanged), then trains the downstream DCNv2 on
    each layer with the `[evaluate]` settings and seeds. With `markers`,
    DCNv2 without vectors and each run's MARC-C vectors are scored too and
    drawn as horizontal lines. Writes `probe.json`, `probe.md` and
    `mra.png` into `output_dir`; every downstream score is kept in
    `probe-progress.json` as it lands, so a re-run resumes.

    Args:
        run_dirs: `marc-keras fit` run directories; their [data] settings
            must agree. The first run's config also sets up the frozen
            backbone (preset, pooling, max_length) and the downstream training.
        output_dir: where the cache and the report go.
        labels: one curve name per run, `None` for the directory names.
        frozen: also probe the pretrained backbone with LoRA off (curve "frozen").
        overrides: `section.key=value` strings applied to every run's
            config, e.g. "evaluate.seeds=[0,1]"; "training.threads=N" sets
            torch's CPU threads, as in `fit`.
        layers: layer indices to score (0 = embeddings), `None` for all.
        markers: also score "dcnv2" and each run's MARC-C.
        batch_size: texts per forward pass when encoding.
        log: callable taking one progress line.
        verbose: show encoding progress bars.
        config: a `RunConfig` standing in for the runs' when `run_dirs` is
            empty: probes only the pretrained backbone it names (needs
            `frozen`), e.g. a decoder that has no trained run.

    Returns:
        The report written to `probe.json`: dataset, seeds, downstream
        settings, `methods` (source, layer count and width, cache file per
        curve), `rows` (one per method and layer, see `evaluate_layers`,
        with `relaimpr` against "dcnv2" when markers are on) and `markers`.

    Raises:
        ValueError: a run is unfinished, labels clash, runs differ in their
            [data] settings, `layers` are out of range, or neither runs nor
            a config with `frozen` say what to probe.

    Example:
    >>> report = probe_runs(["runs/marc"], "runs/probe", frozen=True, overrides=["evaluate.seeds=[0,1,2]"])
    """
    if run_dirs and config is not None:
        raise ValueError("Give either --run-dir (the runs' configs are used) or --config, not both.")
    if not run_dirs and (config is None or not frozen):
        raise ValueError(
            "Nothing to probe: give at least one --run-dir (its config.json names the data, preset and pooling), "
            "or --config with --frozen to probe only the pretrained backbone."
        )
    runs = _open_runs(run_dirs, labels, overrides) if run_dirs else []
    config = runs[0][1].config if runs else config
    output_dir = Path(output_dir)
    if config.training.threads:
        import torch

        torch.set_num_threads(config.training.threads)
    sources = {FROZEN: _frozen_source(config)} if frozen else {}
    for label, run in runs:
        if not LABEL_PATTERN.match(label):
            raise ValueError(f"Curve label '{label}' must be letters, digits, '.', '_' or '-'; pass --label to name the run.")
        if label in sources:
            raise ValueError(f"Two curves are named '{label}'; give each --run-dir its own --label.")
        sources[label] = _run_source(run)

    started = time.perf_counter()
    split, interactions = build_split(config.data, with_interactions=True)
    features = RankingFeatures(split, interactions)
    log(f"split and features ready in {time.perf_counter() - started:.0f}s")
    encoded, methods = {}, []
    for method, source in sources.items():
        cache = output_dir / f"layers-{method}.npz"
        vectors = LayerVectors.load(cache, source["fingerprint"], split)
        if vectors is None:
            log(f"encoding {len(split.user_texts)} users and {len(split.item_texts)} items with every layer of '{method}'")
            backbone, compression = source["load"]()
            probe = LayerProbe(backbone, compression, batch_size, verbose)
            vectors = probe.encode_split(split, cache, source["fingerprint"])
        else:
            log(f"reusing the layer vectors of '{method}' in {cache}")
        check_layers(layers, vectors.num_layers, method)
        encoded[method] = vectors
        methods.append({
            "method": method,
            "source": source["source"],
            "num_layers": vectors.num_layers,
            "hidden_dim": int(vectors.users.shape[2]),
            "cache": str(cache),
        })

    # Scores are kept per (row, seed) while the data, downstream settings and
    # every curve's model stay the same, so an interrupted probe resumes.
    fingerprint = {
        "data": dataclasses.asdict(config.data),
        "evaluate": dataclasses.asdict(config.evaluate),
        "sources": {method: source["fingerprint"] for method, source in sources.items()},
    }
    evaluator = DownstreamEvaluator(
        features,
        config.evaluate,
        log=log,
        progress_path=output_dir / "probe-progress.json",
        progress_fingerprint=json.dumps(fingerprint, sort_keys=True, default=str),
    )
    marker_rows = evaluator.evaluate({BASELINE_ROW: None}) if markers else []
    rows = []
    for method, vectors in encoded.items():
        rows += evaluate_layers(evaluator, vectors, layers, method)
        if markers and vectors.compressed is not None:
            marker_rows.append(evaluate_compressed(evaluator, vectors, method))
    if markers:
        base = marker_rows[0]["auc_mean"]
        for row in rows + marker_rows:
            row["relaimpr"] = relative_improvement(row["auc_mean"], base)
    report = {
        "dataset": str(config.data.data_dir or config.data.dataset),
        "seeds": list(config.evaluate.seeds),
        "downstream": dataclasses.asdict(config.evaluate),
        "threads": config.training.threads,
        "layers": "all" if layers is None else sorted({int(layer) for layer in layers}),
        "methods": methods,
        "rows": rows,
        "markers": marker_rows,
    }
    write_mra_report(output_dir, report, title=f"MRA: test AUC per layer ({len(config.evaluate.seeds)} seeds)")
    return report
