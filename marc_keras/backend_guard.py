"""Selects the torch backend before Keras is first imported.

Keras reads `KERAS_BACKEND` once, on its first import, and picks TensorFlow
when TensorFlow is installed (keras-hub pulls it in). marc-keras runs on torch
only, so the choice has to be made before anything touches `keras`.
"""

import os
import sys

REQUIRED_BACKEND = "torch"


def ensure_torch_backend():
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
