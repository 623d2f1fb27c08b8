"""`kill -9` in the middle of `marc-keras fit`, then the same command again."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def _fit_command(tiny_preset, ml1m_dir, run_dir):
    marc_keras = os.path.join(os.path.dirname(sys.executable), "marc-keras")
    return [
        marc_keras,
        "fit",
        "--run-dir",
        str(run_dir),
        "--data-dir",
        str(ml1m_dir),
        "--set",
        f'model.preset="{tiny_preset}"',
        "--set",
        "model.lora_rank=2",
        "--set",
        "model.max_length=24",
        "--set",
        "model.compressed_dim=8",
        # 1,536 pairs in batches of 8: 192 steps, a checkpoint every 16.
        "--set",
        "training.train_samples=1536",
        "--set",
        "training.validation_samples=16",
        "--set",
        "training.test_samples=16",
        "--set",
        "training.batch_size=8",
        "--set",
        "training.checkpoint_steps=16",
        "--set",
        "training.threads=1",
    ]


def test_a_killed_fit_resumes_from_its_last_checkpoint_and_finishes(
    tiny_preset, ml1m_dir, tmp_path
):
    run_dir = tmp_path / "run"
    command = _fit_command(tiny_preset, ml1m_dir, run_dir)
    state_path = run_dir / "checkpoint" / "state.json"
    with open(tmp_path / "first.log", "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            if state_path.is_file() and json.loads(state_path.read_text())["step"] >= 32:
                break
            time.sleep(0.05)
        assert child.poll() is None, (
            "fit ended before it could be killed: " + (tmp_path / "first.log").read_text()
        )
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = json.loads(state_path.read_text())
    assert killed_at["epoch"] == 0 and 32 <= killed_at["step"] < 192 and killed_at["step"] % 16 == 0
    assert not (run_dir / "model.keras").exists()

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (
        f"epoch 1, step {killed_at['step']} ({killed_at['global_step']} steps trained)"
        in again.stderr
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == killed_at["global_step"]
    assert (run_dir / "model.keras").is_file() and not (run_dir / "checkpoint").exists()
    # Not a terminal: plain progress lines, no ANSI redraws, no TensorFlow start-up noise.
    assert "\x1b[" not in again.stderr + again.stdout
    assert "cudart" not in again.stderr and "absl" not in again.stderr
