"""L2D stages end to end on a tiny random Llama saved as a preset, and bring-your-own files."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from causal_lm_helpers import MOVIE_TITLES, tiny_causal_tokenizer
from helpers import tiny_hub_backbone
from marc_keras.cli.main import main
from marc_keras.config.generative_config import GenerativeConfig
from marc_keras.experiments.l2d_run import ROWS, L2DRun


@pytest.fixture
def l2d_files(tmp_path):
    """A preset directory (random Llama + tokenizer.json) and interaction / item tables."""
    tokenizer = tiny_causal_tokenizer()
    preset = tmp_path / "preset"
    tiny_hub_backbone(tokenizer.vocabulary_size, "llama", seed=0).save_to_preset(str(preset))
    (preset / "tokenizer.json").write_text(tokenizer.to_json())
    rng = np.random.default_rng(0)
    items = list(MOVIE_TITLES)
    rows = [
        (f"u{user}", item, 4.0, 1000 * user + position)
        for user in range(12)
        for position, item in enumerate(rng.permutation(items)[: 4 + user % 3])
    ]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    interactions.to_csv(tmp_path / "interactions.csv", index=False)
    pd.DataFrame({"item_id": items, "name": list(MOVIE_TITLES.values())}).to_csv(
        tmp_path / "items.csv", index=False
    )
    return tmp_path


def _config_values(root):
    return {
        "data": {
            "dataset": "files",
            "interactions": str(root / "interactions.csv"),
            "items": str(root / "items.csv"),
            "title_field": "name",
            "history_length": 3,
            "train_samples": 12,
            "memory_samples": 20,
            "validation_users": 6,
            "test_users": 8,
        },
        "model": {"preset": str(root / "preset"), "lora_rank": 2, "max_length": 120},
        "training": {"batch_size": 4, "epochs": 2, "checkpoint_steps": 2},
        "decoding": {
            "beam_width": 3,
            "local_sizes": [4, 20],
            "max_new_tokens": 6,
            "batch_size": 4,
            "latency_users": 2,
            "latency_batch_sizes": [1, 2],
        },
    }


def test_stages_write_every_row_and_resume_without_tensorflow(l2d_files):
    # A fresh process: the stages must run without loading TensorFlow.
    config_path = l2d_files / "config.json"
    config_path.write_text(json.dumps(_config_values(l2d_files)))
    code = (
        "import json, sys\n"
        "import marc_keras\n"
        "from marc_keras.config.generative_config import GenerativeConfig\n"
        "from marc_keras.experiments.l2d_run import L2DRun\n"
        f"config = GenerativeConfig.from_file({str(config_path)!r})\n"
        f"run = L2DRun.open({str(l2d_files / 'run')!r}, config)\n"
        "fit = run.fit(log=lambda line: None, verbose=0)\n"
        "states = run.memory(log=lambda line: None).states.shape\n"
        "run.evaluate(log=lambda line: None)\n"
        "print(json.dumps({'fit': fit, 'states': states,"
        " 'tensorflow': 'tensorflow' in sys.modules}))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environment["PYTHONPATH"] = os.pathsep.join(sys.path)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=600
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["tensorflow"] is False
    assert outcome["fit"]["train_samples"] == 12 and outcome["fit"]["epochs"] == 2
    assert outcome["states"] == [20, 16]
    assert (l2d_files / "run" / "lora.lora.h5").is_file()
    assert not (l2d_files / "run" / "checkpoint").exists()
    config = GenerativeConfig.from_file(config_path)
    report = json.loads((l2d_files / "run" / "evaluation.json").read_text())
    assert set(report["rows"]) == set(ROWS)
    for name in ROWS:
        row = report["rows"][name]
        assert 0.0 <= row["hr@1"] <= 1.0
        if name != "most-popular":
            assert row["ms_per_user_b1"] > 0 and row["ms_per_user_b2"] > 0
    assert "hr@5" not in report["rows"]["beam"]  # beam ranks only B = 3 titles
    assert report["rows"]["l2d-g"]["hr@20"] == 1.0  # six items: every one is in the top 20
    assert report["local_size"] in (4, 20)
    assert 0.0 <= report["rows"]["greedy-grounding"]["valid_title_share"] <= 1.0
    assert report["test_users"] == 8 and report["catalogue_items"] == 6
    assert report["speedup_vs_beam_b1"] > 0
    assert report["beam_length_penalty"] == 0.0
    # Each decoded row records the decoding settings it was made with.
    assert report["rows"]["l2d-l"]["local_size"] == report["local_size"]
    assert report["rows"]["beam"]["beam_width"] == 3
    assert report["rows"]["greedy-grounding"]["max_new_tokens"] == 6
    assert report["rows"]["beam"]["length_penalty"] == 0.0
    # A second evaluate reuses the finished rows instead of decoding again.
    stored = {"hr@1": 0.5, "beam_width": 3, "length_penalty": 0.0}
    (l2d_files / "run" / "evaluation" / "beam.json").write_text(json.dumps(stored))
    again = L2DRun.open(l2d_files / "run", config).evaluate(log=lambda line: None)
    assert again["rows"]["beam"] == stored
    # Several length penalties: one is chosen on validation users, each
    # candidate's figure is kept, and a beam row of another penalty is redone.
    values = _config_values(l2d_files)
    values["decoding"]["length_penalties"] = [0.0, 1.0]
    lines = []
    chosen = L2DRun.open(l2d_files / "run", GenerativeConfig.from_dict(values)).evaluate(
        log=lines.append
    )
    by_penalty = chosen["validation_ndcg@10_by_length_penalty"]
    assert set(by_penalty) == {0.0, 1.0}
    assert all(0.0 <= value <= 1.0 for value in by_penalty.values())
    assert chosen["beam_length_penalty"] == max(by_penalty, key=lambda p: (by_penalty[p], -p))
    assert chosen["rows"]["beam"]["length_penalty"] == chosen["beam_length_penalty"]
    stored_choice = json.loads(
        (l2d_files / "run" / "evaluation" / "beam-b3-validation.json").read_text()
    )
    assert stored_choice == {str(p): value for p, value in by_penalty.items()}
    assert (chosen["rows"]["beam"] == stored) == (chosen["beam_length_penalty"] == 0.0)
    assert any("beam: length penalty" in line for line in lines)


def test_other_settings_do_not_reuse_a_run(l2d_files):
    values = _config_values(l2d_files)
    L2DRun.open(l2d_files / "run", GenerativeConfig.from_dict(values))
    values["training"]["learning_rate"] = 0.5
    with pytest.raises(ValueError, match="settings differ in training.learning_rate"):
        L2DRun.open(l2d_files / "run", GenerativeConfig.from_dict(values))
    values["training"]["learning_rate"] = 1e-3
    values["decoding"]["beam_width"] = 2  # decoding settings may change
    L2DRun.open(l2d_files / "run", GenerativeConfig.from_dict(values))


def test_cli_runs_the_stages_and_exports_the_prompt_encoder(l2d_files):
    values = _config_values(l2d_files)
    values["data"]["train_samples"] = 4
    values["training"]["epochs"] = 1
    lines = []
    for section, settings in values.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    config = l2d_files / "l2d.toml"
    config.write_text("\n".join(lines) + "\n")
    run_dir, bundle = str(l2d_files / "cli-run"), str(l2d_files / "bundle")
    common = ["--config", str(config), "--run-dir", run_dir]
    runner = CliRunner()
    fitted = runner.invoke(main, ["l2d", "fit", *common])
    assert fitted.exit_code == 0, fitted.output
    memory = runner.invoke(main, ["l2d", "memory", *common])
    assert memory.exit_code == 0, memory.output
    assert '"memory_samples": 20' in memory.output
    exported = runner.invoke(main, ["l2d", "export", *common, "--bundle-dir", bundle])
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((l2d_files / "bundle" / "manifest.json").read_text())
    assert manifest["outputs"] == {"original": 16} and manifest["pooling"] == "last"
    assert manifest["verification"]["max_abs_error"]["original"] <= 1e-4

    from marc_keras.export.onnx_encoder import OnnxEncoder

    run = L2DRun.open(run_dir, GenerativeConfig.from_file(config))
    _, prompts, samples = run.data()
    histories = samples["test"]["history"].tolist()[:3]
    texts = [prompts.template.render([prompts.title_of(item) for item in h]) for h in histories]
    onnx_states = OnnxEncoder(bundle).encode(texts)["original"]
    keras_states = run.trained_model().prompt_states(prompts.prompt_arrays(histories))
    np.testing.assert_allclose(onnx_states, keras_states, atol=1e-4)


def test_cli_errors_are_one_line(l2d_files):
    result = CliRunner().invoke(main, ["l2d", "fit", "--run-dir", str(l2d_files / "run")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: model.preset is not set: point it at a causal LM checkpoint directory, e.g. "
        "the one `marc-keras prepare-smollm2 --output-dir checkpoints/smollm2-135m` writes."
    ]
    result = CliRunner().invoke(
        main, ["l2d", "fit", "--run-dir", "x", "--set", "decoding.beam_width=0"]
    )
    assert result.exit_code == 1
    assert "decoding.beam_width must be >= 1; got 0." in result.output
