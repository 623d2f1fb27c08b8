"""`marc-keras`: train MARC and inspect datasets from the shell.

The CLI only parses options and calls library functions; library imports are
deferred so that `--help` answers at once (keras-hub pulls in TensorFlow).
"""

import functools
import json
import sys
import traceback

import click


def _report_errors(command):
    """Turns any exception into one line on stderr and exit code 1 (traceback with --verbose)."""

    @functools.wraps(command)
    def wrapper(*args, verbose=False, **kwargs):
        try:
            return command(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted; run the same command again to resume.", err=True)
            sys.exit(130)
        except Exception as error:
            if verbose:
                traceback.print_exc()
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)

    return click.option("--verbose", is_flag=True, help="Show the full traceback on errors.")(wrapper)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    """Compact LLM user and item vectors for recommenders (MARC).

    MARC LoRA-tunes a language model, compresses its pooled text vectors with
    a separate compression network, trains a user-item matching network on
    click labels, and ties the two spaces with an HSIC term.

    Start with `marc-keras fit --config configs/demo.toml --run-dir runs/demo`.
    """


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML or JSON run config; defaults apply to keys it omits.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override one setting, e.g. --set training.epochs=2 (repeatable).")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False), help="Where the run writes its config, checkpoints, model and metrics. Re-running the same command resumes it.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="MovieLens-1M directory (overrides data.data_dir and MARC_KERAS_ML1M_DIR).")
@_report_errors
def fit(config_path, overrides, run_dir, data_dir):
    """Train MARC and save the model and its frozen encoder.

    Samples CTR pairs from the KAR split of the data, tokenizes them once,
    trains with AdamW, checks validation users after every epoch, and writes
    model.keras, encoder.keras, lora.lora.h5, history.csv and metrics.json
    into RUN_DIR. An interrupted run resumes from its last finished epoch.
    """
    from marc_keras.marc_run import MARCRun
    from marc_keras.run_config import RunConfig

    if data_dir:
        overrides = (*overrides, f'data.data_dir="{data_dir}"')
    config = RunConfig.from_file(config_path, overrides)
    metrics = MARCRun.open(run_dir, config).fit(log=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(metrics, indent=2))


@main.command()
@click.option("--run-dir", "run_dirs", required=True, multiple=True, type=click.Path(file_okay=False, exists=True), help="A finished `fit` run. Repeat it for runs trained with different seeds: downstream seed i then uses run i's vectors.")
@click.option("--set", "overrides", multiple=True, metavar="evaluate.KEY=VALUE", help="Override a downstream setting, e.g. --set evaluate.seeds=[0,1,2] (repeatable).")
@_report_errors
def evaluate(run_dirs, overrides):
    """Measure how much the vectors help a downstream DCNv2 ranker.

    Encodes every user and item with the trained MARC (MARC-C, MARC-O) and
    with the frozen backbone, then trains DCNv2 per representation and seed
    with early stopping on validation users, and reports test-user AUC and
    logloss as mean +- std, with RelaImpr against DCNv2 alone. Rows: dcnv2,
    frozen, pca-128, marc-o, marc-c. Writes evaluate.json and evaluate.md
    into the first run directory.
    """
    from pathlib import Path

    from marc_keras.marc_run import CONFIG_FILE, MARCRun, evaluate_runs
    from marc_keras.run_config import RunConfig

    runs = []
    for run_dir in run_dirs:
        config = RunConfig.from_file(Path(run_dir) / CONFIG_FILE, overrides)
        runs.append(MARCRun(run_dir, config))
    rows = evaluate_runs(runs, log=lambda line: click.echo(line, err=True))
    from marc_keras.evaluation import DownstreamEvaluator

    click.echo(DownstreamEvaluator.to_markdown(rows))


@main.group()
def data():
    """Download or describe a dataset."""


@data.command()
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where to put ml-1m/ (default ~/.cache/marc-keras, or MARC_KERAS_CACHE).")
@_report_errors
def download(cache_dir):
    """Download MovieLens-1M from GroupLens and verify its checksum."""
    from marc_keras.data import MovieLens

    click.echo(str(MovieLens.download(cache_dir)))


@data.command()
@click.option("--data-dir", type=click.Path(file_okay=False), help="MovieLens-1M directory (default: MARC_KERAS_ML1M_DIR or the download cache).")
@_report_errors
def describe(data_dir):
    """Count users, items and interactions of MovieLens-1M."""
    from marc_keras.data import MovieLens

    click.echo(json.dumps(MovieLens.load(data_dir).describe(), indent=2))
