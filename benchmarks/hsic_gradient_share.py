"""How much of MARC's gradient HSIC sends, per lambda and estimator scale (issue 28, step 2).

  python benchmarks/hsic_gradient_share.py --run-dir runs/demo-v3 --pairs 64

Loads a trained run's `model.keras`, takes the first `--pairs` validation
pairs of its `tokens.npz` (one batch, as training sees one), and measures
`MARC.gradient_shares` for every lambda x scale: the gradient norm of the pair
objective and of `-lambda * (HSIC_u + HSIC_i)` on the compression network. The
weights stay as trained; only the loss's lambda and scale change, so the figures
say which lambda gives HSIC a real share of the gradient, without training.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
import numpy as np

from marc_keras.models.marc import INPUT_NAMES
from marc_keras.utils.backend_guard import without_tensorflow

RESULT = "hsic-gradient-share.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo-v3"))
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument(
        "--weights", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    )
    parser.add_argument("--scales", nargs="+", default=["normalised", "trace"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with without_tensorflow():
        model = keras.saving.load_model(args.run_dir / "model.keras")
    with np.load(args.run_dir / "tokens.npz") as tokens:
        x = {name: tokens[f"validation/{name}"][: args.pairs] for name in INPUT_NAMES}
        y = tokens["validation/label"][: args.pairs]
    lora_b_norm = sum(
        float(np.sum(keras.ops.convert_to_numpy(weight) ** 2))
        for weight in model.backbone.trainable_weights
        if weight.path.endswith("lora_kernel_b")
    )
    rows = []
    started = time.perf_counter()
    for scale in args.scales:
        for weight in args.weights:
            model.hsic_scale, model.hsic_weight = scale, weight
            found = model.gradient_shares(x, y)
            row = {"scale": scale, "hsic_weight": weight, **found}
            rows.append(row)
            share = found["gradient_share_hsic"]["compression"]
            print(f"{scale} lambda {weight:g}: compression share {share:.4f}", flush=True)
    lines = [
        "| scale | lambda | share: compression | objective norm | HSIC norm |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        share = row["gradient_share_hsic"]
        norms = row["objective_norm"]["compression"], row["hsic_norm"]["compression"]
        lines.append(
            f"| {row['scale']} | {row['hsic_weight']:g} | {share['compression']:.4f} "
            f"| {norms[0]:.3g} | {norms[1]:.3g} |"
        )
    table = "\n".join(lines)
    machine = machine_facts()
    write_json(
        RESULT,
        {
            "run": str(args.run_dir),
            "pairs": args.pairs,
            "lora_b_sum_of_squares": lora_b_norm,
            "rows": rows,
            "seconds": time.perf_counter() - started,
            "command": " ".join(sys.argv),
            "note": args.note,
            "machine": machine,
        },
    )
    update_results_section(
        "hsic-gradient-share",
        f"""## HSIC's share of MARC's gradient, per lambda and scale ({args.run_dir})

{table}

Share = |gradient of -lambda * (HSIC_u + HSIC_i)| / (that + |gradient of the BCE|),
on the compression network, on the first {args.pairs} validation pairs of the run (one
batch), weights as trained (`MARC.gradient_shares`). The LoRA share is not reported
here: on the reloaded model every LoRA gradient norm came out 0 (its B factors are all
zero, sum of squares {lora_b_norm:.3g}; keras-hub saves LoRA layers as merged kernels);
why the A factors get no gradient either was not investigated. `GradientShareLogger`
measures the LoRA share during `fit`. Machine: {machine["cpu"]}, cpu_flags
{machine["cpu_flags"]}. Command: `{" ".join(sys.argv)}`. {args.note}
""",
    )
    print(table)


if __name__ == "__main__":
    main()
