"""L2D vs beam search vs greedy + grounding vs most-popular, over seeds (issue 13).

Runs `marc-keras l2d` stages (fit, memory, evaluate) for each training seed
in its own run directory (each stage resumes), then writes
`benchmarks/results/NAME.json` (every metric as mean and std over seeds, with
the per-seed values) and the RESULTS.md section NAME (`--name`, by default
`l2d-ml-1m-half`). Latency is timed on the first seed only
(`decoding.latency_users = 0` for the others): it does not depend on the
seed, and timing costs a third of the evaluation.

    python benchmarks/l2d_benchmark.py --seeds 0 1 2 --note "nothing else running"
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from marc_keras.config.generative_config import GenerativeConfig
from marc_keras.experiments.l2d_run import ROWS, L2DRun
from marc_keras.utils.markdown_tables import decoder_markdown

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json


def run_seed(config_path, runs_dir, seed, timed, settings, log):
    overrides = [f"training.seed={seed}", *settings]
    if not timed:
        overrides.append("decoding.latency_users=0")
    config = GenerativeConfig.from_file(config_path, overrides)
    run = L2DRun.open(runs_dir / f"seed-{seed}", config)
    walls = {}
    for stage in ("fit", "memory", "evaluate"):
        started = time.perf_counter()
        if stage == "fit":
            run.fit(log=log)
        elif stage == "memory":
            run.memory(log=log)
        else:
            report = run.evaluate(log=log)
        walls[stage] = time.perf_counter() - started
    return report, walls


def read_seed(run_dir):
    """A finished seed's report and its fit and memory times (evaluate's is not recorded)."""
    if not (run_dir / "evaluation.json").is_file():
        raise SystemExit(f"{run_dir} has no evaluation.json; run its stages first.")
    report = json.loads((run_dir / "evaluation.json").read_text())
    walls = {"fit": report["fit"]["fit_s"], "memory": report["build_s"]["memory"]}
    return report, walls


def summarise(reports):
    """Mean and std over seeds of every numeric metric of every row."""
    rows = {}
    for name in ROWS:
        metrics = sorted({key for report in reports for key in report["rows"][name]})
        rows[name] = {}
        for metric in metrics:
            values = [r["rows"][name][metric] for r in reports if metric in r["rows"][name]]
            rows[name][metric] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "values": values,
            }
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/l2d-ml-1m-half.toml")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/l2d-bench"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, as in `marc-keras l2d` (repeatable)",
    )
    parser.add_argument(
        "--name",
        default="l2d-ml-1m-half",
        help="results file (benchmarks/results/NAME.json) and RESULTS.md section",
    )
    parser.add_argument(
        "--from-runs",
        action="store_true",
        help="only summarise the seeds' finished run directories (e.g. seeds run in parallel)",
    )
    args = parser.parse_args()
    command = "python benchmarks/l2d_benchmark.py " + " ".join(sys.argv[1:])

    def log(line):
        print(line, file=sys.stderr, flush=True)

    reports, walls = [], {}
    for index, seed in enumerate(args.seeds):
        if args.from_runs:
            report, walls[seed] = read_seed(args.runs_dir / f"seed-{seed}")
        else:
            report, walls[seed] = run_seed(
                args.config, args.runs_dir, seed, index == 0, args.settings, log
            )
        reports.append(report)
    first = reports[0]
    rows = summarise(reports)
    result = {
        "rows": rows,
        "speedup_vs_beam_b1": first["speedup_vs_beam_b1"],
        "cold_target_rate": first["cold_target_rate"],
        "local_size_by_seed": [report["local_size"] for report in reports],
        "validation_ndcg@10_by_local_size": [
            report["validation_ndcg@10_by_local_size"] for report in reports
        ],
        # Reports written before the length penalty setting existed used none.
        "beam_length_penalty_by_seed": [
            report.get("beam_length_penalty", 0.0) for report in reports
        ],
        "validation_ndcg@10_by_length_penalty": [
            report.get("validation_ndcg@10_by_length_penalty", {}) for report in reports
        ],
        "train_samples": first["train_samples"],
        "memory_samples": first["memory_samples"],
        "test_users": first["test_users"],
        "validation_users": first["validation_users"],
        "seeds": args.seeds,
        "build_s": [report["build_s"] for report in reports],
        "wall_s_by_seed": walls,
        "fit": [report["fit"] for report in reports],
        "model": first["config"]["model"],
        "settings": {key: first["config"][key] for key in ("data", "training", "decoding")},
        "machine": machine_facts(),
        "note": args.note,
        "command": command,
    }
    path = write_json(f"{args.name}.json", result)
    table = decoder_markdown(rows)
    total_minutes = sum(sum(stages.values()) for stages in walls.values()) / 60
    stage_seconds = {
        seed: {stage: round(seconds) for stage, seconds in stages.items()}
        for seed, stages in walls.items()
    }
    facts = result["machine"]
    lines = [
        f"## L2D: latent-space decoding vs beam search, `{args.name}` (issue 13)",
        "",
        f"SmolLM2-135M fine-tuned with LoRA on {result['train_samples']} BIGRec windows "
        f"(history {first['config']['data']['history_length']}), memory of "
        f"{result['memory_samples']} training windows, {result['test_users']} test users "
        f"(leave-one-out, full ranking over all {first['catalogue_items']} items), seeds "
        f"{args.seeds}: mean +- std over seeds; latency (ms per user, after warm-up) from "
        "seed "
        f"{args.seeds[0]} only.",
        "",
        table,
        "",
        f"L2D-L speed-up over beam search at batch 1: **{result['speedup_vs_beam_b1']:.1f}x**; "
        f"cold target rate {result['cold_target_rate']:.3f}; M chosen on validation users: "
        f"{result['local_size_by_seed']}; beam length penalty (chosen on validation users "
        f"among {first['config']['decoding'].get('length_penalties', [0.0])}): "
        f"{result['beam_length_penalty_by_seed']}. Stage time {total_minutes:.0f} min "
        f"(seconds per seed and stage; evaluate only where timed: {json.dumps(stage_seconds)}).",
        "",
        f"Machine: {facts['cpu']}, {facts['cores']} cores, flags {facts['cpu_flags']}; "
        f"versions {facts['versions']}. Also running: {args.note or 'nothing recorded'}. "
        f"Command: `{command}`; figures in `benchmarks/results/{path.name}`.",
    ]
    update_results_section(args.name, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
