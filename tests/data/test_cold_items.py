import pytest

from marc_keras.data.cold_items import ColdItems


@pytest.fixture(scope="module")
def split(first_users_split):
    return first_users_split(150)[0]


def test_a_seeded_share_of_the_items_with_interactions_in_two_halves(split):
    cold = ColdItems.draw(split, 0.2, seed=3)
    seen = set(split.samples["train"].item_id) | set(split.samples["test"].item_id)
    seen |= set(split.samples["validation"].item_id)
    for items, _ in split.text_halves.values():
        seen |= set(items)
    assert cold.all <= seen
    assert len(cold.all) == round(0.2 * len(seen))
    assert not cold.validation & cold.test and abs(len(cold.validation) - len(cold.test)) <= 1
    assert cold == ColdItems.draw(split, 0.2, seed=3)
    assert cold.all != ColdItems.draw(split, 0.2, seed=4).all
    assert cold.of("train") == frozenset() and cold.of("test") == cold.test


def test_holding_out_removes_cold_items_from_training_samples_only(split):
    cold = ColdItems.draw(split, 0.2, seed=0)
    held = split.holding_out(cold)
    assert held.cold_items is cold and split.cold_items is None
    assert not set(held.samples["train"].item_id) & cold.all
    removed = split.samples["train"].item_id.isin(cold.all).sum()
    assert removed > 0 and len(held.samples["train"]) == len(split.samples["train"]) - removed
    for name in ("validation", "test"):
        assert held.samples[name] is split.samples[name]
    assert held.user_texts is split.user_texts


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, True])
def test_a_share_outside_zero_one_is_named(split, share):
    with pytest.raises(ValueError, match="evaluate.cold_item_share"):
        ColdItems.draw(split, share)


def test_a_share_too_small_for_two_cold_items_says_so(split):
    with pytest.raises(ValueError, match="at least 2"):
        ColdItems.draw(split, 1e-5)
