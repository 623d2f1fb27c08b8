"""The manifest of an ONNX encoder bundle: what is in it, where it came from, checksums."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
BUNDLE_FORMAT = "marc-keras-onnx-bundle"
BUNDLE_FORMAT_VERSION = 1
INPUT_NAMES = ("token_ids", "padding_mask")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class BundleManifest:
    """Everything a runtime needs to know about a bundle, as plain JSON data.

    Loading a bundle reads this JSON, the tokenizer JSON and the ONNX
    protobuf: nothing in a bundle is ever executed as code.

    Args:
        precision: "fp32", "fp16" or "int8".
        outputs: output name -> width, e.g. `{"compressed": 128, "original": 384}`.
        pooling: "mean", "last" or "cls" (inside the graph).
        max_length: tokens per text the tokenizer truncates to.
        hidden_dim: the backbone width d.
        num_layers: transformer blocks in the backbone.
        vocabulary_size: rows of the model's token embedding.
        tokenizer_vocabulary_size: tokens the bundled tokenizer knows.
        pad_id: the padding token id.
        opset: ONNX opset of the graph.
        files: bundle file name -> sha256 (model, external data, tokenizer).
        source: where the encoder came from (run directory, tower, config).
        versions: package versions used to export.
        verification: the parity check that the export passed.
        quantization: for int8 bundles, the quantization scheme (formats,
            granularity, `reduce_range`); empty otherwise.
        optimization: the graph passes (`OnnxExporter.export`'s `optimize`):
            `requested`, `applied`, the count of each pass's rewrites, and
            why "fused" fell back to "basic" if it did; empty in bundles
            written before it was recorded.
        format: always `marc-keras-onnx-bundle`.
        format_version: manifest layout version.

    Example:
    >>> manifest = BundleManifest.load("bundles/minilm")  # checks every checksum
    >>> manifest.outputs
    {'compressed': 128, 'original': 384}
    """

    precision: str
    outputs: dict
    pooling: str
    max_length: int
    hidden_dim: int
    num_layers: int
    vocabulary_size: int
    tokenizer_vocabulary_size: int
    pad_id: int
    opset: int
    files: dict
    source: dict = dataclasses.field(default_factory=dict)
    versions: dict = dataclasses.field(default_factory=dict)
    verification: dict = dataclasses.field(default_factory=dict)
    quantization: dict = dataclasses.field(default_factory=dict)
    optimization: dict = dataclasses.field(default_factory=dict)
    inputs: tuple = INPUT_NAMES
    format: str = BUNDLE_FORMAT
    format_version: int = BUNDLE_FORMAT_VERSION

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["inputs"] = list(self.inputs)
        return values

    def output_dims(self, names: Iterable[str] | None = None) -> dict[str, int]:
        """Widths of the named outputs (all by default), in the order asked.

        Raises:
            ValueError: a name the bundle has no output for (the message lists them).
        """
        names = list(names or self.outputs)
        unknown = [name for name in names if name not in self.outputs]
        if unknown:
            raise ValueError(f"Unknown outputs {unknown}; this bundle has {sorted(self.outputs)}.")
        return {name: int(self.outputs[name]) for name in names}

    def write(self, bundle_dir: str | os.PathLike) -> None:
        Path(bundle_dir, MANIFEST_FILE).write_text(
            json.dumps(self.to_dict(), indent=2) + "\n", "utf-8"
        )

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike, verify_checksums: bool = True) -> BundleManifest:
        """Reads and checks the manifest of `bundle_dir`.

        Args:
            bundle_dir: a directory written by `OnnxExporter`.
            verify_checksums: compare every listed file with its sha256.

        Returns:
            A `BundleManifest`.

        Raises:
            FileNotFoundError: the directory, its manifest or a listed file is missing.
            ValueError: the manifest is not a marc-keras bundle manifest, or a
                file's checksum differs (the file was altered or replaced).
        """
        bundle_dir = Path(bundle_dir)
        path = bundle_dir / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"'{bundle_dir}' is not an encoder bundle: it has no {MANIFEST_FILE}. "
                "Create one with `marc-keras export`."
            )
        try:
            values = json.loads(path.read_text("utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); re-export the bundle."
            ) from error
        if not isinstance(values, dict) or values.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{path} is not a {BUNDLE_FORMAT} manifest; re-export the bundle.")
        if values.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {values.get('format_version')}; this marc-keras reads "
                f"version {BUNDLE_FORMAT_VERSION}. Re-export the bundle with this version."
            )
        known = {field.name for field in dataclasses.fields(cls)}
        missing = sorted(
            name for name in known if name not in values and name not in cls._defaults()
        )
        if missing:
            raise ValueError(f"{path} lacks the keys {missing}; re-export the bundle.")
        manifest = cls(**{key: value for key, value in values.items() if key in known})
        manifest = dataclasses.replace(manifest, inputs=tuple(manifest.inputs))
        if verify_checksums:
            manifest.verify_files(bundle_dir)
        return manifest

    @classmethod
    def _defaults(cls):
        return {
            field.name
            for field in dataclasses.fields(cls)
            if field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        }

    def verify_files(self, bundle_dir: str | os.PathLike) -> None:
        """Checks that every listed file exists and has its recorded sha256."""
        for name, expected in self.files.items():
            path = Path(bundle_dir, name)
            if not path.is_file():
                raise FileNotFoundError(
                    f"Bundle file '{path}' listed in {MANIFEST_FILE} is missing."
                )
            actual = file_sha256(path)
            if actual != expected:
                raise ValueError(
                    f"Bundle file '{path}' does not match its checksum in {MANIFEST_FILE} "
                    f"(sha256 {actual[:12]}..., expected {expected[:12]}...): it was altered "
                    "or replaced. Re-export the bundle."
                )
