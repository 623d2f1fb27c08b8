"""The bad-input table (README "Bad input: what you see"), checked row by row.

Every bad input goes to the library and to the command line. The library
raises one exception whose one-line message names the file (and its line or
rows where there is one) and says how to fix it; the CLI prints that message as
one line `Error: ...` and exits with 1; nothing half-written is left behind
(a failed `fit` leaves at most its config.json, which a corrected command
replaces). Inputs that must work (empty and very long texts, a non-UTF-8 file
read with its encoding) are checked to work.
"""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from marc_keras.cli.main import main
from marc_keras.config import DataSection, DownstreamConfig, RunConfig
from marc_keras.experiments.marc_run import CONFIG_FILE, STARTED_MARKERS, MARCRun, load_dataset
from marc_keras.experiments.store_ranking import rank_with_stores
from marc_keras.export.embedding_store import METADATA_KEY, EmbeddingStore
from marc_keras.export.onnx_encoder import OnnxEncoder
from marc_keras.ranking.tfrs_ranker import read_store_vectors

INTERACTIONS = (
    "user_id,item_id,rating,timestamp\n"
    "u1,i1,5,100\nu1,i2,3,200\nu2,i1,4,150\nu2,i3,1,160\nu3,i2,2,50\n"
)
ITEMS = (
    "item_id,title,genres\n"
    "i1,Heat (1995),Action|Crime\ni2,Köln Story (2001),Drama\ni3,Toy Story (1995),Comedy\n"
)
USERS = "user_id,gender,age\nu1,female,25-34\nu2,male,35-44\nu3,female,18-24\n"
TEMPLATES = {
    "user_template": "{gender!c}, age {age}. Recently watched: {history}.",
    "history_item_template": "{title}, {stars}",
    "item_template": "{title}. Genres: {genres!l}.",
}


