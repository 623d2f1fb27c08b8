"""Fast text tokenization into the id / mask arrays a `LoRABackbone` reads."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tokenizers

TOKENIZER_FILE = "tokenizer.json"


class TextTokenizer:
    """Turns texts into padded `token_ids` and `padding_mask` arrays.

    A thin wrapper over a Hugging Face `tokenizers.Tokenizer` (Rust, no
    TensorFlow), loaded from the same checkpoint directory as the backbone so
    that ids and vocabulary always agree. Texts longer than `max_length`
    tokens are truncated (the special tokens are kept); `last_truncated`
    counts how many were in the latest call.

    Empty strings are allowed where the tokenizer adds special tokens (BERT
    gives `[CLS] [SEP]`); a text that yields no token at all is an error,
    because no pooling is defined over zero tokens.

    Args:
        tokenizer: a `tokenizers.Tokenizer`.
        max_length: maximum number of tokens per text, special tokens included.

    Example:
    >>> tokenizer = TextTokenizer.from_preset(minilm_path, max_length=64)
    >>> batch = tokenizer(["Toy Story (1995). Genres: Animation."])
    >>> batch["token_ids"].shape, batch["padding_mask"].dtype
    ((1, 14), dtype('int32'))
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer, max_length: int = 128) -> None:
        if int(max_length) < 2:
            raise ValueError(f"max_length must be at least 2; got {max_length}.")
        self.max_length = int(max_length)
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_length)
        self.pad_id = self._find_pad_id(tokenizer)
        self.last_truncated = 0

    @staticmethod
    def _find_pad_id(tokenizer):
        padding = json.loads(tokenizer.to_str()).get("padding") or {}
        if "pad_id" in padding:
            return int(padding["pad_id"])
        for token in ("[PAD]", "<pad>", "<|endoftext|>", "</s>"):
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return 0

    @classmethod
    def from_preset(cls, path: str | os.PathLike, max_length: int = 128) -> TextTokenizer:
        """Loads the tokenizer of a Hugging Face checkpoint directory.

        Args:
            path: directory holding `tokenizer.json`, or any tokenizer files
                that `transformers.AutoTokenizer` converts to a fast tokenizer.
            max_length: maximum tokens per text.

        Returns:
            A `TextTokenizer`.

        Raises:
            FileNotFoundError: `path` is not a directory.
            ValueError: no usable tokenizer files are in `path`.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"Tokenizer directory '{path}' does not exist; pass the "
                "checkpoint directory that holds tokenizer.json."
            )
        if (path / TOKENIZER_FILE).is_file():
            return cls(tokenizers.Tokenizer.from_file(str(path / TOKENIZER_FILE)), max_length)
        from transformers import AutoTokenizer

        try:
            hf_tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"No tokenizer could be loaded from '{path}': it has no "
                f"{TOKENIZER_FILE} and transformers could not read it ({error}). "
                "Add the checkpoint's tokenizer files."
            ) from error
        if not getattr(hf_tokenizer, "is_fast", False):
            raise ValueError(
                f"The tokenizer in '{path}' has no fast (Rust) version; save it "
                f"with a {TOKENIZER_FILE} file."
            )
        return cls(hf_tokenizer.backend_tokenizer, max_length)

    @classmethod
    def from_json(cls, text: str, max_length: int = 128) -> TextTokenizer:
        """Builds a tokenizer from the contents of a `tokenizer.json` file."""
        return cls(tokenizers.Tokenizer.from_str(text), max_length)

    @classmethod
    def from_vocabulary(cls, words: Iterable[str], max_length: int = 32) -> TextTokenizer:
        """A small lowercase BERT WordPiece tokenizer over `words`, for tests.

        Args:
            words: the vocabulary; `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` are
                put first (ids 0..3).
            max_length: maximum tokens per text.

        Returns:
            A `TextTokenizer` that frames every text as `[CLS] ... [SEP]`.
        """
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        vocabulary = {token: index for index, token in enumerate(special)}
        for word in words:
            vocabulary.setdefault(word, len(vocabulary))
        tokenizer = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocabulary, unk_token="[UNK]"))
        tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        return cls(tokenizer, max_length)

    @property
    def vocabulary_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary token (`None` if the tokenizer has no such token)."""
        return self._tokenizer.token_to_id(token)

    def encode_ids(self, texts: Iterable[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of each text, unpadded and not truncated.

        For texts that are joined after tokenization (a prompt and its
        answer): tokenizing them together would let merges cross the
        boundary.

        Args:
            texts: a list of `str`.
            add_special_tokens: frame each text with the tokenizer's special
                tokens (BOS, [CLS] ...); `False` for a continuation.

        Returns:
            One list of ids per text.
        """
        self._tokenizer.no_truncation()
        try:
            encodings = self._tokenizer.encode_batch(
                list(texts), add_special_tokens=add_special_tokens
            )
        finally:
            self._tokenizer.enable_truncation(self.max_length)
        return [encoding.ids for encoding in encodings]

    def to_json(self) -> str:
        """The tokenizer as `tokenizer.json` text (what `from_json` reads)."""
        return self._tokenizer.to_str()

    def fits(self, texts: Iterable[str]) -> np.ndarray:
        """Whether each text fits in `max_length` tokens (special tokens included).

        Args:
            texts: a list of `str`.

        Returns:
            A bool array, `False` where `__call__` would truncate the text.
        """
        encodings = self._tokenizer.encode_batch(list(texts))
        return np.array([not encoding.overflowing for encoding in encodings], dtype=bool)

    def __call__(
        self, texts: Iterable[str], pad_to_max_length: bool = False
    ) -> dict[str, np.ndarray]:
        """Tokenizes a batch of texts.

        Args:
            texts: a list (or array) of `str`.
            pad_to_max_length: pad every row to `max_length` (fixed shapes,
                for caching training data) instead of the longest text.

        Returns:
            A dict with `token_ids` and `padding_mask`, int32 arrays of shape
            (len(texts), length), padded on the right.

        Raises:
            TypeError: an element is not a string (its index is named).
            ValueError: `texts` is empty, or a text yields no token.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("Cannot tokenize an empty list of texts.")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"Text {index} is {type(text).__name__} ({text!r}), not str; "
                    "replace missing texts with a string (even an empty one)."
                )
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.array([len(encoding.ids) for encoding in encodings])
        empty = np.flatnonzero(lengths == 0)
        if empty.size:
            raise ValueError(
                f"Texts at indices {empty[:10].tolist()} produce no tokens with "
                "this tokenizer (it adds no special tokens); give them some text."
            )
        self.last_truncated = sum(bool(encoding.overflowing) for encoding in encodings)
        width = self.max_length if pad_to_max_length else int(lengths.max())
        token_ids = np.full((len(texts), width), self.pad_id, dtype="int32")
        padding_mask = np.zeros((len(texts), width), dtype="int32")
        for row, encoding in enumerate(encodings):
            token_ids[row, : lengths[row]] = encoding.ids
            padding_mask[row, : lengths[row]] = 1
        return {"token_ids": token_ids, "padding_mask": padding_mask}
