import re

import numpy as np
import pytest

from marc_keras.generative.latent_decoder import LatentDecoder, squared_distances

# Six memory entries over a catalogue of four items; item 2 is never a label.
HAND_STATES = np.array([[0, 0], [2, 0], [0, 3], [1, 1], [3, 3], [5, -1]], dtype="float32")
HAND_ITEMS = np.array([0, 0, 1, 3, 3, 3])
# Means per label, by hand: item 0 = ([0, 0] + [2, 0]) / 2, item 1 = [0, 3],
# item 3 = ([1, 1] + [3, 3] + [5, -1]) / 3.
HAND_VECTORS = {0: [1.0, 0.0], 1: [0.0, 3.0], 3: [3.0, 1.0]}


def _random_memory(entries=200, items=30, dim=8, cold=(3, 17, 29), seed=0):
    """A random memory whose labels avoid the `cold` items."""
    rng = np.random.default_rng(seed)
    labelled = np.setdiff1d(np.arange(items), cold)
    memory_items = rng.choice(labelled, entries)
    assert set(memory_items) == set(labelled)  # every other item is seen
    states = rng.normal(size=(entries, dim)).astype("float32")
    users = rng.normal(size=(12, dim)).astype("float32")
    return states, memory_items, users


def _distinct_order(distances):
    """Argsort of distances whose neighbours are far apart (so float error cannot swap them)."""
    order = np.argsort(distances, kind="stable")
    assert (np.diff(np.asarray(distances)[order]) > 1e-5).all()
    return order


def _reference_global(states, items, item_count, user):
    """L2D-G by loops: per-item mean, Euclidean norm, nearest first; cold items last."""
    seen = [item for item in range(item_count) if (items == item).any()]
    means = {item: states[items == item].astype("float64").mean(axis=0) for item in seen}
    distances = [np.linalg.norm(user.astype("float64") - means[item]) for item in seen]
    cold = [item for item in range(item_count) if item not in means]
    return [seen[index] for index in _distinct_order(distances)] + cold


def _reference_local(states, items, item_count, user, local_size):
    """L2D-L by loops: the M nearest entries, per-item means among them, then L2D-G, then cold."""
    user64 = user.astype("float64")
    entry_distances = np.array(
        [np.linalg.norm(user64 - state.astype("float64")) for state in states]
    )
    order = np.argsort(entry_distances, kind="stable")
    if local_size < len(states):  # the M-th and (M+1)-th entries are clearly apart
        assert entry_distances[order[local_size]] - entry_distances[order[local_size - 1]] > 1e-5
    nearest = order[:local_size]
    local_items = sorted(set(items[nearest].tolist()))
    local_distances = []
    for item in local_items:
        chosen = [entry for entry in nearest if items[entry] == item]
        mean = states[chosen].astype("float64").mean(axis=0)
        local_distances.append(np.linalg.norm(user64 - mean))
    local_order = [local_items[index] for index in _distinct_order(local_distances)]
    global_order = _reference_global(states, items, item_count, user)
    cold = [item for item in range(item_count) if not (items == item).any()]
    rest = [item for item in global_order if item not in local_order and item not in cold]
    return local_order + rest + cold


def test_squared_distances_match_a_direct_formula():
    rng = np.random.default_rng(1)
    queries, keys = rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
    expected = np.array([[((q - k) ** 2).sum() for k in keys] for q in queries])
    got = squared_distances(queries.astype("float32"), keys.astype("float32"))
    assert got.dtype == np.float64 and got.shape == (5, 7)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Rounding never makes a distance negative, even between equal far-off vectors.
    far = rng.normal(size=(50, 3)) * 1e4
    assert (np.diag(squared_distances(far, far)) >= 0).all()


def test_item_vectors_are_the_mean_state_of_each_label():
    decoder = LatentDecoder(HAND_STATES, HAND_ITEMS, item_count=4)
    assert decoder.seen.tolist() == [True, True, False, True]
    assert decoder.seen_items.tolist() == [0, 1, 3]
    np.testing.assert_allclose(
        decoder.item_vectors, [HAND_VECTORS[item] for item in (0, 1, 3)], rtol=0, atol=1e-6
    )
    assert decoder.cold_rate([0, 2, 2, 3]) == 0.5
    assert decoder.cold_rate([1]) == 0.0
    assert decoder.cold_rate([2]) == 1.0


