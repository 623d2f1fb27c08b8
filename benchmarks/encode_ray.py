"""Sharded encoding of >= 50,000 real ML-1M texts: the local engine vs Ray Data actor pools.

The texts are MovieLens users' histories rendered with the run's templates at
successive points in time (every `--stride` ratings of each user, the most
recent `--titles` titles newest first, 3-20 by default), so their lengths vary as real user
texts do.
Each engine encodes the same parquet file into its own store directory with
the same bundle, batch size and shard size; rows:

  local   one process, ONNX Runtime with --threads threads
  ray-1   one Ray actor (1 CPU reserved, --threads ORT threads), local cluster
  ray-2   two Ray actors (0.5 CPU reserved each, 1 ORT thread each)

Usage: python benchmarks/encode_ray.py --bundle-dir runs/demo/bundle-fp32 --texts 50000 \
    --note "what else ran"
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import load_dataset
from marc_keras.export.embedding_store import load_embedding_table
from marc_keras.export.sharded_encoder import ShardedEncoder

RESULT = "encode-ray.json"


def history_texts(config, count, stride, titles=(3, 20), seed=0):
    """`count` user texts of real ML-1M histories at successive cut-off points, each
    with the most recent `titles[0]`-`titles[1]` titles."""
    interactions, templates = load_dataset(config.data)
    rng = np.random.default_rng(seed)
    items = dict(zip(interactions.items["item_id"], interactions.items.to_dict("records")))
    users = dict(zip(interactions.users["user_id"], interactions.users.to_dict("records")))
    ratings = interactions.interactions.sort_values(["user_id", "timestamp"])
    ids, texts = [], []
    for user_id, history in ratings.groupby("user_id", sort=True):
        rows = [
            {**items[item], "rating": rating}
            for item, rating in zip(history["item_id"], history["rating"])
        ]
        user_row = users[user_id]
        for end in range(stride, len(rows) + 1, stride):
            shown = int(rng.integers(titles[0], titles[1] + 1))
            window = rows[max(0, end - shown) : end][::-1]
            ids.append(f"{user_id}@{end}")
            texts.append(templates.render_user(user_row, window))
            if len(ids) == count:
                return ids, texts
    raise ValueError(f"Only {len(ids)} texts at stride {stride}; lower --stride.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle-dir", required=True, type=Path)
    parser.add_argument("--config", default="configs/demo.toml")
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument(
        "--titles", type=int, nargs=2, default=[3, 20], help="titles per text, fewest and most"
    )
    parser.add_argument("--shard-rows", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", nargs="+", default=["local", "ray-1", "ray-2"])
    parser.add_argument("--note", default="", help="what else ran during the measurement")
    args = parser.parse_args()

    config = RunConfig.from_file(args.config)
    work = Path(tempfile.mkdtemp(prefix="encode-ray-"))
    ids, texts = history_texts(config, args.texts, args.stride, tuple(args.titles))
    source = work / "texts.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), source, row_group_size=args.shard_rows)
    layouts = {
        "local": {"engine": "local", "threads": args.threads},
        "ray-1": {
            "engine": "ray",
            "workers": 1,
            "cpus_per_worker": 1.0,
            "threads_per_worker": args.threads,
        },
        "ray-2": {"engine": "ray", "workers": 2, "cpus_per_worker": 0.5, "threads_per_worker": 1},
    }
    rows, reference = [], None
    for name in args.rows:
        output = work / name
        job = ShardedEncoder(
            args.bundle_dir,
            output,
            shard_rows=args.shard_rows,
            batch_size=args.batch_size,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        started = time.perf_counter()
        stats = job.run([str(source)], **layouts[name])
        wall_s = time.perf_counter() - started
        stored_ids, vectors, _ = load_embedding_table(output, "compressed")
        if reference is None:
            reference = vectors
        row = {
            "name": name,
            "layout": layouts[name],
            "rows": stats["rows"],
            "unique_ids": len(set(stored_ids.tolist())),
            "shards": stats["shards"],
            "texts_per_s": stats["texts_per_s"],
            "startup_s": stats["startup_s"],
            "wall_s": wall_s,
            "max_abs_diff_vs_first_row": float(np.abs(vectors - reference).max()),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    shutil.rmtree(work)
    result = {
        "rows": rows,
        "texts": args.texts,
        "bundle": str(args.bundle_dir),
        "shard_rows": args.shard_rows,
        "batch_size": args.batch_size,
        "machine": machine_facts(),
        "note": args.note,
        "command": " ".join(sys.argv),
    }
    write_json(RESULT, result)
    table = "\n".join(
        f"| {row['name']} | {row['texts_per_s']:.1f} | {row['startup_s']:.1f} | {row['rows']} "
        f"| {row['unique_ids']} | {row['wall_s']:.0f} |"
        for row in rows
    )
    update_results_section(
        "encode-ray",
        f"""## Sharded encoding: local engine vs Ray Data ({args.texts:,} real ML-1M texts)

| engine | texts/s | start-up s | rows | unique ids | wall s |
|---|---|---|---|---|---|
{table}

Bundle `{args.bundle_dir}` (fp32), batch {args.batch_size}, shards of {args.shard_rows} rows,
{args.titles[0]}-{args.titles[1]} titles per text.
Machine: {result["machine"]["cpu"]}, cpu_flags {result["machine"]["cpu_flags"]},
{result["machine"]["cores"]} cores. Command: `{result["command"]}`. {args.note}
""",
    )


if __name__ == "__main__":
    main()
