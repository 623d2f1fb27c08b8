import numpy as np
import pytest

from marc_keras.utils.token_vector_cache import TokenVectorCache


def _tokens(rows, width):
    """Right-padded (N, width) token_ids / padding_mask of int rows."""
    token_ids = np.zeros((len(rows), width), "int32")
    padding_mask = np.zeros((len(rows), width), "int32")
    for index, row in enumerate(rows):
        token_ids[index, : len(row)] = row
        padding_mask[index, : len(row)] = 1
    return {"token_ids": token_ids, "padding_mask": padding_mask}


class CountingEncoder:
    """Vector of a row = [sum of its real tokens, its length]; records the rows it saw."""

    def __init__(self):
        self.seen = []

    def __call__(self, tokens):
        mask = tokens["padding_mask"]
        self.seen.append(len(mask))
        return np.stack([(tokens["token_ids"] * mask).sum(1), mask.sum(1)], axis=1)


def test_only_rows_not_stored_are_encoded_and_every_row_gets_its_own_vector(tmp_path):
    encoder = CountingEncoder()
    cache = TokenVectorCache(tmp_path / "cache.npz", 2)
    first = cache.vectors(_tokens([[1, 2], [3], [1, 2]], 4), encoder)
    np.testing.assert_array_equal(first, [[3, 2], [3, 1], [3, 2]])
    # The repeated text is encoded once.
    assert (cache.hits, cache.misses, encoder.seen) == (0, 2, [2])

    # Padded to another width, [3] is still the same text; [4, 5, 6] is new.
    second = cache.vectors(_tokens([[4, 5, 6], [3]], 6), encoder)
    np.testing.assert_array_equal(second, [[15, 3], [3, 1]])
    assert (cache.hits, cache.misses, encoder.seen) == (1, 3, [2, 1])


def test_a_new_cache_on_the_same_file_reads_what_an_earlier_one_stored(tmp_path):
    TokenVectorCache(tmp_path / "cache.npz", 2).vectors(
        _tokens([[7, 8], [9]], 3), CountingEncoder()
    )
    encoder = CountingEncoder()
    reopened = TokenVectorCache(tmp_path / "cache.npz", 2)
    vectors = reopened.vectors(_tokens([[9], [7, 8]], 2), encoder)
    np.testing.assert_array_equal(vectors, [[9, 1], [15, 2]])
    assert encoder.seen == [] and reopened.hits == 2
    assert not list(tmp_path.glob(".partial-*"))


def test_keys_ignore_padding_but_not_token_order():
    keys = TokenVectorCache.keys(
        np.array([[1, 2, 0, 0], [1, 2, 9, 9], [2, 1, 0, 0]]),
        np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]),
    )
    assert keys[0] == keys[1] != keys[2]


def test_a_file_of_another_width_names_itself_and_the_fix(tmp_path):
    TokenVectorCache(tmp_path / "cache.npz", 2).vectors(_tokens([[1]], 1), CountingEncoder())
    with pytest.raises(ValueError, match="cache.npz' holds vectors of width 2, not 384.*delete"):
        TokenVectorCache(tmp_path / "cache.npz", 384)
