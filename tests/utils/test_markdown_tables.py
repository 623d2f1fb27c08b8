from marc_keras.utils.markdown_tables import downstream_markdown


def _row(aucs, deltas, lift):
    count = len(aucs)
    return {
        "tier": "kar",
        "name": "marc-c",
        "aucs": aucs,
        "auc_mean": sum(aucs) / count,
        "auc_std": 0.001 if count > 1 else 0.0,
        "logloss_mean": 0.55,
        "logloss_std": 0.002 if count > 1 else 0.0,
        "paired_delta_mean": sum(deltas) / count,
        "paired_delta_std": 0.0005 if count > 1 else 0.0,
        "lift": lift,
        "relaimpr": 0.01,
        "epochs": [2] * count,
        "seconds": 3.0,
    }


def test_one_seed_prints_no_spread_and_calls_nothing_a_lift():
    table = downstream_markdown([_row([0.7537], [0.0011], False)])
    assert "| 0.7537 +- n/a | +0.0011 +- n/a | n/a (1 seed) | 0.5500 +- n/a |" in table
    assert "0.0000" not in table


def test_several_seeds_print_mean_and_std_and_the_lift():
    table = downstream_markdown([_row([0.75, 0.76], [0.002, 0.004], True)])
    assert "| 0.7550 +- 0.0010 | +0.0030 +- 0.0005 | yes | 0.5500 +- 0.0020 |" in table
