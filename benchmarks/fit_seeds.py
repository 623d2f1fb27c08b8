"""Trains MARC once per seed, in parallel processes, and encodes every user and item.

Meant for a GPU machine, where one eager Keras process leaves the GPU mostly
idle: three seeds of configs/gpu.toml trained side by side on one H100 in
about 3 minutes. Each run directory ends with metrics.json, vectors.npz and
frozen-vectors.npz, which `marc-keras evaluate` reads (on any machine).

Usage: python benchmarks/fit_seeds.py --config configs/gpu.toml --runs-dir runs/gpu \
    --seeds 0 1 2 [--set model.preset="/path/to/minilm"] [--set data.data_dir="..."]
"""

import argparse
import subprocess
import sys
from pathlib import Path

FIT_ONE = """
import json, sys, time
from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun
config_path, run_dir, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
run = MARCRun.open(run_dir, RunConfig.from_file(config_path, overrides))
started = time.perf_counter()
metrics = run.fit(verbose=2)
run.encode_vectors(verbose=0)
print(json.dumps({"run": run_dir, "metrics": metrics, "wall_s": time.perf_counter() - started}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--runs-dir", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    processes, logs = {}, {}
    for seed in args.seeds:
        run_dir = args.runs_dir / f"seed{seed}"
        command = [
            sys.executable,
            "-c",
            FIT_ONE,
            args.config,
            str(run_dir),
            f"training.seed={seed}",
            *args.overrides,
        ]
        logs[seed] = open(f"{run_dir}.log", "w")  # noqa: SIM115  (closed once the process ends)
        processes[seed] = subprocess.Popen(command, stdout=logs[seed], stderr=subprocess.STDOUT)
    failed = [seed for seed, process in processes.items() if process.wait() != 0]
    for log in logs.values():
        log.close()
    for seed in args.seeds:
        print(Path(f"{args.runs_dir / f'seed{seed}'}.log").read_text()[-2000:])
    if failed:
        sys.exit(f"seeds {failed} failed; see their logs in {args.runs_dir}")


if __name__ == "__main__":
    main()
