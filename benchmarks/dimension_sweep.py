"""MARC's compressed width against Matryoshka's (paper Fig. 9; issue 30).

Heads-only training: LoRA at six widths does not fit a 2-core session (one
marc-scale fit takes about 40 minutes), so every width trains MARC's
compression and matching networks on the run's frozen backbone vectors, as the
run's head warm-up does (`CrossFittedHeads` with one fold: the plain heads),
with the run's `[model]` and `[training]` settings except `compressed_dim`.
MRL is one heads model at the widest width trained with nested-prefix losses
at every narrower width (`method_registry`'s "mrl" overrides: no HSIC), each
width its prefix, as Matryoshka vectors are meant to be used. MARC-O of the
run (its LoRA-tuned backbone's vectors) is the reference line.

Rows: DCNv2 alone, marc-o, marc-c-{width} and mrl-{width} for every width,
kar tier, seeds 0 1 2, test users; paired deltas against DCNv2 alone. The
heads' vectors are cached in `{run}/dimension-sweep/` and the ranker results
in `{run}/dimension-sweep-progress.json`: a stopped sweep resumes.

Usage:
  python benchmarks/dimension_sweep.py --run-dir runs/marc-scale
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import RESULTS_DIR, machine_facts, update_results_section, write_json

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import numpy as np

from marc_keras.baselines.method_registry import resolve_methods
from marc_keras.config import DownstreamConfig, RunConfig
from marc_keras.experiments.downstream_rows import vector_provider
from marc_keras.experiments.marc_run import MARCRun, downstream_inputs
from marc_keras.models.cross_fitted_heads import CrossFittedHeads
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator
from marc_keras.utils.atomic_files import write_atomically
from marc_keras.utils.markdown_tables import downstream_markdown

RESULT = "dimension-sweep-ml-1m-half.json"
WIDTHS = (16, 32, 64, 128, 256, 512)
TIER = "kar"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--note", default="", help="what else ran on the machine")
    return parser.parse_args()


def heads_vectors(run, split, frozen, width, model_overrides, path):
    """((user ids, users), (item ids, items)) of heads trained at `width`, cached at `path`."""
    if path.is_file():
        with np.load(path) as stored:
            return (stored["user_ids"], stored["users"]), (stored["item_ids"], stored["items"])
    model = dataclasses.replace(run.config.model, compressed_dim=width, **model_overrides)
    config = dataclasses.replace(run.config, model=model)
    training = config.training
    sized = MARCRun(run.run_dir, config)
    pairs = {
        name: split.sample(name, size, seed=training.seed)
        for name, size in (
            ("train", training.train_samples),
            ("validation", training.validation_samples),
        )
    }
    started = time.perf_counter()
    result = CrossFittedHeads(
        lambda: sized.build_model(lora_rank=0),
        folds=1,
        epochs=training.head_warmup_epochs,
        batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        seed=training.seed,
    ).fit_transform(*frozen, pairs["train"], pairs["validation"], split.users["train"])
    arrays = {
        "user_ids": result.users[0],
        "users": result.users[1],
        "item_ids": result.items[0],
        "items": result.items[1],
        "validation_auc": np.array(result.validation_auc[-1]),
        "fit_s": np.array(time.perf_counter() - started),
    }
    write_atomically(path, lambda temporary: np.savez(temporary, **arrays))
    return result.users, result.items


def main():
    args = parse_args()
    run = MARCRun(args.run_dir, RunConfig.from_file(args.run_dir / "config.json"))
    if not run.config.training.head_warmup_epochs:
        raise SystemExit(f"{args.run_dir} trains no head warm-up: set training.head_warmup_epochs")
    downstream = DownstreamConfig(tiers=(TIER,), seeds=tuple(args.seeds))
    inputs = downstream_inputs([run], downstream, log=print)
    frozen = run.encode_vectors(inputs.split, include_trained=False)["frozen"]
    cache = args.run_dir / "dimension-sweep"
    cache.mkdir(exist_ok=True)
    widths = sorted(args.widths)
    (mrl,) = resolve_methods(["mrl"])
    nested = {"mrl_prefixes": tuple(widths[:-1]), **mrl.model}
    representations = {downstream.ranker: None, "marc-o": inputs.representations["marc-o"]}
    measured = {}
    for width in widths:
        path = cache / f"marc-c-{width}.npz"
        vectors = heads_vectors(run, inputs.split, frozen, width, {}, path)
        representations[f"marc-c-{width}"] = vector_provider(
            inputs.features, lambda seed, vectors=vectors: vectors
        )
        measured[f"marc-c-{width}"] = path
        print(f"marc-c-{width}: heads ready", flush=True)
    path = cache / f"mrl-{widths[-1]}.npz"
    (user_ids, users), (item_ids, items) = heads_vectors(
        run, inputs.split, frozen, widths[-1], nested, path
    )
    for width in widths:
        prefix = ((user_ids, users[:, :width]), (item_ids, items[:, :width]))
        representations[f"mrl-{width}"] = vector_provider(
            inputs.features, lambda seed, prefix=prefix: prefix
        )
        measured[f"mrl-{width}"] = path
    evaluator = DownstreamEvaluator(
        inputs.features,
        downstream,
        progress_path=args.run_dir / "dimension-sweep-progress.json",
        progress_fingerprint=json.dumps([inputs.sources, widths]),
    )
    started = time.perf_counter()
    rows = evaluator.evaluate(representations)
    for row in rows:
        method, _, width = row["name"].rpartition("-")
        if row["name"] in measured:
            with np.load(measured[row["name"]]) as stored:
                row.update(
                    method=method,
                    width=int(width),
                    heads_validation_auc=float(stored["validation_auc"]),
                    heads_fit_s=float(stored["fit_s"]),
                )
    result = {
        "rows": rows,
        "tier": TIER,
        "seeds": args.seeds,
        "widths": widths,
        "training": "Heads only: compression and matching networks on the frozen backbone's "
        "vectors with the run's head warm-up settings; MRL is one model at the widest width "
        "trained on nested prefixes, each width its prefix",
        "run": str(args.run_dir),
        "ranker_s": time.perf_counter() - started,
        "command": "python benchmarks/dimension_sweep.py " + " ".join(sys.argv[1:]),
        "note": args.note,
        "machine": machine_facts(),
    }
    result["cpu_flags"] = result["machine"]["cpu_flags"]
    write_json(RESULT, result)
    plot(rows, widths, RESULTS_DIR / "dimension-sweep-ml-1m-half.png")
    update_results_section(
        "dimension-sweep-ml-1m-half",
        "## Compressed width: MARC against MRL (MARC Fig. 9), kar tier (issue 30)\n\n"
        f"{downstream_markdown(rows)}\n\n"
        f"Test users, DCNv2, mean +- std over seeds {args.seeds}. {result['training']}. "
        f"Run `{args.run_dir}`. cpu_flags {result['cpu_flags']}. "
        f"Command: `{result['command']}`. {args.note} "
        "Plot: `results/dimension-sweep-ml-1m-half.png`.",
    )


def plot(rows, widths, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for method in ("marc-c", "mrl"):
        found = [next(row for row in rows if row["name"] == f"{method}-{w}") for w in widths]
        axis.errorbar(
            widths,
            [row["auc_mean"] for row in found],
            yerr=[row["auc_std"] for row in found],
            marker="o",
            capsize=3,
            label=method.upper() if method == "mrl" else "MARC-C (heads only)",
        )
    for name, style in (("marc-o", "--"), (rows[0]["name"], ":")):
        row = next(row for row in rows if row["name"] == name)
        axis.axhline(row["auc_mean"], linestyle=style, color="grey", label=name)
    axis.set_xscale("log", base=2)
    axis.set_xticks(widths, [str(w) for w in widths])
    axis.set_xlabel("compressed width")
    axis.set_ylabel("test AUC (kar tier, DCNv2)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
