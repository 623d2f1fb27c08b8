"""Where MARC's training tokens go: backbone tokens per training pair under batching schemes.

A first measurement for "MARC at scale": it counts, on real ML-1M-half
training pairs, how many tokens the backbone processes per pair (forward and
backward cost both scale with them at these lengths) when

  today          every pair's user and item text padded to max_length
  dynamic        each tower padded to its longest text in the batch
  dynamic+dedup  each distinct text of a batch encoded once (random batches)
  grouped        batches of U users x K labelled items each, deduplicated

No model runs: this bounds what the input pipeline alone can save.

Usage: python benchmarks/train_token_budget.py --pairs 200000 --batch-size 64
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import build_split, default_preset
from marc_keras.text_tokenizer import TextTokenizer

RESULT = "train-token-budget.json"


def lengths_of(tokenizer, texts):
    """Token counts (special tokens included, capped at max_length) per distinct text."""
    distinct = sorted(set(texts))
    mask = tokenizer(distinct)["padding_mask"]
    return dict(zip(distinct, mask.sum(axis=1).tolist()))


def batch_tokens(user_ids, user_tokens, item_ids, item_tokens, dedup):
    """Tokens one batch costs: each tower padded to its longest text, distinct texts once
    with `dedup` (ids and token counts are the batch's pairs)."""
    total = 0
    for ids, tokens in ((user_ids, user_tokens), (item_ids, item_tokens)):
        rows = len(np.unique(ids)) if dedup else len(ids)
        total += rows * tokens.max()
    return total


def _one_decimal(value):
    return "-" if value is None else f"{value:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.toml")
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--items-per-user", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()

    config = RunConfig.from_file(args.config)
    max_length = config.model.max_length
    split = build_split(config)
    pairs = split.sample("train", args.pairs, seed=0)
    tokenizer = TextTokenizer.from_preset(config.model.preset or default_preset(), max_length)
    user_texts = [split.user_texts[user] for user in pairs["user_id"]]
    item_texts = [split.item_texts[item] for item in pairs["item_id"]]
    user_length = lengths_of(tokenizer, user_texts)
    item_length = lengths_of(tokenizer, item_texts)
    users = pairs["user_id"].to_numpy()
    items = pairs["item_id"].to_numpy()
    user_tokens = np.array([user_length[text] for text in user_texts])
    item_tokens = np.array([item_length[text] for text in item_texts])
    count = len(pairs)
    rng = np.random.default_rng(0)
    order = rng.permutation(count)
    size = args.batch_size

    def per_pair(batches, dedup):
        total = sum(
            batch_tokens(users[b], user_tokens[b], items[b], item_tokens[b], dedup) for b in batches
        )
        return total / sum(len(b) for b in batches)

    random_batches = [order[start : start + size] for start in range(0, count, size)]
    schemes = {
        "today (pad both towers to max_length)": 2.0 * max_length,
        "real tokens only (lower bound)": float(np.mean(user_tokens + item_tokens)),
        f"dynamic padding, random batches of {size}": per_pair(random_batches, False),
        "dynamic padding + dedup, random batches": per_pair(random_batches, True),
    }
    rows = [{"scheme": scheme, "tokens_per_pair": tokens} for scheme, tokens in schemes.items()]
    by_user = {}
    for index in order:
        by_user.setdefault(users[index], []).append(index)
    for per_user in args.items_per_user:
        chunks = [
            rows_of_user[start : start + per_user]
            for rows_of_user in by_user.values()
            for start in range(0, len(rows_of_user), per_user)
        ]
        rng.shuffle(chunks)
        users_per_batch = max(1, size // per_user)
        grouped = [
            np.concatenate(chunks[start : start + users_per_batch])
            for start in range(0, len(chunks), users_per_batch)
        ]
        distinct_users = np.mean([len(np.unique(users[b])) for b in grouped])
        rows.append(
            {
                "scheme": f"grouped: {users_per_batch} users x {per_user} items, dynamic + dedup",
                "tokens_per_pair": per_pair(grouped, True),
                "distinct_users_per_batch": float(distinct_users),
            }
        )
    random_distinct = np.mean([len(np.unique(users[b])) for b in random_batches])
    rows[3]["distinct_users_per_batch"] = float(random_distinct)
    for row in rows:
        row["x_fewer_tokens_than_today"] = rows[0]["tokens_per_pair"] / row["tokens_per_pair"]
    result = {
        "rows": rows,
        "pairs": count,
        "batch_size": size,
        "max_length": max_length,
        "user_tokens": {"mean": float(user_tokens.mean()), "median": float(np.median(user_tokens))},
        "item_tokens": {"mean": float(item_tokens.mean()), "median": float(np.median(item_tokens))},
        "machine": machine_facts(),
        "command": " ".join(sys.argv),
    }
    write_json(RESULT, result)
    table = "\n".join(
        f"| {row['scheme']} | {row['tokens_per_pair']:.1f} "
        f"| {row['x_fewer_tokens_than_today']:.2f} "
        f"| {_one_decimal(row.get('distinct_users_per_batch'))} |"
        for row in rows
    )
    print(table)
    user_stats, item_stats = result["user_tokens"], result["item_tokens"]
    update_results_section(
        "train-token-budget",
        f"""## MARC training: backbone tokens per pair under batching schemes (no model run)

| scheme | tokens per pair | x fewer than today | distinct users per batch |
|---|---|---|---|
{table}

{count:,} training pairs of ml-1m-half, max_length {max_length}; tokens per text
(mean / median): users {user_stats["mean"]:.1f} / {user_stats["median"]:.0f}, items
{item_stats["mean"]:.1f} / {item_stats["median"]:.0f}.
Tokens are a proxy for backbone work (forward and backward), not a timing.
Command: `{result["command"]}`.
""",
    )
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
