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


def test_stage_rows_print_each_seeds_fold_epochs_and_flat_epochs_as_they_are():
    from marc_keras.utils.markdown_tables import stage_markdown

    rerank = {
        "name": "frozen",
        "split": "cold",
        "map@5s": [0.40, 0.42],
        "map@5_mean": 0.41,
        "map@5_std": 0.0141,
        "epochs": [[3, 5], [2, 2]],
        "wall_s": 12.0,
    }
    retrieval = {**rerank, "name": "base", "split": "warm", "epochs": [4, 6]}
    table = stage_markdown([rerank, retrieval], ["map@5"], [], "prm")
    assert "| cold | frozen | 0.4100 +- 0.0141 | 3+5/2+2 | 12 |" in table
    assert "| warm | base | 0.4100 +- 0.0141 | 4/6 | 12 |" in table
