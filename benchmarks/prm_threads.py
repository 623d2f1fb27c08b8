"""PRM training throughput: one two-thread process against two one-thread ones (issue 29).

The warm re-ranking table trains 21 PRMs (7 rows x 3 seeds) one after another
with two threads and takes 33.4 min from the CLI against a 30-minute target.
Its steps are small (512 lists of 10 candidates): if per-op overhead that one
thread runs alone dominates, two one-thread processes training two seeds at
once finish more steps per second than one two-thread process. This measures
that before anything is built on it.

For each vector width (none = PRM alone, 128 = MARC-C / PCA-128, 384 = frozen /
MARC-O), a child process trains a PRM of the warm table's shape (3,884 items,
6,040 users, batch 512, lists of 10) on random data: one child with two
threads alone, then two children with one thread at once. Steps per second
are the median over repeats of an epoch of `--steps` steps, after one warm-up
epoch; the pair's throughput is the sum of both children's.

Usage:
  python benchmarks/prm_threads.py --note "machine otherwise idle"
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json

RESULT = "prm-threads.json"
ITEMS, USERS, GENRES, LIST_LENGTH, BATCH = 3884, 6040, 19, 10, 512


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[0, 128, 384])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args()


def child(width, threads, steps, repeats):
    """Trains one PRM on random lists; prints its median steps per second as JSON."""
    import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
    import keras
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from marc_keras.ranking.prm_reranker import PRMReranker

    rng = np.random.default_rng(0)
    sizes = {}
    if width:
        sizes = dict(user_vector_dim=width, item_vector_dim=width, num_users=USERS)
    model = PRMReranker(num_items=ITEMS, num_genres=GENRES, list_length=LIST_LENGTH, **sizes)
    tables = [rng.random((ITEMS, GENRES)).astype("float32")]
    if width:
        tables += [rng.normal(size=(rows, width)).astype("float32") for rows in (USERS, ITEMS)]
    model.set_tables(*tables)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    lists = BATCH * steps
    inputs = {
        "user": rng.integers(1, USERS, lists).astype("int32"),
        "items": rng.integers(1, ITEMS, (lists, LIST_LENGTH)).astype("int32"),
    }
    labels = (rng.random((lists, LIST_LENGTH)) < 0.2).astype("float32")
    rates = []
    for repeat in range(repeats + 1):
        started = time.perf_counter()
        model.fit(inputs, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        if repeat:  # the first epoch warms up
            rates.append(steps / (time.perf_counter() - started))
    print(json.dumps({"steps_per_s": statistics.median(rates)}))


def launch(width, threads, steps, repeats):
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--child", str(width), str(threads),
               "--steps", str(steps), "--repeats", str(repeats)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)


def finish(process):
    output, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"a PRM child process failed with exit code {process.returncode}")
    return json.loads(output.strip().splitlines()[-1])["steps_per_s"]


def main():
    args = parse_args()
    if args.child is not None:
        child(*args.child, args.steps, args.repeats)
        return
    rows = []
    for width in args.widths:
        one = finish(launch(width, 2, args.steps, args.repeats))
        pair = [launch(width, 1, args.steps, args.repeats) for _ in range(2)]
        rates = [finish(process) for process in pair]
        rows.append(
            {
                "vector_width": width or None,
                "one_process_two_threads_steps_per_s": one,
                "two_processes_one_thread_steps_per_s": sum(rates),
                "ratio": sum(rates) / one,
            }
        )
        print(rows[-1], flush=True)
    result = {
        "rows": rows,
        "batch_lists": BATCH,
        "steps": args.steps,
        "repeats": args.repeats,
        "command": "python benchmarks/prm_threads.py " + " ".join(sys.argv[1:]),
        "note": args.note,
        "machine": machine_facts(),
    }
    result["cpu_flags"] = result["machine"]["cpu_flags"]
    write_json(RESULT, result)
    lines = [
        "| vector width | 1 process x 2 threads (steps/s) "
        "| 2 processes x 1 thread (steps/s) | ratio |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['vector_width'] or 'none (PRM alone)'} | "
            f"{row['one_process_two_threads_steps_per_s']:.2f} | "
            f"{row['two_processes_one_thread_steps_per_s']:.2f} | {row['ratio']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    update_results_section(
        "prm-threads",
        "## PRM training throughput: threads or processes (issue 29)\n\n"
        f"{table}\n\nPRM of the warm re-ranking table's shape on random lists, batch {BATCH}, "
        f"median of {args.repeats} epochs of {args.steps} steps after a warm-up epoch; the "
        "pair's figure is the sum of both processes'. "
        f"cpu_flags {result['cpu_flags']}. Command: `{result['command']}`. {args.note}",
    )


if __name__ == "__main__":
    main()
