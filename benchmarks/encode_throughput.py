"""Encoding throughput on real ML-1M texts: Keras predict vs ONNX Runtime fp32 / int8.

Exports a trained run's encoder to fp32 and int8 bundles (unless they exist),
then, in one process and with the same thread count, encodes the same sample
of real user and item texts with: Keras `predict` (padded to the longest text,
as a plain `predict` call does), ORT fp32 in input order, ORT fp32 sorted by
length, ORT int8 sorted by length. Each is timed `--repeats` times; the
median counts. Also measures this machine's float32 matmul throughput and the
encoder's achieved GFLOP/s, and the downstream DCNv2 test AUC of int8 vs fp32
vectors (same seeds, same split).

Usage: python benchmarks/encode_throughput.py --run-dir runs/cpu/seed0 --threads 2 \
    --note "what else ran"
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun, build_split
from marc_keras.export.bundle_manifest import BundleManifest
from marc_keras.export.onnx_encoder import OnnxEncoder
from marc_keras.export.onnx_exporter import OnnxExporter
from marc_keras.ranking.downstream_evaluator import DownstreamEvaluator
from marc_keras.ranking.ranking_features import RankingFeatures

import keras  # after marc_keras, which selects the torch backend
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-dir", required=True, type=Path, help="a finished `marc-keras fit` run"
    )
    parser.add_argument(
        "--texts", type=int, default=2048, help="real texts sampled from users and items"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--auc-seeds",
        type=int,
        nargs="*",
        default=[0, 1, 2],
        help="downstream seeds for the int8 AUC check (none: skip)",
    )
    parser.add_argument(
        "--auc-train-samples",
        type=int,
        default=100000,
        help="downstream training samples for the int8 AUC check",
    )
    parser.add_argument("--auc-max-epochs", type=int, default=3)
    parser.add_argument(
        "--note", default="", help="what else ran on the machine during the measurement"
    )
    return parser.parse_args()


def matmul_gflops(threads, size=2048, repeats=5):
    """Median float32 GEMM throughput of torch on this machine."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def encoder_flops(lengths, hidden_dim, num_layers, intermediate_dim, compression_flops):
    """Multiply-adds x 2 of a BERT encoder over texts of these real token counts.

    Per token and layer: Q, K, V, O projections 8 d^2, feed-forward
    4 d i, attention scores and weighted sum 4 T d.
    """
    lengths = np.asarray(lengths, "float64")
    per_layer = (
        lengths * (8 * hidden_dim**2 + 4 * hidden_dim * intermediate_dim)
        + 4 * lengths**2 * hidden_dim
    )
    return float(num_layers * per_layer.sum() + compression_flops * len(lengths))