def test_global_ranking_by_hand():
    decoder = LatentDecoder(HAND_STATES, HAND_ITEMS, item_count=4)
    users = np.array([[3, 0], [0, 2], [2.2, 0.9]], dtype="float32")
    # [3, 0]: item 3 at 1, item 0 at 2, item 1 at sqrt(18); the cold item 2 last.
    # [0, 2]: item 1 at 1, item 0 at sqrt(5), item 3 at sqrt(10).
    # [2.2, 0.9]: item 3 at 0.81, item 0 at 1.5, item 1 at 3.04.
    expected = [[3, 0, 1, 2], [1, 0, 3, 2], [3, 0, 1, 2]]
    ranked = decoder.rank(users, top_k=4)
    assert ranked.dtype == np.int64
    assert ranked.tolist() == expected
    assert decoder.rank(users, top_k=2).tolist() == [row[:2] for row in expected]
    # top_k beyond the catalogue is the whole catalogue.
    assert decoder.rank(users, top_k=10).tolist() == expected


def test_local_ranking_by_hand():
    decoder = LatentDecoder(HAND_STATES, HAND_ITEMS, item_count=4)
    user = np.array([[2.2, 0.9]], dtype="float32")
    # The nearest entry is [2, 0] (item 0, at 0.92), so L2D-L with M = 1 puts
    # item 0 first although L2D-G ranks item 3 first; the rest follow L2D-G.
    assert decoder.rank(user, top_k=4, local_size=1).tolist() == [[0, 3, 1, 2]]
    # M = 3 adds [1, 1] (item 3) and [3, 3] (item 3): item 3's local mean is
    # [2, 2], at 1.118 > 0.92.
    assert decoder.rank(user, top_k=4, local_size=3).tolist() == [[0, 3, 1, 2]]
    # The whole memory is L2D-G.
    for local_size in (6, 100):
        assert decoder.rank(user, top_k=4, local_size=local_size).tolist() == [[3, 0, 1, 2]]


def test_global_ranking_equals_a_loop_over_items():
    states, items, users = _random_memory()
    decoder = LatentDecoder(states, items, item_count=30)
    assert decoder.seen.sum() == 27
    expected = np.array([_reference_global(states, items, 30, user) for user in users])
    assert expected[:, -3:].tolist() == [[3, 17, 29]] * len(users)  # cold, catalogue order
    np.testing.assert_array_equal(decoder.rank(users, top_k=30), expected)
    np.testing.assert_array_equal(decoder.rank(users, top_k=7), expected[:, :7])


@pytest.mark.parametrize("local_size", [200, 201, 5000])
def test_local_ranking_over_the_whole_memory_is_the_global_ranking(local_size):
    states, items, users = _random_memory()
    decoder = LatentDecoder(states, items, item_count=30)
    np.testing.assert_array_equal(
        decoder.rank(users, top_k=30, local_size=local_size), decoder.rank(users, top_k=30)
    )


@pytest.mark.parametrize("local_size", [1, 4, 16, 64])
def test_local_ranking_equals_a_loop_reference(local_size):
    states, items, users = _random_memory()
    decoder = LatentDecoder(states, items, item_count=30)
    expected = np.array([_reference_local(states, items, 30, user, local_size) for user in users])
    np.testing.assert_array_equal(decoder.rank(users, top_k=30, local_size=local_size), expected)
    np.testing.assert_array_equal(
        decoder.rank(users, top_k=10, local_size=local_size), expected[:, :10]
    )
    if local_size == 4:
        # The local order really differs from L2D-G for some user.
        assert (expected != decoder.rank(users, top_k=30)).any()


def _encode(rows):
    rows = np.asarray(rows, "float64")
    return np.stack([rows, rows**2, np.sin(rows)], axis=1)


