"""The MRA curve of trained runs and the frozen backbone: `marc-keras probe` (DESIGN.md Sec. 5)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import keras

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import CONFIG_FILE, MARCRun, build_split, default_preset
from marc_keras.layers.lora_backbone import LoRABackbone
from marc_keras.probing.layer_probe import (
    TOWERS,
    LayerProbe,
    LayerVectors,
    check_layers,
    evaluate_compressed,
    evaluate_layers,
)
from marc_keras.probing.mra_plot import write_mra_report
from marc_keras.ranking.ctr_metrics import relative_improvement
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator
from marc_keras.ranking.ranking_features import RankingFeatures

FROZEN = "frozen"
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _source(source, config, load):
    """What a curve is encoded with: a description, the cache fingerprint, a loader."""
    # The texts depend on the [data] settings, the vectors on the model.
    fingerprint = json.dumps(
        {"source": source, "data": dataclasses.asdict(config.data)}, sort_keys=True
    )
    return {"source": source, "fingerprint": fingerprint, "load": load}


def _model_fingerprint(path):
    status = Path(path).stat()
    return f"{Path(path).resolve()}:{status.st_size}:{status.st_mtime_ns}"


def _open_runs(run_dirs, labels, overrides):
    labels = list(labels or ())
    if labels and len(labels) != len(run_dirs):
        raise ValueError(
            f"Got {len(labels)} --label values for {len(run_dirs)} --run-dir values; "
            "give one per run or none."
        )
    runs = []
    for index, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        if not (run_dir / CONFIG_FILE).is_file():
            raise ValueError(
                f"'{run_dir}' holds no {CONFIG_FILE}; "
                "pass a run directory made by `marc-keras fit`."
            )
        label = labels[index] if labels else run_dir.resolve().name
        runs.append(
            (label, MARCRun(run_dir, RunConfig.from_file(run_dir / CONFIG_FILE, overrides)))
        )
    if any(run.config.data != runs[0][1].config.data for _, run in runs):
        raise ValueError("Runs probed together must share the same [data] settings (same split).")
    return runs


def _run_source(run):
    if not run.model_path.is_file():
        raise ValueError(
            f"Run '{run.run_dir}' has no model.keras yet; finish it with `marc-keras fit` first."
        )

    def load():
        model = keras.saving.load_model(run.model_path)
        return model.backbone, {tower: model.tower_compression(tower) for tower in TOWERS}

    return _source(
        {"run": str(run.run_dir.resolve()), "model": _model_fingerprint(run.model_path)},
        run.config,
        load,
    )


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
    run_dirs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    labels: Sequence[str] | None = None,
    frozen: bool = False,
    overrides: Iterable[str] = (),
    layers: Iterable[int] | None = None,
    markers: bool = True,
    batch_size: int = 64,
    log: Callable[[str], object] = print,
    verbose: int = 1,
    config: RunConfig | None = None,
) -> dict:
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
    >>> report = probe_runs(
    ...     ["runs/marc"], "runs/probe", frozen=True, overrides=["evaluate.seeds=[0,1,2]"]
    ... )
    """
    if run_dirs and config is not None:
        raise ValueError(
            "Give either --run-dir (the runs' configs are used) or --config, not both."
        )
    if not run_dirs and (config is None or not frozen):
        raise ValueError(
            "Nothing to probe: give at least one --run-dir "
            "(its config.json names the data, preset and pooling), "
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
            raise ValueError(
                f"Curve label '{label}' must be letters, digits, '.', '_' or '-'; "
                "pass --label to name the run."
            )
        if label in sources:
            raise ValueError(
                f"Two curves are named '{label}'; give each --run-dir its own --label."
            )
        sources[label] = _run_source(run)

    started = time.perf_counter()
    split, interactions = build_split(config, with_interactions=True)
    features = RankingFeatures(split, interactions)
    log(f"split and features ready in {time.perf_counter() - started:.0f}s")
    encoded, methods = {}, []
    for method, source in sources.items():
        cache = output_dir / f"layers-{method}.npz"
        vectors = LayerVectors.load(cache, source["fingerprint"], split)
        if vectors is None:
            log(
                f"encoding {len(split.user_texts)} users and {len(split.item_texts)} items "
                f"with every layer of '{method}'"
            )
            backbone, compression = source["load"]()
            probe = LayerProbe(backbone, compression, batch_size, verbose)
            vectors = probe.encode_split(split, cache, source["fingerprint"])
        else:
            log(f"reusing the layer vectors of '{method}' in {cache}")
        check_layers(layers, vectors.num_layers, method)
        encoded[method] = vectors
        methods.append(
            {
                "method": method,
                "source": source["source"],
                "num_layers": vectors.num_layers,
                "hidden_dim": int(vectors.users.shape[2]),
                "cache": str(cache),
            }
        )

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
    # Curves are drawn on the headline tier (the first of evaluate.tiers).
    marker_rows = (
        evaluator.evaluate({config.evaluate.ranker: None}, tiers=config.evaluate.tiers[:1])
        if markers
        else []
    )
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
    write_mra_report(
        output_dir, report, title=f"MRA: test AUC per layer ({len(config.evaluate.seeds)} seeds)"
    )
    return report
