"""What has to happen before Keras and keras-hub are first imported.

Keras reads `KERAS_BACKEND` once, on its first import, and picks TensorFlow
when TensorFlow is installed (keras-hub pulls it in). marc-keras runs on torch
only, so the choice has to be made before anything touches `keras`.

`import marc_keras` stays light (the command line's `--help` must not wait
for Keras), yet `keras.saving.load_model("encoder.keras")` right after it has
to find marc-keras' layers: they register themselves with Keras the moment
Keras itself is imported (`register_layers_when_keras_loads`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator
from types import ModuleType

REQUIRED_BACKEND = "torch"


def ensure_torch_backend() -> None:
    """Makes Keras use the torch backend, or says why it cannot.

    Raises:
        ImportError: Keras was already imported with another backend, or
            `KERAS_BACKEND` names another backend.
    """
    keras_module = sys.modules.get("keras")
    if keras_module is not None:
        active = keras_module.backend.backend()
        if active != REQUIRED_BACKEND:
            raise ImportError(
                f"marc_keras needs the Keras '{REQUIRED_BACKEND}' backend, but "
                f"Keras was already imported with the '{active}' backend. "
                "Import marc_keras before keras, or set "
                f"KERAS_BACKEND={REQUIRED_BACKEND} before starting Python."
            )
        return
    requested = os.environ.get("KERAS_BACKEND")
    if requested and requested != REQUIRED_BACKEND:
        raise ImportError(
            f"KERAS_BACKEND is set to '{requested}', but marc_keras runs on "
            f"'{REQUIRED_BACKEND}' only. Unset KERAS_BACKEND or set it to "
            f"'{REQUIRED_BACKEND}'."
        )
    os.environ["KERAS_BACKEND"] = REQUIRED_BACKEND
    # keras-hub imports TensorFlow (through tensorflow-text), whose C++ start-up
    # logs about CUDA and CPU features say nothing about a torch run.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# The modules whose classes `.keras` files of MARC runs name.
SERIALIZABLE_MODULES = (
    "marc_keras.layers",
    "marc_keras.models",
    "marc_keras.generative.generative_recommender",
)
# keras-hub imports these inside `try: ... except ImportError`, for its
# tf.data preprocessing only; marc-keras tokenizes with `tokenizers`.
TENSORFLOW_MODULES = ("tensorflow", "tensorflow_text")


class _RefusingLoader(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(
            f"{spec.name} is kept out of this import by marc_keras", name=spec.name
        )

    def exec_module(self, module):
        raise ModuleNotFoundError(f"{module.__name__} is kept out of this import by marc_keras")


class _RefuseModules(importlib.abc.MetaPathFinder):
    # A spec whose loader refuses, rather than an exception from find_spec:
    # `import` fails with ModuleNotFoundError, while `importlib.util.find_spec`
    # callers (torch._dynamo probes for TensorFlow) keep working.
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, _RefusingLoader())
        return None


@contextlib.contextmanager
def without_tensorflow() -> Iterator[None]:
    if any(name in sys.modules for name in TENSORFLOW_MODULES):
        yield
        return
    finder = _RefuseModules(TENSORFLOW_MODULES)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def import_keras_hub() -> ModuleType:
    """Imports keras-hub without TensorFlow, unless TensorFlow is already loaded.

    keras-hub's backbones run on the torch backend alone; TensorFlow (pulled
    in through tensorflow-text) would only add seconds of start-up and
    absl/cudart log lines. TensorFlow can still be imported later in the
    same process; keras-hub's tf.data preprocessing layers then stay
    unavailable in it.

    Returns:
        The `keras_hub` module.
    """
    with without_tensorflow():
        return importlib.import_module("keras_hub")


def _register_layers():
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Runs `_register_layers` right after the top-level `keras` package has loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _register_layers()

        spec.loader.exec_module = exec_module
        return spec


def register_layers_when_keras_loads() -> None:
    """Registers marc-keras' Keras classes now if Keras is loaded, else when it is.

    After `import marc_keras`, `keras.saving.load_model` reads `model.keras`
    and `encoder.keras` in a fresh process with no further import.
    """
    if "keras" in sys.modules:
        _register_layers()
    elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterKeras())


def set_random_seed(seed: int) -> None:
    """`keras.utils.set_random_seed` (Python, numpy, torch) without loading TensorFlow.

    Keras also seeds TensorFlow whenever TensorFlow is importable, which
    imports it: seconds of start-up and absl/cudart lines for a torch run.
    """
    import keras

    with without_tensorflow():
        keras.utils.set_random_seed(seed)


def serialize_keras_object(instance: object) -> dict:
    """`keras.saving.serialize_keras_object` without loading TensorFlow.

    Keras' serializer checks for `tf.TensorShape` whenever TensorFlow is
    importable, which imports it; `get_config` of every marc-keras layer
    that nests another goes through here.
    """
    import keras

    with without_tensorflow():
        return keras.saving.serialize_keras_object(instance)