def test_build_memory_writes_what_encode_returns_and_load_reads_it(tmp_path):
    items = np.array([4, 0, 1, 1, 3, 0, 2, 4, 4, 1])
    seen_rows = []

    def encode(rows):
        seen_rows.append(rows.tolist())
        return _encode(rows)

    lines = []
    directory = LatentDecoder.build_memory(encode, 10, items, tmp_path / "m", 4, lines.append)
    assert directory == tmp_path / "m"
    assert seen_rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    states = np.load(directory / "memory-states.npy")
    assert states.dtype == np.float32
    np.testing.assert_array_equal(states, _encode(np.arange(10)).astype("float32"))
    np.testing.assert_array_equal(np.load(directory / "memory-items.npy"), items)
    assert np.load(directory / "memory-items.npy").dtype == np.int64
    assert sorted(path.name for path in directory.iterdir()) == [
        "memory-items.npy",
        "memory-states.npy",
    ]
    assert lines[-1].startswith("10/10 memory samples (100%)")

    loaded = LatentDecoder.load(directory, item_count=5)
    direct = LatentDecoder(_encode(np.arange(10)), items, item_count=5)
    np.testing.assert_array_equal(loaded.states, direct.states)
    np.testing.assert_array_equal(loaded.items, direct.items)
    np.testing.assert_allclose(loaded.item_vectors, direct.item_vectors, rtol=1e-6)
    # A built memory is not built again.
    LatentDecoder.build_memory(encode, 10, items, directory, 4)
    assert len(seen_rows) == 3


def test_an_interrupted_build_resumes_from_its_chunks(tmp_path):
    items = np.arange(11) % 3
    calls = []

    def failing(rows):
        calls.append(rows.tolist())
        if len(calls) == 2:
            raise RuntimeError("killed")
        return _encode(rows)

    directory = tmp_path / "memory"
    with pytest.raises(RuntimeError, match="killed"):
        LatentDecoder.build_memory(failing, 11, items, directory, chunk_rows=4)
    assert sorted(path.name for path in (directory / "chunks").iterdir()) == ["000000000.npy"]
    assert not (directory / "memory-states.npy").exists()

    resumed_rows, lines = [], []

    def counting(rows):
        resumed_rows.append(rows.tolist())
        return _encode(rows)

    LatentDecoder.build_memory(counting, 11, items, directory, 4, lines.append)
    assert resumed_rows == [[4, 5, 6, 7], [8, 9, 10]]
    assert lines[0] == "resuming the memory: 1 of 3 chunks are built"
    assert not (directory / "chunks").exists()

    whole = LatentDecoder.build_memory(_encode, 11, items, tmp_path / "whole", chunk_rows=4)
    for name in ("memory-states.npy", "memory-items.npy"):
        np.testing.assert_array_equal(np.load(directory / name), np.load(whole / name))


def test_loading_a_missing_memory_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "memory-states.npy"
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{path}' does not exist")):
        LatentDecoder.load(tmp_path / "nowhere", item_count=3)


def test_bad_inputs_are_explained(tmp_path):
    states = np.zeros((3, 2), "float32")
    with pytest.raises(ValueError, match=r"states \(3, 2\) and \(2,\) items"):
        LatentDecoder(states, [0, 1], item_count=2)
    with pytest.raises(ValueError, match=r"states \(3,\)"):
        LatentDecoder(np.zeros(3), [0, 1, 1], item_count=2)
    with pytest.raises(ValueError, match="one item per state"):
        LatentDecoder(np.zeros((0, 2)), np.zeros(0, "int64"), item_count=2)
    with pytest.raises(ValueError, match=r"in \[0, 2\); got values from 0 to 2"):
        LatentDecoder(states, [0, 1, 2], item_count=2)
    with pytest.raises(ValueError, match=r"in \[0, 2\); got values from -1 to 1"):
        LatentDecoder(states, [-1, 1, 1], item_count=2)
    with pytest.raises(ValueError, match="catalogue indices"):
        LatentDecoder(states, [0.0, 1.0, 1.0], item_count=2)
    decoder = LatentDecoder(HAND_STATES, HAND_ITEMS, item_count=4)
    for local_size in (0, -3):
        with pytest.raises(ValueError, match=f"local_size \\(M\\) must be >= 1; got {local_size}"):
            decoder.rank(HAND_STATES[:1], top_k=2, local_size=local_size)
    with pytest.raises(ValueError, match="items has 2 entries for 3 memory rows"):
        LatentDecoder.build_memory(_encode, 3, [0, 1], tmp_path / "bad")
