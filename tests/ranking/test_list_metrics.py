import numpy as np
import pytest

from marc_keras.ranking.list_metrics import list_metrics


def kar_evaluate_rerank(labels, preds, scope_number):
    """KAR's `RS/utils.py` evaluate_rerank (is_rank=True), transcribed line by line."""
    ndcg, map_, clicks = ([[] for _ in scope_number] for _ in range(3))
    for label, pred in zip(labels, preds):
        final = sorted(range(len(pred)), key=lambda k: pred[k], reverse=True)
        click = np.array(label)[final].tolist()
        gold = sorted(range(len(label)), key=lambda k: label[k], reverse=True)
        for i, scope in enumerate(scope_number):
            ideal_dcg, dcg, ap_value, ap_count = 0, 0, 0, 0
            cur_scope = min(scope, len(label))
            for _i, _g, _f in zip(range(1, cur_scope + 1), gold[:cur_scope], final[:cur_scope]):
                dcg += (pow(2, click[_i - 1]) - 1) / (np.log2(_i + 1))
                ideal_dcg += (pow(2, label[_g]) - 1) / (np.log2(_i + 1))
                if click[_i - 1] >= 1:
                    ap_count += 1
                    ap_value += ap_count / _i
            ndcg[i].append(float(dcg) / ideal_dcg if ideal_dcg != 0 else 0.0)
            map_[i].append(float(ap_value) / ap_count if ap_count != 0 else 0.0)
            clicks[i].append(sum(click[:cur_scope]))
    return np.mean(map_, axis=-1), np.mean(ndcg, axis=-1), np.mean(clicks, axis=-1)


def test_a_hand_computed_list():
    # Ranked by score: labels 0, 1, 1, 0. Hits at ranks 2 and 3.
    result = list_metrics([[1, 0, 0, 1]], [[0.4, 0.9, 0.1, 0.6]], cutoffs=(1, 2, 3, 4))
    # KAR's MAP@3: (1/2 + 2/3) / 2 hits in the top 3.
    assert result["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["map@2"] == pytest.approx(1 / 2)  # one hit in the top 2: precision 1/2
    assert result["map@1"] == 0.0
    dcg3 = 1 / np.log2(3) + 1 / np.log2(4)
    assert result["ndcg@3"] == pytest.approx(dcg3 / (1 + 1 / np.log2(3)))
    assert result["clicks@3"] == 2.0 and result["clicks@1"] == 0.0


@pytest.mark.parametrize("graded", [False, True])
def test_equals_kar_code_on_random_lists_with_ties(graded):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4 if graded else 2, (300, 10))
    labels[:20] = 0  # lists without a positive count 0
    scores = rng.integers(0, 5, (300, 10)).astype(float)  # many ties: list order breaks them
    cutoffs = (1, 3, 5, 7, 12)
    maps, ndcgs, clicks = kar_evaluate_rerank(labels.tolist(), scores.tolist(), cutoffs)
    result = list_metrics(labels, scores, cutoffs)
    for i, k in enumerate(cutoffs):
        assert result[f"map@{k}"] == pytest.approx(maps[i], abs=1e-12)
        assert result[f"ndcg@{k}"] == pytest.approx(ndcgs[i], abs=1e-12)
        assert result[f"clicks@{k}"] == pytest.approx(clicks[i], abs=1e-12)


def test_ndcg_equals_keras_rs_and_map_is_kars_not_keras_rs():
    import keras_rs

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (50, 10)).astype("float32")
    labels[:, 0] = 1  # every list has a positive (keras-rs and KAR differ on empty lists)
    scores = rng.normal(size=(50, 10)).astype("float32")  # no ties
    ours = list_metrics(labels, scores, cutoffs=(5,))
    ndcg = keras_rs.metrics.NDCG(k=5)
    ndcg.update_state(labels, scores)
    assert float(ndcg.result()) == pytest.approx(ours["ndcg@5"], abs=1e-5)
    # keras-rs divides by the list's positives, KAR by the hits in the top k.
    mean_ap = keras_rs.metrics.MeanAveragePrecision(k=5)
    mean_ap.update_state(labels, scores)
    assert float(mean_ap.result()) < ours["map@5"] - 0.05


def test_bad_shapes_and_cutoffs_are_errors():
    with pytest.raises(ValueError, match="one shape"):
        list_metrics(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="cutoffs must be positive"):
        list_metrics(np.zeros((2, 3)), np.zeros((2, 3)), cutoffs=(0,))
