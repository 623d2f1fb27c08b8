import os
import subprocess
import sys

import keras


def _run(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | env
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )


def test_importing_marc_keras_selects_torch():
    assert keras.backend.backend() == "torch"
    result = _run("import marc_keras, keras; print(keras.backend.backend())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch")


def test_keras_already_loaded_on_another_backend_is_an_error():
    result = _run("import keras\nimport marc_keras", KERAS_BACKEND="tensorflow")
    assert result.returncode != 0
    assert "Keras was already imported with the 'tensorflow' backend" in result.stderr


def test_conflicting_environment_variable_is_an_error():
    result = _run("import marc_keras", KERAS_BACKEND="jax")
    assert "KERAS_BACKEND is set to 'jax'" in result.stderr


def test_plain_keras_loads_marc_files_in_a_fresh_process_without_tensorflow(
    make_tiny_marc, tmp_path
):
    import json

    import numpy as np

    from marc_keras.utils.backend_guard import without_tensorflow

    model = make_tiny_marc()
    texts = ["user likes drama", "the horror movie", ""]
    model.predict_on_batch(model.tokenize(texts, texts))
    encoder = model.encoder()
    with without_tensorflow():
        model.save(tmp_path / "model.keras")
        encoder.save(tmp_path / "encoder.keras")
    expected = encoder.encode(texts)["compressed"]
    code = (
        "import json, sys\n"
        "import marc_keras, keras\n"
        f"model = keras.saving.load_model({str(tmp_path / 'model.keras')!r})\n"
        f"encoder = keras.saving.load_model({str(tmp_path / 'encoder.keras')!r})\n"
        f"vectors = encoder.encode({texts!r})['compressed']\n"
        f"item_vectors = model.encoder('item').encode({texts!r})['compressed']\n"
        "print(json.dumps({'types': [type(model).__name__, type(encoder).__name__],"
        " 'vectors': vectors.tolist(), 'item_vectors': item_vectors.tolist(),"
        " 'tensorflow': 'tensorflow' in sys.modules}))"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["types"] == ["MARC", "MARCEncoder"] and loaded["tensorflow"] is False
    np.testing.assert_allclose(np.array(loaded["vectors"]), expected, atol=1e-6)
    np.testing.assert_allclose(np.array(loaded["item_vectors"]), expected, atol=1e-6)


def test_help_and_the_runtime_encoder_import_neither_keras_nor_tensorflow():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from marc_keras.cli.main import main\n"
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(main, ['encode', '--help']).exit_code == 0\n"
        "import marc_keras.export.onnx_encoder\n"
        "print(sorted(m for m in ('keras', 'keras_hub', 'torch', 'tensorflow')"
        " if m in sys.modules))"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_keras_hub_loads_without_tensorflow_and_tensorflow_can_still_be_imported_later():
    code = (
        "import sys\n"
        "import marc_keras, keras, keras_hub\n"
        "before = 'tensorflow' in sys.modules\n"
        "from marc_keras.layers.lora_backbone import LoRABackbone\n"
        "import tensorflow as tf\n"
        "print(before, tf.constant(2).numpy() * 2)"
    )
    result = _run(code, TF_CPP_MIN_LOG_LEVEL="3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False 4"
