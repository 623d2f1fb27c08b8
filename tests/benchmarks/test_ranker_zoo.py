"""benchmarks/ranker_zoo.py refuses rows from runs it cannot pair with its own, and names
each row's runs."""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pytest

from marc_keras.config import DownstreamConfig, RunConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from ranker_zoo import ROWS, _other_run_rows, _row_sources


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
