import os
import subprocess
import sys

import keras


def _run(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)


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
