"""BIGRec prompts and title targets as token arrays (BIGRec Sec. 3.1; L2D Sec. 3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from marc_keras.text_tokenizer import TextTokenizer

# Alpaca's template, as BIGRec fine-tunes and prompts with it.
PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
)
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "[SEP]")


def _end_of_text_id(tokenizer: TextTokenizer) -> int:
    for token in END_OF_TEXT_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise ValueError(
        f"The tokenizer has none of the end-of-text tokens {list(END_OF_TEXT_TOKENS)}; "
        "a generated title needs one to end. Use a causal LM checkpoint's tokenizer."
    )


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """The words of a BIGRec prompt (MovieLens defaults).

    Args:
        instruction: the task, after "### Instruction:".
        history_prefix: what precedes the quoted history titles in the
            input section.
    """

    instruction: str = (
        "Given a list of movies the user has watched before, please recommend a new movie "
        "that the user likes to the user."
    )
    history_prefix: str = "The user has watched the following movies before: "

    def render(self, history_titles: Sequence[str]) -> str:
        history = ", ".join(f'"{title}"' for title in history_titles)
        return (
            f"{PREAMBLE}### Instruction:\n{self.instruction}\n\n"
            f"### Input:\n{self.history_prefix}{history}\n\n### Response:\n"
        )


class TitlePrompts:
    """Turns histories into prompts and item titles into target token sequences.

    A prompt and its target (`"Title"` then end-of-text) are tokenized
    separately and joined: tokenized together, BPE could merge across the
    boundary, so the first title token would differ from what decoding
    starts from and the last prompt position (L2D's user vector) would
    shift. Items whose titles are equal share one target sequence: a
    decoded title stands for the set of those items.

    Args:
        tokenizer: the causal LM's `TextTokenizer`; its `max_length` bounds
            prompt plus target.
        titles: item id -> title, the whole catalogue (ranking runs over
            all of it).
        template: a `PromptTemplate`.

    Example:
    >>> prompts = TitlePrompts(tokenizer, dict(zip(items.item_id, items.title)))
    >>> arrays = prompts.training_arrays([("1", "2")], ["3"])
    >>> sorted(arrays)
    ['padding_mask', 'target_ids', 'target_mask', 'target_positions', 'token_ids']
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        titles: Mapping[str, str],
        template: PromptTemplate | None = None,
    ) -> None:
        if not titles:
            raise ValueError("titles is empty; pass item id -> title for the whole catalogue.")
        self.tokenizer = tokenizer
        self.template = template or PromptTemplate()
        self.eos_id = _end_of_text_id(tokenizer)
        self.item_ids = [str(item_id) for item_id in titles]
        self.item_index = {item_id: index for index, item_id in enumerate(self.item_ids)}
        self.titles = [str(titles[item_id]) for item_id in titles]
        self.title_texts = sorted(set(self.titles))
        group_of_title = {title: group for group, title in enumerate(self.title_texts)}
        # (items,) -> index of the item's distinct title
        self.item_group = np.array([group_of_title[title] for title in self.titles])
        self.group_items = [[] for _ in self.title_texts]
        for index, group in enumerate(self.item_group):
            self.group_items[group].append(index)
        self.title_sequences = tokenizer.encode_ids(
            [f'"{title}"' for title in self.title_texts], add_special_tokens=False
        )

    def title_of(self, item_id: str) -> str:
        return self.titles[self._index(item_id)]

    def _index(self, item_id):
        try:
            return self.item_index[str(item_id)]
        except KeyError:
            raise ValueError(
                f"Item '{item_id}' is not in the catalogue of {len(self.item_ids)} titled items; "
                "every history and target item needs a row (and a title) in the items table."
            ) from None

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Catalogue row of each item id."""
        return np.array([self._index(item_id) for item_id in item_ids], dtype="int64")

    def prompt_ids(self, histories: Sequence[Sequence[str]], room: int = 0) -> list[list[int]]:
        """Prompt token ids, dropping the oldest history titles until `room` tokens fit after.

        Args:
            histories: item ids per prompt, oldest first.
            room: tokens that must still fit in `max_length` after the prompt.

        Raises:
            ValueError: not even the newest title alone fits.
        """
        prompts = []
        for history in histories:
            titles = [self.title_of(item_id) for item_id in history]
            for start in range(len(titles) + 1):
                if start == len(titles) and titles:
                    raise ValueError(
                        f"A prompt with only the title '{titles[-1]}' needs more than "
                        f"max_length = {self.tokenizer.max_length} tokens (with {room} for the "
                        "answer); raise model.max_length."
                    )
                (ids,) = self.tokenizer.encode_ids([self.template.render(titles[start:])])
                if len(ids) + room <= self.tokenizer.max_length:
                    prompts.append(ids)
                    break
        return prompts

    def prompt_arrays(self, histories: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Right-padded prompts: `token_ids`, `padding_mask` int32 (N, T)."""
        return right_padded(self.prompt_ids(histories), self.tokenizer.pad_id)

    def target_ids(self, item_ids: Sequence[str]) -> list[list[int]]:
        """Each item's title tokens followed by end-of-text."""
        groups = self.item_group[self.item_indices(item_ids)]
        return [self.title_sequences[group] + [self.eos_id] for group in groups]

    def training_arrays(
        self, histories: Sequence[Sequence[str]], targets: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Prompt + target sequences with the positions that predict the target.

        Returns:
            `token_ids`, `padding_mask` int32 (N, T), right-padded;
            `target_positions`, `target_ids` int32 and `target_mask` float32
            (N, S): position t's output predicts `target_ids` at t + 1. The
            first target position is the last prompt token (L2D's state).
        """
        targets = self.target_ids(targets)
        longest = max(len(target) for target in targets)
        prompts = self.prompt_ids(histories, room=longest)
        sequences = [prompt + target for prompt, target in zip(prompts, targets)]
        arrays = right_padded(sequences, self.tokenizer.pad_id)
        target_positions = np.zeros((len(targets), longest), "int32")
        target_ids = np.full((len(targets), longest), self.tokenizer.pad_id, "int32")
        target_mask = np.zeros((len(targets), longest), "float32")
        for row, (prompt, target) in enumerate(zip(prompts, targets)):
            target_positions[row] = len(prompt) - 1 + np.minimum(np.arange(longest), len(target))
            target_ids[row, : len(target)] = target
            target_mask[row, : len(target)] = 1.0
        return {
            **arrays,
            "target_positions": target_positions,
            "target_ids": target_ids,
            "target_mask": target_mask,
        }


def right_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    width = max(len(sequence) for sequence in sequences)
    token_ids = np.full((len(sequences), width), pad_id, "int32")
    padding_mask = np.zeros((len(sequences), width), "int32")
    for row, sequence in enumerate(sequences):
        token_ids[row, : len(sequence)] = sequence
        padding_mask[row, : len(sequence)] = 1
    return {"token_ids": token_ids, "padding_mask": padding_mask}