def one_line_error(result, exit_code=1):
    """The CLI's error line; fails unless it is the only line on stderr."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def partial_files(directory):
    return sorted(str(path) for path in directory.rglob("*") if path.name.startswith(".partial-"))


def write_data(directory, interactions=INTERACTIONS, items=ITEMS, users=USERS):
    """Writes the three CSV tables (text, or bytes written as they are)."""
    paths = {}
    for name, content in (("interactions", interactions), ("items", items), ("users", users)):
        paths[name] = directory / f"{name}.csv"
        if isinstance(content, bytes):
            paths[name].write_bytes(content)
        else:
            paths[name].write_text(content, encoding="utf-8")
    return paths


def data_section(paths, **settings):
    return {
        "dataset": "files",
        **{name: str(path) for name, path in paths.items()},
        "templates": TEMPLATES,
        **settings,
    }


def fit_cli(config_path, run_dir, *overrides):
    args = ["fit", "--config", str(config_path), "--run-dir", str(run_dir)]
    for override in overrides:
        args += ["--set", override]
    return CliRunner().invoke(main, args)


# ---------------------------------------------------------------------------
# Data files (data.dataset = "files"): library `load_dataset`, CLI `fit`.
# Each case: what to break -> (file named in the message, pattern).


def _replace(table, old, new):
    return {"interactions": INTERACTIONS, "items": ITEMS, "users": USERS}[table].replace(old, new)


DATA_CASES = {
    "missing file": (
        lambda d: {**write_data(d), "interactions": d / "nope.csv"},
        "nope.csv",
        r"The interactions file \S*nope\.csv does not exist",
    ),
    "empty file": (
        lambda d: write_data(d, items=""),
        "items.csv",
        r"items\.csv is empty: the items file needs a header line",
    ),
    "missing column": (
        lambda d: write_data(
            d,
            interactions="".join(
                line.rsplit(",", 1)[0] + "\n" for line in INTERACTIONS.splitlines()
            ),
        ),
        "interactions.csv",
        r"interactions\.csv: missing the columns \['timestamp'\]",
    ),
    "missing id column": (
        lambda d: write_data(d, items=_replace("items", "item_id,", "movie,")),
        "items.csv",
        r"items\.csv: missing the column 'item_id'",
    ),
    "non-numeric rating": (
        lambda d: write_data(d, interactions=_replace("interactions", "u1,i2,3,", "u1,i2,three,")),
        "interactions.csv",
        r"interactions\.csv: column 'rating' has 1 non-numeric values "
        r"\(rows 2, 1-based, header not counted; first: 'three'\)",
    ),
    "unknown item ids": (
        lambda d: write_data(d, interactions=_replace("interactions", "u2,i1,", "u2,i9,")),
        "interactions.csv",
        r"interactions\.csv: column 'item_id' refers to 1 ids that are not in \S*items\.csv "
        r"\(e\.g\. \['i9'\]; rows 3\)",
    ),
    "empty id": (
        lambda d: write_data(d, interactions=_replace("interactions", "u1,i2,", ",i2,")),
        "interactions.csv",
        r"interactions\.csv: column 'user_id' is empty in 1 rows \(rows 2,",
    ),
    "non-UTF-8 bytes": (
        lambda d: write_data(d, items=ITEMS.encode("latin-1")),
        "items.csv",
        r"items\.csv, line 3: byte 0xf6 \(byte 5 of the line\) is not valid utf-8 text\. "
        r"Save the items file as "
        r"UTF-8, or set data\.encoding",
    ),
    "ragged line": (
        lambda d: write_data(
            d, items=_replace("items", "Toy Story (1995)", "Toy Story, the (1995)")
        ),
        "items.csv",
        r"items\.csv, line 4: 4 fields where the header has 3\. "
        r"Put double quotes around a value that contains a comma",
    ),
    "unclosed quote": (
        lambda d: write_data(d, items=_replace("items", "i2,Köln", 'i2,"Köln')),
        "items.csv",
        r"items\.csv, line 3: a double quote opened on this line is never closed",
    ),
    "header-only interactions": (
        lambda d: write_data(d, interactions="user_id,item_id,rating,timestamp\n"),
        "interactions.csv",
        r"interactions\.csv: has no rows",
    ),
    "header-only items": (
        lambda d: write_data(d, items="item_id,title,genres\n"),
        "items.csv",
        r"items\.csv: has no rows \(only a header\?\); it needs one row per item",
    ),
    "header-only users": (
        lambda d: write_data(d, users="user_id,gender,age\n"),
        "users.csv",
        r"users\.csv: has no rows \(only a header\?\); it needs one row per user",
    ),
    "duplicate item ids": (
        lambda d: write_data(d, items=ITEMS + "i2,Again (2002),Drama\n"),
        "items.csv",
        r"items\.csv: column 'item_id' has 1 duplicate ids \(e\.g\. \['i2'\]; "
        r"repeated in rows 4, 1-based",
    ),
    "duplicate user ids": (
        lambda d: write_data(d, users=USERS + "u1,male,56+\n"),
        "users.csv",
        r"users\.csv: column 'user_id' has 1 duplicate ids \(e\.g\. \['u1'\]; "
        r"repeated in rows 4, 1-based",
    ),
    "unreadable parquet": (
        lambda d: {**write_data(d), "items": _garbage(d / "items.parquet")},
        "items.parquet",
        r"items\.parquet is not a readable parquet items file",
    ),
}


def _garbage(path):
    path.write_bytes(b"PAR1 this is not parquet")
    return path


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_file_through_the_library(case, tmp_path):
    make, named, pattern = DATA_CASES[case]
    paths = make(tmp_path)
    with pytest.raises(ValueError, match=pattern) as raised:
        load_dataset(DataSection(**data_section(paths)))
    message = str(raised.value)
    assert "\n" not in message.strip() and str(tmp_path / named) in message


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_file_through_the_cli(case, tmp_path):
    make, named, pattern = DATA_CASES[case]
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data": data_section(make(tmp_path))}))
    run_dir = tmp_path / "run"
    line = one_line_error(fit_cli(config, run_dir))
    assert str(tmp_path / named) in line
    assert re.search(pattern, line), line
    # The failed run left only its config (which a corrected command replaces).
    assert sorted(path.name for path in run_dir.iterdir()) == [CONFIG_FILE]
    assert partial_files(tmp_path) == []


def test_non_utf8_file_reads_with_its_encoding(tmp_path):
    paths = write_data(tmp_path, items=ITEMS.encode("cp1252"))
    data, _ = load_dataset(DataSection(**data_section(paths, encoding="cp1252")))
    assert data.items["title"].tolist()[1] == "Köln Story (2001)"
    config = RunConfig.from_dict({"data": data_section(paths, encoding="cp1252")})
    assert config.data.encoding == "cp1252" and RunConfig().data.encoding == "utf-8"


def test_null_and_numeric_attribute_values_become_texts(tmp_path):
    # A null title renders as "", a year column with a gap as "1995", not "1995.0".
    items = "item_id,title,year,genres\ni1,,1995,Drama\ni2,1984,,Drama\ni3,Toy Story,1995,Comedy\n"
    paths = write_data(tmp_path, items=items)
    section = data_section(paths)
    section["templates"] = {**TEMPLATES, "item_template": "{title} ({year})"}
    data, templates = load_dataset(DataSection(**section))
    assert data.items["title"].tolist() == ["", "1984", "Toy Story"]
    assert data.items["year"].tolist() == ["1995", "", "1995"]
    texts = [templates.render_item(row) for row in data.items.to_dict("records")]
    assert texts == ["(1995)", "1984 ()", "Toy Story (1995)"]


# ---------------------------------------------------------------------------
# A failed run directory never blocks its corrected re-run.


def _config(paths, **settings):
    return RunConfig.from_dict({"data": data_section(paths, **settings)})


def test_a_run_that_never_trained_is_reset_by_other_settings(tmp_path):
    paths = write_data(tmp_path)
    run_dir = tmp_path / "run"
    MARCRun.open(run_dir, _config(paths))
    (run_dir / "tokens.npz").write_bytes(b"stale tokens")
    (run_dir / ".partial-1-tokens.npz").write_bytes(b"half")
    (run_dir / "notes.txt").write_text("mine")
    corrected = _config(paths, encoding="cp1252")
    run = MARCRun.open(run_dir, corrected)
    assert run.config == corrected
    assert RunConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text())) == corrected
    assert sorted(path.name for path in run_dir.iterdir()) == [CONFIG_FILE, "notes.txt"]
    # The same settings resume: the cache stays.
    (run_dir / "tokens.npz").write_bytes(b"tokens")
    MARCRun.open(run_dir, corrected)
    assert (run_dir / "tokens.npz").read_bytes() == b"tokens"


@pytest.mark.parametrize("marker", STARTED_MARKERS[:3])
def test_a_run_that_started_training_is_another_run(tmp_path, marker):
    paths = write_data(tmp_path)
    run_dir = tmp_path / "run"
    MARCRun.open(run_dir, _config(paths))
    if "." not in marker:  # a directory (checkpoint/)
        (run_dir / marker).mkdir()
    else:
        (run_dir / marker).write_text("started")
    with pytest.raises(
        ValueError,
        match=r"holds another run \(settings differ in data\.encoding\); choose a new --run-dir",
    ):
        MARCRun.open(run_dir, _config(paths, encoding="cp1252"))
    assert (
        RunConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text())).data.encoding
        == "utf-8"
    )


def test_a_failed_fit_does_not_block_the_corrected_command(tmp_path):
    paths = write_data(tmp_path, items=ITEMS.encode("latin-1"))
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data": data_section(paths)}))
    run_dir = tmp_path / "run"
    line = one_line_error(fit_cli(config, run_dir))
    assert "is not valid utf-8 text" in line
    # Corrected (the items' encoding), though the interactions are still bad:
    # the new error is about the data, not "holds another run".
    paths["interactions"].write_text(_replace("interactions", "u2,i1,", "u2,i9,"))
    line = one_line_error(fit_cli(config, run_dir, 'data.encoding="latin-1"'))
    assert "refers to 1 ids that are not in" in line and "another run" not in line
    saved = RunConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    assert saved.data.encoding == "latin-1"
    assert sorted(path.name for path in run_dir.iterdir()) == [CONFIG_FILE]


# ---------------------------------------------------------------------------
# Config values: rejected when the config is read, before any data.

CONFIG_CASES = [
    (
        "training.batch_size=-4",
        "training.batch_size must be >= 2 "
        "(HSIC and the in-batch losses compare the pairs of a batch); got -4.",
    ),
    ("training.epochs=0", "training.epochs must be >= 1; got 0."),
    ("training.train_samples=0", "training.train_samples must be >= 1; got 0."),
    ("training.validation_samples=-1", "training.validation_samples must be >= 1; got -1."),
    ("training.test_samples=0", "training.test_samples must be >= 1; got 0."),
    ("training.learning_rate=0", "training.learning_rate must be > 0; got 0.0."),
    ("training.learning_rate=nan", "training.learning_rate must be a finite number; got nan."),
    ("training.weight_decay=-0.1", "training.weight_decay must be >= 0; got -0.1."),
    ("training.seed=-1", "training.seed must be >= 0; got -1."),
    ("training.threads=0", "training.threads must be >= 1; got 0."),
    ("model.lora_rank=-1", "model.lora_rank must be >= 0; got -1."),
    (
        'model.pooling="maen"',
        "model.pooling must be one of 'mean', 'last', 'cls'; got 'maen'. Did you mean 'mean'?",
    ),
    ("model.max_length=0", "model.max_length must be >= 1; got 0."),
    ("model.compressed_dim=0", "model.compressed_dim must be >= 1; got 0."),
    (
        "model.compression_hidden_units=[256, 0]",
        "model.compression_hidden_units must hold numbers >= 1; got [256, 0].",
    ),
    (
        "model.matching_hidden_units=[-8]",
        "model.matching_hidden_units must hold numbers >= 1; got [-8].",
    ),
    ("model.hsic_weight=-0.01", "model.hsic_weight must be >= 0; got -0.01."),
    (
        'model.objective="bec"',
        "model.objective must be one of "
        "'bce', 'cosine_bce', 'cosine', 'contrastive', 'aoe', 'mrl'; got 'bec'.",
    ),
    ("model.mrl_prefixes=[0]", "model.mrl_prefixes must hold numbers >= 1; got [0]."),
    ("model.reconstruction_weight=-1", "model.reconstruction_weight must be >= 0; got -1.0."),
    ('data.dataset="csv"', "data.dataset must be one of 'movielens', 'files'; got 'csv'."),
    ('data.dataset="files"', "data.dataset = 'files' needs data.interactions and data.items"),
    ("data.seed=-1", "data.seed must be >= 0; got -1."),
    ("data.validation_fraction=0", "data.validation_fraction must be > 0; got 0.0."),
    ("data.test_fraction=1", "data.test_fraction must be < 1; got 1.0."),
    (
        "data.test_fraction=0.95",
        "data.validation_fraction + data.test_fraction must be < 1 to leave training users; "
        "got 0.1 + 0.95.",
    ),
    ("data.max_text_history=-2", "data.max_text_history must be >= 0; got -2."),
    (
        'data.encoding="utf-9"',
        "data.encoding must be a text encoding Python knows, "
        'such as "utf-8", "latin-1" or "cp1252"; got \'utf-9\'.',
    ),
    ("evaluate.max_epochs=0", "evaluate.max_epochs must be >= 1; got 0."),
    ("evaluate.patience=-1", "evaluate.patience must be >= 0; got -1."),
    ("evaluate.batch_size=0", "evaluate.batch_size must be >= 1; got 0."),
    ("evaluate.learning_rate=-1e-3", "evaluate.learning_rate must be > 0; got -0.001."),
    ("evaluate.weight_decay=-1", "evaluate.weight_decay must be >= 0; got -1.0."),
    ("evaluate.num_experts=0", "evaluate.num_experts must be >= 1; got 0."),
    ("evaluate.seeds=[]", "evaluate.seeds must not be empty; got []."),
    ("evaluate.seeds=[0, -1]", "evaluate.seeds must hold numbers >= 0; got [0, -1]."),
    ("evaluate.seeds=[1, 1]", "evaluate.seeds must not repeat a seed; got [1, 1]."),
    ("evaluate.train_samples=0", "evaluate.train_samples must be >= 1; got 0."),
    ("training.epoch=2", "unknown key 'training.epoch'; valid keys in [training] are"),
]


@pytest.mark.parametrize("override, message", CONFIG_CASES)
def test_out_of_range_config_values_are_named_when_read(override, message):
    with pytest.raises(ValueError) as raised:
        RunConfig.from_file(None, [override])
    assert str(raised.value).startswith(f"config: {message}")


def test_config_errors_name_the_file_and_come_before_any_data(tmp_path):
    config = tmp_path / "run.toml"
    # The data does not exist: the config error must come first.
    config.write_text(
        '[data]\ndataset = "files"\ninteractions = "none.csv"\nitems = "none.csv"\n'
        "[training]\nbatch_size = -4\n"
    )
    run_dir = tmp_path / "run"
    line = one_line_error(
        CliRunner().invoke(main, ["fit", "--config", str(config), "--run-dir", str(run_dir)])
    )
    assert line == (
        f"Error: {config}: training.batch_size must be >= 2 "
        "(HSIC and the in-batch losses compare the pairs of a batch); got -4."
    )
    assert not run_dir.exists()
    line = one_line_error(
        CliRunner().invoke(
            main, ["fit", "--run-dir", str(run_dir), "--set", 'model.pooling="maen"']
        )
    )
    assert line.startswith("Error: config: model.pooling must be one of") and not run_dir.exists()
    with pytest.raises(ValueError, match=r"evaluate\.seeds must not repeat a seed"):
        DownstreamConfig(seeds=(0, 0))


def test_config_choices_match_the_library():
    from marc_keras.layers.token_pooling import POOLING_MODES
    from marc_keras.models.marc import OBJECTIVES
    from marc_keras.config.run_config import OBJECTIVES as CONFIG_OBJECTIVES
    from marc_keras.config.run_config import POOLING_MODES as CONFIG_POOLING
    from marc_keras.config.run_config import HSIC_SCALES as CONFIG_HSIC_SCALES
    from marc_keras.losses.hsic import HSIC_SCALES
    from marc_keras.config.run_config import CROSS_FIT_HOLDOUTS
    from marc_keras.config.run_config import HSIC_ROWS as CONFIG_HSIC_ROWS
    from marc_keras.models.cross_fitted_heads import HOLDOUTS
    from marc_keras.models.marc import HSIC_ROWS

    assert CONFIG_POOLING == POOLING_MODES and tuple(OBJECTIVES) == CONFIG_OBJECTIVES
    assert CONFIG_HSIC_SCALES == HSIC_SCALES and CROSS_FIT_HOLDOUTS == HOLDOUTS
    assert CONFIG_HSIC_ROWS == HSIC_ROWS
    for path in ("configs/demo.toml", "configs/compare-cpu.toml", "configs/gpu.toml"):
        RunConfig.from_file(path)  # the shipped configs are in range


# ---------------------------------------------------------------------------
# ONNX bundles and the texts `encode` reads.


def _encode_cli(bundle, input_path, output_path, *args):
    return CliRunner().invoke(
        main,
        [
            "encode",
            "--bundle-dir",
            str(bundle),
            "--input",
            str(input_path),
            "--output",
            str(output_path),
            "--provider",
            "cpu",
            *args,
        ],
    )


def _texts_file(path, ids, texts):
    pd.DataFrame({"id": ids, "text": texts}).to_parquet(path)
    return path


def _tamper(bundle):
    with open(bundle / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    return bundle / "model.onnx"


def _truncate(bundle):
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) // 2])
    return bundle / "model.onnx"


def _truncate_manifest(bundle):
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text[: len(text) // 2])
    return bundle / "manifest.json"


def _drop_tokenizer(bundle):
    (bundle / "tokenizer.json").unlink()
    return bundle / "tokenizer.json"


BUNDLE_CASES = {
    "tampered model": (
        _tamper,
        r"Bundle file '\S+model\.onnx' does not match its checksum in manifest\.json",
    ),
    "truncated model": (
        _truncate,
        r"Bundle file '\S+model\.onnx' does not match its checksum in manifest\.json",
    ),
    "truncated manifest": (_truncate_manifest, r"\S+manifest\.json is not valid JSON"),
    "missing tokenizer": (
        _drop_tokenizer,
        r"Bundle file '\S+tokenizer\.json' listed in manifest\.json is missing",
    ),
    "missing bundle": (
        lambda bundle: shutil.rmtree(bundle) or bundle,
        r"'\S+bundle' is not an encoder bundle: it has no manifest\.json",
    ),
}


@pytest.mark.parametrize("case", BUNDLE_CASES)
def test_a_damaged_bundle_is_refused_naming_the_file(case, tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], bundle)
    damage, pattern = BUNDLE_CASES[case]
    named = damage(bundle)
    with pytest.raises((ValueError, FileNotFoundError), match=pattern) as raised:
        OnnxEncoder(bundle, provider="cpu")
    assert str(named) in str(raised.value) and "\n" not in str(raised.value)
    texts = _texts_file(tmp_path / "texts.parquet", ["a"], ["a film"])
    line = one_line_error(_encode_cli(bundle, texts, tmp_path / "out.parquet"))
    assert str(named) in line
    assert not (tmp_path / "out.parquet").exists() and partial_files(tmp_path) == []


ENCODE_CASES = {
    "null text": (
        ["a", "b", "c"],
        ["a film", None, "movie"],
        r"'\S+in\.parquet' row 1 \(id 'b'\) has a null in column 'text'",
    ),
    "non-string text": (["a", "b"], [1984, 7], r"'\S+in\.parquet'.* int.*row 0.*id 'a'"),
    "missing input": (None, None, r"Input table '\S+in\.parquet' does not exist"),
}


@pytest.mark.parametrize("case", ENCODE_CASES)
def test_bad_texts_to_encode_name_the_row_and_write_nothing(case, tiny_bundle, tmp_path):
    ids, texts, pattern = ENCODE_CASES[case]
    source = tmp_path / "in.parquet"
    if ids is not None:
        pq.write_table(pa.table({"id": ids, "text": texts}), source)
    encoder = OnnxEncoder(tiny_bundle[0], provider="cpu")
    with pytest.raises((ValueError, FileNotFoundError), match=pattern):
        encoder.encode_file(source, tmp_path / "out.parquet")
    line = one_line_error(_encode_cli(tiny_bundle[0], source, tmp_path / "out.parquet", "--npy"))
    assert str(source) in line
    assert sorted(path.name for path in tmp_path.iterdir()) == (["in.parquet"] if ids else [])


def test_duplicate_ids_to_encode_are_refused(tiny_bundle, tmp_path):
    """DUPLICATE IDS IN `encode` INPUT: the check lives in export/onnx_encoder.py
    (another change)."""
    source = _texts_file(tmp_path / "in.parquet", ["a", "b", "a"], ["a film", "movie", "the movie"])
    encoder = OnnxEncoder(tiny_bundle[0], provider="cpu")
    with pytest.raises(ValueError) as raised:
        encoder.encode_file(source, tmp_path / "out.parquet")
    message = str(raised.value)
    assert str(source) in message and "duplicate" in message.lower() and "'a'" in message
    line = one_line_error(_encode_cli(tiny_bundle[0], source, tmp_path / "out.parquet"))
    assert str(source) in line and "duplicate" in line.lower()
    assert not (tmp_path / "out.parquet").exists() and partial_files(tmp_path) == []


def test_empty_and_very_long_texts_are_encoded(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle
    encoder = OnnxEncoder(bundle, provider="cpu")
    long_text = "the movie " * 200
    vectors = encoder.encode(["", long_text, "a film"])
    assert vectors["compressed"].shape == (3, 8) and np.isfinite(vectors["compressed"]).all()
    assert encoder.last_truncated == 1
    # An empty text is the special tokens alone ([CLS] [SEP]).
    tokens = encoder.tokenizer([""])
    assert tokens["padding_mask"].sum() == 2
    assert tokens["token_ids"][0].tolist() == [
        2,
        3,
    ]  # [CLS], [SEP] of TextTokenizer.from_vocabulary
    # A long text is cut to max_length: only its first tokens count.
    cut = encoder.encode([" ".join(long_text.split()[:50])])
    np.testing.assert_allclose(vectors["compressed"][1], cut["compressed"][0], atol=1e-5)
    # In CSV an empty field is an empty text.
    (tmp_path / "in.csv").write_text(f"id,text\nm1,\nm2,{long_text}\nm3,a film\n")
    result = _encode_cli(bundle, tmp_path / "in.csv", tmp_path / "out.parquet")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout[result.stdout.index("{") :])
    assert stats["rows"] == 3 and stats["truncated"] == 1


# ---------------------------------------------------------------------------
# Embedding stores of the wrong width, for `rank`.


def _store(path, ids, dims, data_dims=None):
    rng = np.random.default_rng(0)
    with EmbeddingStore.writer(path, dims) as store:
        store.append(
            np.asarray(ids), {name: rng.normal(size=(len(ids), dim)) for name, dim in dims.items()}
        )
    if data_dims is not None:
        # Tamper with the schema's widths, leaving the rows as they are.
        table = pq.read_table(path)
        metadata = dict(table.schema.metadata)
        values = json.loads(metadata[METADATA_KEY])
        values["dims"] = data_dims
        metadata[METADATA_KEY] = json.dumps(values).encode()
        pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


@pytest.fixture
def rank_run(tmp_path):
    config = RunConfig.from_dict(
        {"model": {"compressed_dim": 8}, "data": {"data_dir": str(tmp_path / "no-data")}}
    )
    return MARCRun.open(tmp_path / "run", config)


# Each case: user store widths, item store widths (None: no store), the schema
# widths written over the item store's (None: honest), column, file named, pattern.
STORE_CASES = {
    "compressed width": (
        {"compressed": 4},
        {"compressed": 8},
        None,
        "compressed",
        "users.parquet",
        r"Embedding store '\S+users\.parquet' holds 4-d 'compressed' vectors, "
        r"but run '\S+run' makes 8-d ones \(model\.compressed_dim\)",
    ),
    "user and item widths": (
        {"original": 16},
        {"original": 24},
        None,
        "original",
        "items.parquet",
        r"Embedding store '\S+items\.parquet' holds 24-d 'original' vectors, "
        r"but the user store '\S+users\.parquet' holds 16-d ones",
    ),
    "tampered widths": (
        {"compressed": 8},
        {"compressed": 8},
        {"compressed": 6},
        "compressed",
        "items.parquet",
        r"Embedding store '\S+items\.parquet' could not be read \(.*\); "
        r"it is damaged or was altered",
    ),
    "missing store": (
        {"compressed": 8},
        None,
        None,
        "compressed",
        "items.parquet",
        r"Embedding store '\S+items\.parquet' does not exist; write one with `marc-keras encode`",
    ),
}


@pytest.mark.parametrize("case", STORE_CASES)
@pytest.mark.parametrize("engine", ["keras", "tfrs"])
def test_a_store_that_does_not_fit_the_run_is_refused(case, engine, rank_run, tmp_path):
    user_dims, item_dims, tampered, column, named, pattern = STORE_CASES[case]
    users = _store(tmp_path / "users.parquet", ["1", "2", "3"], user_dims)
    items = tmp_path / "items.parquet"
    if item_dims is not None:
        _store(items, ["10", "20"], item_dims, tampered)
    with pytest.raises((ValueError, FileNotFoundError), match=pattern) as raised:
        rank_with_stores(rank_run, users, items, column=column, engine=engine, log=lambda _: None)
    assert str(tmp_path / named) in str(raised.value)
    result = CliRunner().invoke(
        main,
        [
            "rank",
            "--run-dir",
            str(rank_run.run_dir),
            "--user-store",
            str(users),
            "--item-store",
            str(items),
            "--column",
            column,
            "--engine",
            engine,
        ],
    )
    line = one_line_error(result)
    assert str(tmp_path / named) in line and re.search(pattern, line), line
    # Nothing written: the run directory holds only its config.
    assert sorted(path.name for path in rank_run.run_dir.iterdir()) == [CONFIG_FILE]


def test_read_store_vectors_names_a_damaged_store(tmp_path):
    path = _store(tmp_path / "items.parquet", ["10", "20"], {"compressed": 8}, {"compressed": 6})
    with pytest.raises(ValueError, match=r"'\S+items\.parquet' could not be read \(cannot reshape"):
        read_store_vectors(path)
