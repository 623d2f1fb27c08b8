"""benchmarks/ranker_zoo.py refuses rows from runs it cannot pair with its own, and names
each row's runs, and pairs two rows by seed."""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pytest

from marc_keras.config import DownstreamConfig, RunConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from ranker_zoo import ROWS, _other_run_rows, _row_pair, _row_sources, row_pair_deltas


def _run_dir(path, config):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    return path


def _args(run_dir, cross_fit_runs, rows=ROWS, mrl_runs=None):
    return argparse.Namespace(
        run_dir=run_dir, mrl_runs=mrl_runs, cross_fit_runs=cross_fit_runs, rows=list(rows)
    )


def test_a_run_of_other_data_is_refused_by_name(tmp_path):
    config = RunConfig()
    main = _run_dir(tmp_path / "main", config)
    other = _run_dir(
        tmp_path / "other",
        dataclasses.replace(config, data=dataclasses.replace(config.data, seed=7)),
    )
    with pytest.raises(SystemExit, match=r"--cross-fit-runs: .*other has other \[data\] settings"):
        _other_run_rows(_args(main, [other]), DownstreamConfig())


def test_rows_not_asked_for_read_no_run(tmp_path):
    main = _run_dir(tmp_path / "main", RunConfig())
    missing = tmp_path / "never-trained"
    assert _other_run_rows(_args(main, [missing], rows=("marc-o",)), DownstreamConfig()) == {}
    assert _other_run_rows(_args(main, None), DownstreamConfig()) == {}


def test_either_mrl_row_reads_the_mrl_runs_and_other_rows_do_not(tmp_path):
    main = _run_dir(tmp_path / "main", RunConfig())
    other = _run_dir(
        tmp_path / "other",
        dataclasses.replace(RunConfig(), data=dataclasses.replace(RunConfig().data, seed=7)),
    )
    for row in ("mrl", "mrl-cross-fit"):
        with pytest.raises(SystemExit, match=r"--mrl-runs: .*other has other \[data\]"):
            _other_run_rows(_args(main, None, rows=(row,), mrl_runs=[other]), DownstreamConfig())
    asked = _args(main, None, rows=("marc-c-cross-fit",), mrl_runs=[other])
    assert _other_run_rows(asked, DownstreamConfig()) == {}


def test_row_sources_name_each_rows_runs_and_split_rankers_only_where_they_differ():
    def row(ranker, name, runs):
        return {"ranker": ranker, "name": name, "runs": runs}

    rows = [
        row("dcnv2", "dcnv2", ["runs/a"]),
        row("dcnv2", "lr-2", ["runs/a"]),
        row("dcnv2", "marc-c-cross-fit", ["runs/s0", "runs/s1"]),
        row("dcnv2", "frozen", ["runs/a"]),
        row("xdeepfm", "frozen", ["runs/b"]),
        row("xdeepfm", "mrl", ["runs/m"]),
    ]
    assert _row_sources(rows) == (
        "frozen from `runs/a` (dcnv2) and `runs/b` (xdeepfm); mrl from `runs/m`; "
        "marc-c-cross-fit from `runs/s0`, `runs/s1`"
    )


def test_row_pairs_are_paired_by_seed_over_the_seeds_both_rows_have():
    rows = [
        {"ranker": "din", "name": "mrl", "seeds": [0, 1, 2], "aucs": [0.70, 0.71, 0.72]},
        # Seeds in another order, one missing: seed i pairs with seed i only.
        {"ranker": "din", "name": "pca-128", "seeds": [2, 0], "aucs": [0.715, 0.69]},
        {"ranker": "dcnv2", "name": "mrl", "seeds": [0], "aucs": [0.8]},
    ]
    found = row_pair_deltas(rows, "mrl", "pca-128")
    # Seed 0: 0.70 - 0.69 = 0.010; seed 2: 0.72 - 0.715 = 0.005.
    assert list(found) == ["din"]
    assert found["din"]["seeds"] == [0, 2]
    assert found["din"]["paired_delta_mean"] == pytest.approx(0.0075)
    assert found["din"]["paired_delta_std"] == pytest.approx(0.005 / 2**0.5)
    assert row_pair_deltas(rows, "mrl", "frozen") == {}


def test_a_row_pair_names_two_table_rows():
    assert _row_pair("marc-c-cross-fit:mrl-cross-fit") == ("marc-c-cross-fit", "mrl-cross-fit")
    for text in ("marc-c", "marc-c:bogus", "frozen-mrl"):
        with pytest.raises(argparse.ArgumentTypeError, match="FIRST:SECOND with both among"):
            _row_pair(text)
