import numpy as np
import pytest
from helpers import run_layer_test

import marc_keras  # noqa: F401  (selects the torch backend before keras loads)
import keras
from marc_keras.layers.item_id_index import ItemIdIndex


def test_cold_items_go_to_the_shared_row_and_warm_items_keep_theirs():
    index = ItemIdIndex(num_items=6)
    items = np.array([[1, 2], [3, 5]])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(index(items)), items)
    index.set_cold([2, 5])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(index(items)), [[1, 0], [3, 0]])
    index.set_cold(None)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(index(items)), items)


def test_id_dropout_acts_in_training_only_at_about_its_rate():
    index = ItemIdIndex(num_items=10, item_id_dropout=0.3)
    items = np.tile(np.arange(1, 10), 2000)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(index(items)), items)
    dropped = keras.ops.convert_to_numpy(index(items, training=True))
    assert set(np.unique(dropped[dropped != items])) == {0}
    assert abs((dropped == 0).mean() - 0.3) < 0.02


def test_layer_checks():
    run_layer_test(
        ItemIdIndex,
        dict(num_items=7, item_id_dropout=0.5),
        np.array([[1, 6], [0, 3]], "int32"),
        expected_output_shape=(2, 2),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=1,
        run_mixed_precision_test=False,
    )


def test_a_dropout_outside_zero_one_is_named():
    with pytest.raises(ValueError, match="item_id_dropout"):
        ItemIdIndex(num_items=3, item_id_dropout=1.0)
