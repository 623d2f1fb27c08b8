import numpy as np
import pytest

from marc_keras.generative.title_trie import TitleTrie

EOS = 2


def _walk(trie, tokens):
    node = trie.root
    for token in tokens:
        node = trie.child(node, token)
    return node


def test_duplicates_share_one_leaf_that_lists_every_index():
    trie = TitleTrie([[5, 7], [5], [5, 7], [9]], eos_id=EOS)
    long_leaf = _walk(trie, [5, 7, EOS])
    assert trie.titles_at(long_leaf) == (0, 2)
    assert trie.titles_at(_walk(trie, [5, EOS])) == (1,)
    assert trie.titles_at(_walk(trie, [9, EOS])) == (3,)
    assert trie.is_leaf(long_leaf)
    assert not trie.is_leaf(_walk(trie, [5, 7]))
    assert trie.titles_at(_walk(trie, [5])) == ()
    assert trie.tokens_at(long_leaf) == [5, 7, EOS]
    assert sorted(trie.leaves().tolist()) == sorted(
        [long_leaf, _walk(trie, [5, EOS]), _walk(trie, [9, EOS])]
    )
    assert trie.sequence_count == 4
    assert trie.depth == 3
    # root, 5, 5-7, 5-7-eos, 5-eos, 9, 9-eos
    assert len(trie) == 7


def test_allowed_tokens_are_the_sorted_continuations():
    trie = TitleTrie([[5, 7], [5], [5, 3, 1], [4]], eos_id=EOS)
    assert trie.allowed(trie.root).tolist() == [4, 5]
    # "5" is a title and a prefix: eos and the longer titles' tokens follow it.
    assert trie.allowed(_walk(trie, [5])).tolist() == [EOS, 3, 7]
    assert trie.allowed(_walk(trie, [5, 3])).tolist() == [1]
    assert trie.allowed(_walk(trie, [5, 7, EOS])).tolist() == []
    with pytest.raises(ValueError, match=r"Token 9 does not continue.*allowed tokens: \[1\]"):
        trie.child(_walk(trie, [5, 3]), 9)


def test_csr_arrays_agree_with_the_per_node_lookups_and_are_read_only():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(3, 12, size=rng.integers(1, 6)).tolist() for _ in range(60)]
    trie = TitleTrie(sequences, eos_id=EOS)
    for node in range(len(trie)):
        start, stop = trie.edge_offsets[node], trie.edge_offsets[node + 1]
        np.testing.assert_array_equal(trie.edge_tokens[start:stop], trie.allowed(node))
        for token, child in zip(trie.edge_tokens[start:stop], trie.edge_children[start:stop]):
            assert trie.child(node, token) == child
    for index, sequence in enumerate(sequences):
        assert index in trie.titles_at(_walk(trie, [*sequence, EOS]))
    with pytest.raises(ValueError, match="read-only"):
        trie.edge_tokens[0] = 3


def test_longest_remaining_counts_tokens_to_the_deepest_leaf_below():
    trie = TitleTrie([[5, 7], [5], [5, 3, 1], [4]], eos_id=EOS)
    # By hand: below "5" the longest title is 5-3-1-eos, three more tokens.
    expected = {(): 4, (5,): 3, (5, 3): 2, (5, 3, 1): 1, (5, 7): 1, (4,): 1, (5, EOS): 0}
    for prefix, remaining in expected.items():
        assert trie.longest_remaining[_walk(trie, prefix)] == remaining, prefix
    assert trie.longest_remaining[trie.root] == trie.depth
    assert (trie.longest_remaining[trie.leaves()] == 0).all()
    assert not trie.longest_remaining.flags.writeable


def test_contains_accepts_exactly_whole_titles_followed_by_eos():
    trie = TitleTrie([[5, 7], [5], [4, 4, 4]], eos_id=EOS)
    assert trie.contains([5, 7, EOS])
    assert trie.contains(np.array([5, EOS]))
    assert trie.contains([4, 4, 4, EOS])
    assert not trie.contains([5, 7])  # no eos
    assert not trie.contains([4, 4, EOS])  # a prefix closed early
    assert not trie.contains([5, 7, EOS, EOS])  # something after eos
    assert not trie.contains([6, EOS])  # unknown token
    assert not trie.contains([])


def test_numpy_integer_tokens_are_accepted():
    trie = TitleTrie([np.array([5, 7]), [np.int32(5)]], eos_id=np.int64(EOS))
    assert trie.eos_id == EOS
    assert trie.titles_at(_walk(trie, [5, 7, EOS])) == (0,)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="at least one title"):
        TitleTrie([], eos_id=EOS)
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        TitleTrie([[5], []], eos_id=EOS)
    with pytest.raises(ValueError, match="sequence 2 contains eos_id 2 at position 1"):
        TitleTrie([[5], [6], [7, EOS, 8]], eos_id=EOS)
    with pytest.raises(ValueError, match="non-negative; sequence 0 has -1"):
        TitleTrie([[-1]], eos_id=EOS)
    with pytest.raises(ValueError, match="integers; sequence 1 has 3.0"):
        TitleTrie([[5], [3.0]], eos_id=EOS)
    with pytest.raises(ValueError, match="boolean"):
        TitleTrie([[True]], eos_id=EOS)
    with pytest.raises(ValueError, match="eos_id"):
        TitleTrie([[5]], eos_id=-1)
    trie = TitleTrie([[5]], eos_id=EOS)
    with pytest.raises(ValueError, match="Node 3 is not in this trie; node ids run from 0 to 2"):
        trie.allowed(3)
