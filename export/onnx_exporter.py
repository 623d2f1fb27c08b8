"""Exports a frozen MARC encoder to a verified ONNX bundle (DESIGN.md Sec. 3)."""

from __future__ import annotations

import dataclasses
import contextlib
import importlib.metadata
import logging
import os
import warnings
from pathlib import Path

import keras
import numpy as np
import onnx
import torch

from marc_keras.export.attention_fusion import fuse_attention
from marc_keras.export.bundle_manifest import (
    INPUT_NAMES,
    MODEL_FILE,
    TOKENIZER_FILE,
    BundleManifest,
    file_sha256,
)
from marc_keras.export.onnx_graph import convert_to_float16, quantize_int8, rewrite_einsum_as_matmul
from marc_keras.models.marc_encoder import MARCEncoder
from marc_keras.utils.atomic_files import staged_directory

PRECISIONS = ("fp32", "fp16", "int8")
# Graph passes, cheapest first: "none" keeps torch's export as it is; "basic"
# rewrites keras-hub's Einsum products as MatMul (ORT's GEMM path, quantizable);
# "fused" also folds each attention block into ORT's `Attention` op.
OPTIMIZATIONS = ("none", "basic", "fused")
EXTERNAL_DATA_FILE = "model.onnx.data"
# protobuf cannot serialise a message over 2 GiB; leave room for the graph.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
EXPORT_SHAPE = (2, 16)


@dataclasses.dataclass(frozen=True)
class ParityCheck:
    """How closely ONNX Runtime must match Keras before a bundle is written.

    fp32 is held to an absolute error, scaled by the output's largest
    magnitude where that exceeds 1 (an LM's final hidden states reach tens,
    and fp32 rounding grows with them: SmolLM2's prompt states differed by
    1.2e-4 on an AVX-512 CPU); fp16 and int8 change every number a
    little, so they are held to the cosine between ORT's and Keras' vector of
    each text (the worst row counts). The thresholds are what a downstream
    ranker does not notice: int8 vectors at cosine >= 0.97 changed the
    downstream AUC by less than 0.002 (benchmarks/RESULTS.md).

    Args:
        shapes: (batch, length) of the random token batches compared; none
            equals the export's (2, 16), so dynamic axes are exercised.
        fp32_max_abs_error: largest allowed |ORT - Keras| for fp32, times
            max(1, largest |Keras output|).
        fp16_min_cosine: smallest allowed per-row cosine for fp16.
        int8_min_cosine: smallest allowed per-row cosine for int8.
        seed: seed of the random token batches.
    """

    shapes: tuple = ((3, 11), (5, 37))
    fp32_max_abs_error: float = 1e-4
    fp16_min_cosine: float = 0.995
    int8_min_cosine: float = 0.97
    seed: int = 0


class _FusionFallback(Exception):
    """Why a "fused" export became "basic"."""


class _OnnxModule(torch.nn.Module):
    # torch.onnx traces an nn.Module with positional tensors; the Keras
    # encoder takes a dict, so this adapter is the exported entry point.
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, token_ids, padding_mask):
        outputs = self.encoder(
            {"token_ids": token_ids, "padding_mask": padding_mask}, training=False
        )
        return tuple(outputs[name] for name in self.encoder.output_dims)


def _versions():
    names = ("marc-keras", "keras", "keras-hub", "torch", "onnx", "onnxruntime", "onnxscript")
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@contextlib.contextmanager
def _quiet_exporters():
    # torch.onnx and the ORT quantizer log advice about torchvision, axis
    # names and pre-processing on every export; none of it is actionable here.
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def merge_lora(encoder: MARCEncoder) -> MARCEncoder:
    """A float32 copy of `encoder` whose backbone has the LoRA factors merged in
    (`LoRABackbone.merged`).

    Args:
        encoder: a `MARCEncoder`.

    Returns:
        A `MARCEncoder` with `lora_rank=0` computing the same vectors.
    """
    layer = encoder.backbone
    backbone = layer.merged(dtype="float32")
    compression = None
    if encoder.compression is not None:
        compression = type(encoder.compression).from_config(
            {**encoder.compression.get_config(), "dtype": "float32"}
        )
        compression.build((None, layer.hidden_dim))
        compression.set_weights(encoder.compression.get_weights())
    merged = MARCEncoder(backbone, compression, name=f"{encoder.name}_merged")
    merged.trainable = False
    return merged


