"""MARC's loss terms."""

from marc_keras.losses.hsic import hsic

__all__ = ["hsic"]
