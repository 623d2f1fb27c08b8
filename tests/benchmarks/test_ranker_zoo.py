"""benchmarks/ranker_zoo.py refuses rows from runs it cannot pair with its own."""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pytest

from marc_keras.config import DownstreamConfig, RunConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from ranker_zoo import ROWS, _other_run_rows


def _run_dir(path, config):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    return path


def _args(run_dir, cross_fit_runs, rows=ROWS):
    return argparse.Namespace(
        run_dir=run_dir, mrl_runs=None, cross_fit_runs=cross_fit_runs, rows=list(rows)
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