def random_token_batch(
    shape: tuple[int, int], vocabulary_size: int, pad_id: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Right-padded random token ids with random lengths (the longest row full)."""
    batch, length = shape
    lengths = rng.integers(1, length + 1, batch)
    lengths[0] = length
    token_ids = rng.integers(min(5, vocabulary_size - 1), vocabulary_size, (batch, length)).astype(
        "int32"
    )
    padding_mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
    token_ids = np.where(padding_mask == 1, token_ids, pad_id).astype("int32")
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def row_cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    first, second = np.asarray(first, "float64"), np.asarray(second, "float64")
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return (first * second).sum(axis=1) / np.maximum(norms, 1e-12)


class OnnxExporter:
    """Turns a frozen MARC encoder into a verified ONNX Runtime bundle.

    The bundle directory holds `model.onnx` (LoRA merged, pooling and
    compression inside, dynamic batch and sequence axes, inputs `token_ids`
    and `padding_mask` int32 (B, T), outputs `compressed` (B, k) and
    `original` (B, d) float32; an encoder without compression, such as
    L2D's prompt encoder, has `original` only), `tokenizer.json` and `manifest.json` (dims,
    pooling, max length, opset, source, versions, sha256 of every file and
    the parity check it passed). Precisions: `fp32`; `fp16` (weights and
    arithmetic in float16, normalisation in float32, float32 inputs/outputs;
    for GPUs); `int8` (dynamic quantization of every MatMul, for ONNX Runtime
    on CPU, with 7-bit weights so that AVX2-only and VNNI CPUs give the same
    vectors; the manifest's `quantization` names the scheme). The graph is
    written with Einsum products rewritten as MatMul and, where it applies,
    each attention block fused into ONNX Runtime's `Attention` op (`optimize`;
    the manifest's `optimization` says what was applied).

    Nothing is final until it is verified: `onnx.checker`, then ONNX Runtime
    against the Keras encoder on random token batches of shapes other than
    the export's (`ParityCheck`). The bundle is assembled in a temporary
    directory beside the target and renamed into place only when it passes,
    so a failed or interrupted export leaves no bundle.

    Args:
        encoder: a `MARCEncoder` (from `MARC.encoder()` or `encoder.keras`).
        source: dict describing where it came from, stored in the manifest.

    Example:
    >>> exporter = OnnxExporter.from_run("runs/demo")
    >>> manifest = exporter.export("bundles/demo-int8", precision="int8")
    >>> manifest.verification["min_cosine"]
    {'compressed': 0.99..., 'original': 0.99...}
    """

    def __init__(self, encoder: MARCEncoder, source: dict | None = None) -> None:
        if not isinstance(encoder, MARCEncoder):
            raise TypeError(f"OnnxExporter needs a MARCEncoder; got {type(encoder).__name__}.")
        if encoder.backbone.tokenizer is None:
            raise ValueError(
                "The encoder has no tokenizer; export an encoder built with from_preset."
            )
        self.encoder = encoder
        self.source = dict(source or {})

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, tower: str = "user") -> OnnxExporter:
        """The exporter of a finished `marc-keras fit` run's encoder.

        Args:
            run_dir: the run directory.
            tower: "user" (reads `encoder.keras`) or "item" (reads
                `model.keras`; differs only when compression is not shared).

        Raises:
            FileNotFoundError: the run has no trained model yet.
        """
        run_dir = Path(run_dir)
        if tower not in ("user", "item"):
            raise ValueError(f"tower must be 'user' or 'item'; got '{tower}'.")
        if tower == "user":
            path = run_dir / "encoder.keras"
            if not path.is_file():
                raise FileNotFoundError(
                    f"'{path}' does not exist; run `marc-keras fit --run-dir {run_dir}` first."
                )
            encoder = keras.saving.load_model(path)
        else:
            path = run_dir / "model.keras"
            if not path.is_file():
                raise FileNotFoundError(
                    f"'{path}' does not exist; run `marc-keras fit --run-dir {run_dir}` first."
                )
            encoder = keras.saving.load_model(path).encoder("item")
        return cls(
            encoder, source={"run": run_dir.resolve().name, "tower": tower, "file": path.name}
        )

    def export(
        self,
        bundle_dir: str | os.PathLike,
        precision: str = "fp32",
        opset: int = 20,
        overwrite: bool = False,
        check: ParityCheck | None = None,
        external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
        optimize: str | None = None,
    ) -> BundleManifest:
        """Exports, verifies and writes the bundle.

        Args:
            bundle_dir: the bundle directory to create.
            precision: "fp32", "fp16" or "int8".
            opset: ONNX opset.
            overwrite: replace an existing bundle directory.
            check: a `ParityCheck`; `None` uses the defaults.
            external_data_threshold: graphs larger than this many bytes keep
                their weights in `model.onnx.data` beside `model.onnx`.
            optimize: graph passes, one of `OPTIMIZATIONS`. `None` (the
                default) is "fused" where it applies and passes the parity
                gate, else "basic". "fused" folds every attention block into
                ONNX Runtime's `Attention` op (`fuse_attention`; `QAttention`
                in int8): 1.1-1.3x faster on CPU (benchmarks/RESULTS.md).
                It does not apply to fp16 (ORT's CPU `Attention` kernel is
                float32-only and the parity gate runs on the CPU) nor to
                decoder backbones (rotary positions, causal masks); asked for
                explicitly, it then falls back to "basic" with a warning. The
                manifest's `optimization` records what was asked and applied.

        Returns:
            The `BundleManifest` written.

        Raises:
            ValueError: unknown precision or optimization, an existing target
                without `overwrite`, or a failed parity check (the message
                gives the measured error and the threshold).
        """
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}; got '{precision}'."
            )
        if optimize is not None and optimize not in OPTIMIZATIONS:
            raise ValueError(
                f"optimize must be one of {', '.join(OPTIMIZATIONS)}; got '{optimize}'."
            )
        bundle_dir = Path(bundle_dir)
        if bundle_dir.exists() and not overwrite:
            raise ValueError(
                f"Bundle directory '{bundle_dir}' already exists; "
                "pass overwrite=True (--overwrite) to replace it."
            )
        check = check or ParityCheck()
        with staged_directory(bundle_dir) as staging:
            with _quiet_exporters():
                exported = self._export_graph(opset)
            model_files, quantization, verification, optimization = self._write_verified(
                exported, staging, precision, optimize, check, external_data_threshold
            )
            (staging / TOKENIZER_FILE).write_text(
                self.encoder.backbone.tokenizer.to_json(), "utf-8"
            )
            manifest = self._manifest(
                staging,
                [*model_files, TOKENIZER_FILE],
                precision,
                opset,
                verification,
                quantization,
                optimization,
            )
            manifest.write(staging)
        return manifest

    def _write_verified(self, exported, directory, precision, optimize, check, threshold):
        """Applies the graph passes, writes and verifies the model; "fused" (asked for
        or by default) falls back to "basic" where it does not apply or fails the gate."""
        fallback = None
        if optimize in ("none", "basic"):
            level = optimize
        elif precision == "fp16":
            level, fallback = (
                "basic",
                (
                    "fp16 keeps attention unfused: ONNX Runtime's CPU Attention kernel is "
                    "float32-only and the parity gate runs on the CPU"
                ),
            )
        else:
            try:
                return self._write_level(
                    "fused", exported, directory, precision, check, threshold, optimize
                )
            except _FusionFallback as reason:
                level, fallback = "basic", str(reason)
        if fallback and optimize == "fused":
            warnings.warn(
                f"Exported with optimize='basic' instead of 'fused': {fallback}.", stacklevel=3
            )
        return self._write_level(
            level, exported, directory, precision, check, threshold, optimize, fallback
        )

    def _write_level(
        self, level, exported, directory, precision, check, threshold, optimize, fallback=None
    ):
        model = onnx.ModelProto()
        model.CopyFrom(exported)
        passes = {
            "einsum_as_matmul": rewrite_einsum_as_matmul(model) if level != "none" else 0,
            "fused_attention": fuse_attention(model) if level == "fused" else 0,
        }
        if level == "fused" and not passes["fused_attention"]:
            raise _FusionFallback(
                "no attention block matched the fusable pattern (decoder backbones with "
                "rotary positions or causal masks are not fused)"
            )
        with _quiet_exporters():
            model_files, quantization = self._write_model(
                model, directory, precision, threshold, level == "fused"
            )
        onnx.checker.check_model(str(directory / MODEL_FILE), full_check=True)
        try:
            verification = self._verify(directory / MODEL_FILE, precision, check)
        except ValueError as error:
            if level != "fused":
                raise
            for name in model_files:
                (directory / name).unlink(missing_ok=True)
            raise _FusionFallback(f"the fused graph failed the parity gate ({error})") from error
        optimization = {"requested": optimize or "auto", "applied": level, **passes}
        if fallback:
            optimization["fallback"] = fallback
        return model_files, quantization, verification, optimization

    def _export_graph(self, opset):
        """The LoRA-merged encoder as torch.onnx exports it, before any graph pass."""
        merged = merge_lora(self.encoder)
        example = random_token_batch(
            EXPORT_SHAPE, self._vocabulary_size, self._pad_id, np.random.default_rng(0)
        )
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        program = torch.onnx.export(
            _OnnxModule(merged).eval(),
            tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES),
            input_names=list(INPUT_NAMES),
            output_names=list(merged.output_dims),
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
        return program.model_proto

    def _write_model(self, model, directory, precision, external_data_threshold, fused):
        if precision == "fp16":
            model = convert_to_float16(model)
        external = model.ByteSize() > external_data_threshold
        target = directory / (f"float32-{MODEL_FILE}" if precision == "int8" else MODEL_FILE)
        self._save(model, target, external)
        quantization = {}
        if precision == "int8":
            quantization = quantize_int8(
                target, directory / MODEL_FILE, external, fused_attention=fused
            )
            for leftover in (target, directory / f"float32-{EXTERNAL_DATA_FILE}"):
                leftover.unlink(missing_ok=True)
            external = (directory / EXTERNAL_DATA_FILE).is_file()
        return ([MODEL_FILE, EXTERNAL_DATA_FILE] if external else [MODEL_FILE]), quantization

    @staticmethod
    def _save(model, path, external):
        if external:
            onnx.save_model(
                model,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=path.name.replace(MODEL_FILE, EXTERNAL_DATA_FILE),
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(path))

    @property
    def _vocabulary_size(self):
        return int(self.encoder.backbone.backbone.vocabulary_size)

    @property
    def _pad_id(self):
        return int(self.encoder.backbone.tokenizer.pad_id)

    def _verify(self, model_path, precision, check):
        import onnxruntime

        session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(check.seed)
        output_names = list(self.encoder.output_dims)
        worst_error = dict.fromkeys(output_names, 0.0)
        scale = dict.fromkeys(output_names, 1.0)
        worst_cosine = dict.fromkeys(output_names, 1.0)
        shapes = []
        for batch, length in check.shapes:
            length = min(length, self.encoder.backbone.max_length or length)
            shapes.append([batch, length])
            tokens = random_token_batch((batch, length), self._vocabulary_size, self._pad_id, rng)
            expected = self.encoder.predict_on_batch(tokens)
            actual = dict(zip(output_names, session.run(output_names, tokens)))
            for name in output_names:
                reference = np.asarray(expected[name], "float32")
                if actual[name].shape != reference.shape:
                    raise ValueError(
                        f"ONNX output '{name}' has shape {actual[name].shape} at input shape "
                        f"{(batch, length)}; Keras gives {reference.shape}. The export is wrong."
                    )
                worst_error[name] = max(
                    worst_error[name], float(np.abs(actual[name] - reference).max())
                )
                scale[name] = max(scale[name], float(np.abs(reference).max()))
                worst_cosine[name] = min(
                    worst_cosine[name], float(row_cosines(actual[name], reference).min())
                )
        verification = {"shapes": shapes, "max_abs_error": worst_error, "min_cosine": worst_cosine}
        if precision == "fp32":
            limits = {name: check.fp32_max_abs_error * scale[name] for name in output_names}
            verification["fp32_error_limit"] = limits
            failed = {
                name: error for name, error in worst_error.items() if not error <= limits[name]
            }
            limit = f"max abs error <= {check.fp32_max_abs_error} x max(1, max |output|): {limits}"
        else:
            threshold = check.fp16_min_cosine if precision == "fp16" else check.int8_min_cosine
            failed = {
                name: cosine for name, cosine in worst_cosine.items() if not cosine >= threshold
            }
            limit = f"per-text cosine >= {threshold}"
        if failed:
            raise ValueError(
                f"The {precision} ONNX export does not match Keras ({limit} required; got {failed} "
                f"on shapes {shapes}). No bundle was written."
            )
        verification["threshold"] = limit
        return verification

    def _manifest(
        self, directory, files, precision, opset, verification, quantization, optimization
    ):
        backbone = self.encoder.backbone
        return BundleManifest(
            precision=precision,
            outputs={name: int(dim) for name, dim in self.encoder.output_dims.items()},
            pooling=backbone.pooling.mode,
            max_length=int(backbone.max_length),
            hidden_dim=backbone.hidden_dim,
            num_layers=backbone.num_layers,
            vocabulary_size=self._vocabulary_size,
            tokenizer_vocabulary_size=int(backbone.tokenizer.vocabulary_size),
            pad_id=self._pad_id,
            opset=opset,
            files={name: file_sha256(directory / name) for name in files},
            source={**self.source, "lora_rank": backbone.lora_rank},
            versions=_versions(),
            verification=verification,
            quantization=quantization,
            optimization=optimization,
        )