def timed(function, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main():
    args = parse_args()
    facts = machine_facts()
    torch.set_num_threads(args.threads)
    run = MARCRun(args.run_dir, RunConfig.from_file(args.run_dir / "config.json"))
    split, interactions = build_split(run.config, with_interactions=True)
    texts_by_source = [*split.user_texts.values(), *split.item_texts.values()]
    rng = np.random.default_rng(0)
    texts = [
        texts_by_source[i] for i in rng.choice(len(texts_by_source), args.texts, replace=False)
    ]

    bundles = {}
    for precision in ("fp32", "int8"):
        bundles[precision] = args.run_dir / f"bundle-{precision}"
        if not (bundles[precision] / "manifest.json").is_file():
            OnnxExporter.from_run(args.run_dir).export(
                bundles[precision], precision=precision, overwrite=True
            )

    encoder = keras.saving.load_model(args.run_dir / "encoder.keras")
    tokens = encoder.backbone.tokenize(texts)  # padded to the longest text, as predict needs
    lengths = tokens["padding_mask"].sum(axis=1)
    hub = encoder.backbone.backbone
    compression_flops = 2 * sum(
        int(np.prod(w.shape)) for w in encoder.compression.weights if len(w.shape) == 2
    )
    flops = encoder_flops(
        lengths,
        hub.hidden_dim,
        len(hub.transformer_layers),
        hub.intermediate_dim,
        compression_flops,
    )

    runners = {
        "keras-predict": lambda: encoder.predict(tokens, batch_size=args.batch_size, verbose=0),
        "ort-fp32": OnnxEncoder(
            bundles["fp32"], "cpu", args.threads, args.batch_size, sort_by_length=False
        ).encode,
        "ort-fp32-sorted": OnnxEncoder(
            bundles["fp32"], "cpu", args.threads, args.batch_size
        ).encode,
        "ort-int8-sorted": OnnxEncoder(
            bundles["int8"], "cpu", args.threads, args.batch_size
        ).encode,
    }
    rows = []
    for name, runner in runners.items():
        call = runner if name == "keras-predict" else (lambda runner=runner: runner(texts))
        call()  # warm-up: graph optimisation, allocator, caches
        seconds, all_seconds = timed(call, args.repeats)
        rows.append(
            {
                "name": name,
                "texts_per_s": len(texts) / seconds,
                "median_s": seconds,
                "all_s": all_seconds,
                "gflops_per_s": flops / seconds / 1e9,
            }
        )
        print(
            f"{name}: {len(texts) / seconds:.1f} texts/s (median of {args.repeats}: {seconds:.2f}s)"
        )
    keras_rate = rows[0]["texts_per_s"]
    for row in rows:
        row["speedup_vs_keras"] = row["texts_per_s"] / keras_rate
    rates = {row["name"]: row["texts_per_s"] for row in rows}
    int8_manifest = BundleManifest.load(bundles["int8"])
    peak = matmul_gflops(args.threads)

    auc = measure_int8_auc(run, split, interactions, bundles, args) if args.auc_seeds else None
    result = {
        "rows": rows,
        # Same texts, same length-sorted batching, same threads: the engine's gain alone.
        "int8_speedup": rates["ort-int8-sorted"] / rates["ort-fp32-sorted"],
        "int8_scheme": int8_manifest.quantization,
        "int8_min_cosine": int8_manifest.verification["min_cosine"],
        "int8_auc_delta": auc["delta"] if auc else None,
        "int8_auc": auc,
        "texts": len(texts),
        "text_tokens": {
            "mean": float(lengths.mean()),
            "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
            "padded_width_for_predict": int(tokens["token_ids"].shape[1]),
        },
        "batch_size": args.batch_size,
        "threads": args.threads,
        "encoder_gflop": flops / 1e9,
        "matmul_fp32_gflops_per_s": peak,
        "run_dir": str(args.run_dir),
        "machine": facts,
        "cpu_flags": facts["cpu_flags"],
        "note": args.note,
    }
    write_json("encode-throughput.json", result)
    update_results_section("encode-throughput", markdown(result, args))
    print(markdown(result, args))


def measure_int8_auc(run, split, interactions, bundles, args):
    """Downstream DCNv2 test AUC with MARC-C vectors from the fp32 and the int8 bundle."""
    features = RankingFeatures(split, interactions)
    user_ids, item_ids = sorted(split.user_texts), sorted(split.item_texts)
    tables = {}
    for precision, bundle in bundles.items():
        encoder = OnnxEncoder(bundle, "cpu", args.threads, args.batch_size)
        users = encoder.encode([split.user_texts[user] for user in user_ids])["compressed"]
        items = encoder.encode([split.item_texts[item] for item in item_ids])["compressed"]
        tables[precision] = (
            features.vector_table(user_ids, users, "user"),
            features.vector_table(item_ids, items, "item"),
        )
    config = dataclasses.replace(
        run.config.evaluate,
        seeds=tuple(args.auc_seeds),
        train_samples=args.auc_train_samples,
        max_epochs=args.auc_max_epochs,
        tiers=run.config.evaluate.tiers[:1],
    )
    rows = DownstreamEvaluator(features, config).evaluate(
        {
            f"marc-c-{precision}": (lambda seed, pair=pair: pair)
            for precision, pair in tables.items()
        }
    )
    by_name = {row["name"]: row for row in rows}
    fp32, int8 = by_name["marc-c-fp32"], by_name["marc-c-int8"]
    return {
        "fp32_auc_mean": fp32["auc_mean"],
        "fp32_aucs": fp32["aucs"],
        "int8_auc_mean": int8["auc_mean"],
        "int8_aucs": int8["aucs"],
        "delta": int8["auc_mean"] - fp32["auc_mean"],
        "seeds": list(args.auc_seeds),
    }


def markdown(result, args):
    lines = [
        "## Encoding throughput: Keras predict vs ONNX Runtime (MiniLM MARC encoder, CPU)",
        "",
        "| engine | texts/s (median) | x Keras predict | achieved GFLOP/s |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['name']} | {row['texts_per_s']:.1f} | {row['speedup_vs_keras']:.2f} "
            f"| {row['gflops_per_s']:.1f} |"
        )
    tokens = result["text_tokens"]
    lines += [
        "",
        f"- texts: {result['texts']} real ML-1M user and item texts (seeded sample); "
        f"tokens per text mean {tokens['mean']:.1f}, median {tokens['median']:.0f}, "
        f"p90 {tokens['p90']:.0f}, max {tokens['max']}; "
        f"Keras predict pads all to {tokens['padded_width_for_predict']}; "
        "ORT pads each batch to its longest text",
        f"- batch {result['batch_size']}, {result['threads']} threads (torch and ORT intra-op), "
        f"median of {args.repeats} timed passes after one warm-up",
        f"- encoder work: {result['encoder_gflop']:.1f} GFLOP over the real tokens; "
        "machine float32 GEMM (torch, 2048^2, same threads): "
        f"{result['matmul_fp32_gflops_per_s']:.1f} GFLOP/s",
    ]
    if result["int8_auc"]:
        auc = result["int8_auc"]
        lines.append(
            f"- int8 scheme: {result['int8_scheme']}; "
            f"parity check min cosine {result['int8_min_cosine']}; "
            f"int8 / fp32 (both length-sorted) = {result['int8_speedup']:.2f}x"
        )
        lines.append(
            f"- downstream DCNv2 test AUC with MARC-C vectors, seeds {auc['seeds']}: "
            f"fp32 {auc['fp32_auc_mean']:.4f}, int8 {auc['int8_auc_mean']:.4f}, "
            f"delta {auc['delta']:+.4f} (each seed trains both on the same rows "
            f"in the same order; {args.auc_train_samples} training samples, "
            f"at most {args.auc_max_epochs} epochs)"
        )
    lines += [
        f"- machine: {result['machine']['cpu']} (flags {', '.join(result['cpu_flags'])}), "
        f"{result['machine']['cores']} cores, load at start "
        f"{result['machine']['load_average_at_start']}; versions {result['machine']['versions']}",
        f"- also running: {result['note'] or 'nothing recorded'}",
        "- command: `python benchmarks/encode_throughput.py "
        f"--run-dir {args.run_dir} --threads {args.threads} "
        f"--texts {args.texts} --batch-size {args.batch_size} --repeats {args.repeats} "
        f"--auc-seeds {' '.join(map(str, args.auc_seeds))} "
        f"--auc-train-samples {args.auc_train_samples} --auc-max-epochs {args.auc_max_epochs}`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
