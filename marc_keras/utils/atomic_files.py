"""Atomic writes: a file or directory appears whole or not at all.

Light on purpose (standard library only), so the runtime encoder, the
embedding store and the ranking code can use it without importing Keras.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Calls `write(temporary_path)`, then renames it to `path` in one step.

    A run killed mid-write leaves the previous file (or none), never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept whole: Keras insists on ".keras", keras-hub on ".lora.h5".
    suffix = "".join(path.suffixes)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=suffix)
    os.close(descriptor)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path: str | os.PathLike, values: object) -> None:
    write_atomically(
        path, lambda temporary: Path(temporary).write_text(json.dumps(values, indent=2) + "\n")
    )


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty directory beside `target` that replaces it when the block succeeds.

    An exception inside the block (a failed check, an interrupt) removes the
    staging directory and leaves `target` as it was.

    Example:
    >>> with staged_directory(Path("bundles/demo")) as staging:
    ...     (staging / "model.onnx").write_bytes(data)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".partial-{target.name}-"))
    staging.chmod(0o755)
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
