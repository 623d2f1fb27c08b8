"""Batch encoding with ONNX Runtime: texts or files in, vectors or an embedding store out.

Imports neither Keras, torch nor TensorFlow: an inference fleet needs only
onnxruntime (or onnxruntime-gpu), tokenizers, numpy and pyarrow.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from marc_keras.export.bundle_manifest import MODEL_FILE, TOKENIZER_FILE, BundleManifest
from marc_keras.export.embedding_store import EmbeddingStore
from marc_keras.text_tokenizer import TextTokenizer
from marc_keras.utils.length_batches import encode_in_length_order

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
TABLE_SUFFIXES = (".parquet", ".csv")


def _resolve_provider(provider, precision):
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if provider == "auto":
        provider = "cuda" if PROVIDERS["cuda"] in available and precision != "int8" else "cpu"
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be 'auto', 'cpu' or 'cuda'; got '{provider}'.")
    if provider == "cuda" and PROVIDERS["cuda"] not in available:
        raise RuntimeError(
            f"The CUDA provider was asked for, but this onnxruntime has only {available}. "
            "Install marc-keras[gpu] (onnxruntime-gpu) on a machine with CUDA, "
            "or use provider='cpu'."
        )
    if provider == "cuda" and precision == "int8":
        raise ValueError(
            "int8 bundles use dynamic quantization, which ONNX Runtime runs on CPU only; "
            "export an fp16 bundle for GPUs, or use provider='cpu'."
        )
    return provider


class OnnxEncoder:
    """Encodes texts with an exported bundle on ONNX Runtime (CUDA or CPU).

    Texts are tokenized with the bundle's own tokenizer, sorted by length and
    batched so that little padding is computed; vectors come back in input
    order. Texts over the bundle's `max_length` tokens are truncated and
    counted (`last_truncated`); an empty string is encoded as the
    tokenizer's special tokens alone; `None` or a non-string is an error that
    names its position. On CUDA, inputs and outputs go through IO binding.

    Loading a bundle checks every file against the manifest's sha256 and the
    tokenizer against the model; it reads JSON and ONNX only, and never
    executes code from the bundle.

    Args:
        bundle_dir: a directory written by `OnnxExporter` / `marc-keras export`.
        provider: "auto" (CUDA when available, except for int8), "cpu" or
            "cuda" (an error when unavailable).
        threads: ONNX Runtime intra-op threads (`None`: ORT's default).
        batch_size: texts per session run.
        sort_by_length: batch texts in length order (see above).

    Example:
    >>> encoder = OnnxEncoder("bundles/demo", provider="cpu", threads=2)
    >>> vectors = encoder.encode(["Heat (1995). Genres: Action, Crime, Thriller."])
    >>> vectors["compressed"].shape
    (1, 128)
    >>> encoder.encode_file(
    ...     "items.parquet", "item-vectors.parquet", id_column="item_id", text_column="text"
    ... )
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        provider: str = "auto",
        threads: int | None = None,
        batch_size: int = 64,
        sort_by_length: bool = True,
    ) -> None:
        import onnxruntime

        self.bundle_dir = Path(bundle_dir)
        self.manifest = BundleManifest.load(self.bundle_dir)
        self.tokenizer = self._load_tokenizer()
        self.provider = _resolve_provider(provider, self.manifest.precision)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
        self.batch_size = int(batch_size)
        self.sort_by_length = bool(sort_by_length)
        self.threads = threads
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(self.bundle_dir / MODEL_FILE), options, providers=[PROVIDERS[self.provider]]
        )
        if self.session.get_providers()[0] != PROVIDERS[self.provider]:
            raise RuntimeError(
                f"ONNX Runtime could not start {PROVIDERS[self.provider]} (it fell back to "
                f"{self.session.get_providers()}); check the CUDA / cuDNN installation."
            )
        self.output_dims = dict(self.manifest.outputs)
        self.last_truncated = 0

    def _load_tokenizer(self):
        manifest = self.manifest
        tokenizer = TextTokenizer.from_json(
            (self.bundle_dir / TOKENIZER_FILE).read_text("utf-8"), max_length=manifest.max_length
        )
        if (
            tokenizer.vocabulary_size != manifest.tokenizer_vocabulary_size
            or tokenizer.vocabulary_size > manifest.vocabulary_size
        ):
            raise ValueError(
                f"The tokenizer in '{self.bundle_dir}' knows {tokenizer.vocabulary_size} "
                "tokens, but the "
                f"model was exported with {manifest.tokenizer_vocabulary_size} (embedding rows "
                f"{manifest.vocabulary_size}): it does not belong to this model. "
                "Re-export the bundle."
            )
        if tokenizer.pad_id != manifest.pad_id:
            raise ValueError(
                f"The tokenizer in '{self.bundle_dir}' pads with id {tokenizer.pad_id}, the model "
                f"with {manifest.pad_id}: it does not belong to this model. Re-export the bundle."
            )
        return tokenizer

    def _run_batch(self, batch):
        names = list(self.output_dims)
        if self.provider == "cuda":
            binding = self.session.io_binding()
            for name, array in batch.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            for name in names:
                binding.bind_output(name, "cuda")
            self.session.run_with_iobinding(binding)
            return dict(zip(names, binding.copy_outputs_to_cpu()))
        inputs = {name: np.ascontiguousarray(array) for name, array in batch.items()}
        return dict(zip(names, self.session.run(names, inputs)))

    def encode(
        self, texts: Iterable[str], on_batch: Callable[[int], object] | None = None
    ) -> dict[str, np.ndarray]:
        """Encodes texts.

        Args:
            texts: a sequence of strings.
            on_batch: optional callable taking the number of texts just done.

        Returns:
            A dict output name -> float32 (N, width), row i for `texts[i]`.

        Raises:
            TypeError: a text is `None` or not a string (its index is named).
        """
        texts = list(texts)
        if not texts:
            self.last_truncated = 0
            return {name: np.zeros((0, dim), "float32") for name, dim in self.output_dims.items()}
        tokens = self.tokenizer(texts)
        self.last_truncated = self.tokenizer.last_truncated
        return encode_in_length_order(
            tokens,
            self.output_dims,
            self._run_batch,
            batch_size=self.batch_size,
            sort_by_length=self.sort_by_length,
            on_batch=on_batch,
        )

    def encode_file(
        self,
        input_path: str | os.PathLike,
        output_path: str | os.PathLike,
        id_column: str = "id",
        text_column: str = "text",
        outputs: Iterable[str] | None = None,
        chunk_size: int = 8192,
        write_npy: bool = False,
        verbose: bool = False,
    ) -> dict:
        """Streams a parquet or CSV table of texts into an embedding store; a re-run resumes.

        The whole input is checked first (columns, ids, texts) without
        encoding anything, so a bad row writes nothing. Then `chunk_size`
        rows at a time are encoded, each chunk saved as a part file in
        `.partial-{output name}/` beside the output. A run that is killed
        or interrupted keeps its finished parts: the same call again skips
        them (after checking that the input, bundle, chunking, columns and
        outputs are unchanged; otherwise it discards them and says so) and
        encodes the rest. The store (and `.npy` files with `write_npy`)
        appears only when every row is encoded, with one row per id in
        input order; memory holds the input's ids and one chunk.

        Args:
            input_path: `.parquet` or `.csv` with an id and a text column.
            output_path: the `.parquet` store to write.
            id_column: column of ids (integers or strings), each id once.
            text_column: column of texts.
            outputs: output names to store (default: all, `compressed` and
                `original`).
            chunk_size: rows encoded and saved at a time (what a killed run
                can lose at most).
            write_npy: also write `{stem}.{output}.npy` beside the store.
            verbose: report progress on stderr (a bar on a terminal, plain
                lines otherwise).

        Returns:
            A dict: `rows`, `resumed_rows` (taken from an earlier attempt),
            `truncated` (texts cut to max_length), `seconds`, `texts_per_s`
            (texts encoded by this call per second), `output`, and
            `discarded_partial` (why an earlier attempt's parts were dropped,
            or `None`).

        Raises:
            FileNotFoundError: `input_path` does not exist.
            ValueError: unsupported file type, missing columns, no rows,
                duplicate or null ids, or a null or non-string text (rows
                and ids are named).

        Example:
        >>> stats = encoder.encode_file(
        ...     "items.csv", "item-vectors.parquet", id_column="item_id", chunk_size=4096
        ... )
        >>> stats["rows"], stats["resumed_rows"]
        (100000, 36864)
        """
        input_path, output_path = Path(input_path), Path(output_path)
        outputs = list(self.manifest.output_dims(outputs))
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be at least 1; got {chunk_size}.")
        chunk_size = int(chunk_size)
        started = time.perf_counter()
        total, id_type = self._check_input(input_path, id_column, text_column, chunk_size)
        status = input_path.stat()
        key = {
            "input": {
                "path": str(input_path.resolve()),
                "size": status.st_size,
                "mtime_ns": status.st_mtime_ns,
            },
            "bundle_files": self.manifest.files,
            "chunk_size": chunk_size,
            "columns": [id_column, text_column],
            "outputs": outputs,
        }
        dims = {name: self.output_dims[name] for name in outputs}
        store = EmbeddingStore.staged(output_path, dims, self.manifest.to_dict(), id_type, key)
        progress = _Progress(total, input_path.name) if verbose else None
        resumed, truncated = 0, 0
        try:
            if progress is not None and store.discarded:
                progress.note(store.discarded)
            for chunk in self._read_chunks(input_path, id_column, text_column, chunk_size):
                ids = chunk.column(id_column).to_numpy()
                notes = store.resume(ids)
                if notes is None:
                    vectors = self.encode(
                        chunk.column(text_column).to_pylist(),
                        on_batch=progress.advance if progress else None,
                    )
                    notes = {"truncated": self.last_truncated}
                    store.write(ids, {name: vectors[name] for name in outputs}, notes)
                else:
                    resumed += len(ids)
                    if progress is not None:
                        progress.advance(len(ids), resumed=True)
                truncated += notes["truncated"]
            store.finish(write_npy)
        finally:
            if progress is not None:
                progress.close()
        seconds = time.perf_counter() - started
        return {
            "rows": store.rows,
            "resumed_rows": resumed,
            "truncated": truncated,
            "seconds": seconds,
            "texts_per_s": (store.rows - resumed) / seconds if seconds else float("nan"),
            "output": str(output_path),
            "discarded_partial": store.discarded,
        }

    @classmethod
    def _check_input(cls, path, id_column, text_column, chunk_size):
        """Reads the whole input once and refuses it before anything is encoded.

        Returns:
            `(rows, id_type)`, id_type "int64" or "string".
        """
        import pyarrow as pa

        id_chunks, offset = [], 0
        for chunk in cls._read_chunks(path, id_column, text_column, chunk_size):
            ids, texts = chunk.column(id_column), chunk.column(text_column)
            if ids.null_count:
                row = offset + _first_true(ids.is_null())
                raise ValueError(
                    f"'{path}' row {row} has no id (a null in column '{id_column}'); give every "
                    "row an id before encoding (rows are counted from 0, a CSV header not counted)."
                )
            cls._check_texts(texts, ids, offset, path, text_column)
            id_chunks.extend(ids.chunks)
            offset += chunk.num_rows
        if not offset:
            raise ValueError(f"'{path}' has no rows to encode.")
        all_ids = pa.chunked_array(id_chunks)
        cls._check_unique(all_ids, path, id_column)
        return offset, "int64" if pa.types.is_integer(all_ids.type) else "string"

    @staticmethod
    def _check_texts(texts, ids, offset, path, column):
        import pyarrow as pa

        if not (
            pa.types.is_string(texts.type)
            or pa.types.is_large_string(texts.type)
            or pa.types.is_null(texts.type)
        ):
            raise ValueError(
                f"'{path}' column '{column}' holds {texts.type} values, not texts (row {offset}, "
                f"id {ids[0].as_py()!r}); store the texts as strings before encoding."
            )
        if texts.null_count:
            index = _first_true(texts.is_null())
            raise ValueError(
                f"'{path}' row {offset + index} (id {ids[index].as_py()!r}) has a null in column "
                f"'{column}'; fill missing texts (an empty string is allowed) before encoding."
            )

    @staticmethod
    def _check_unique(ids, path, column, shown=5):
        import pyarrow.compute as pc

        if len(pc.unique(ids)) == len(ids):
            return
        counts = pc.value_counts(ids)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        described = []
        for value in repeated[:shown]:
            rows = pc.indices_nonzero(pc.equal(ids, value)).to_pylist()
            listed = ", ".join(str(row) for row in rows[:shown]) + (
                ", ..." if len(rows) > shown else ""
            )
            described.append(f"{value.as_py()!r} (rows {listed})")
        more = f" and {len(repeated) - shown} more" if len(repeated) > shown else ""
        raise ValueError(
            f"'{path}' has duplicate ids in column '{column}': {'; '.join(described)}{more}. "
            "A store holds one vector per id: deduplicate the input (keep one row per id) and "
            "run again (rows are counted from 0, a CSV header not counted)."
        )

    @staticmethod
    def _read_chunks(path, id_column, text_column, chunk_size):
        """Yields pyarrow tables of exactly `chunk_size` rows (the last may be shorter).

        Chunk i always holds rows [i * chunk_size, (i + 1) * chunk_size),
        however the reader splits the file, so a re-run meets the same chunks.
        """
        import pyarrow as pa

        if not path.is_file():
            raise FileNotFoundError(f"Input table '{path}' does not exist.")
        suffix = path.suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            raise ValueError(
                f"'{path}' must be a .parquet or .csv table; got '{suffix or 'no suffix'}'."
            )
        columns = [id_column, text_column]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table_file = pq.ParquetFile(path)
            names = table_file.schema_arrow.names
        else:
            import pyarrow.csv as pcsv

            # In CSV an empty field is an empty text, never a null.
            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=1 << 22),
                convert_options=pcsv.ConvertOptions(
                    column_types={text_column: pa.string()}, strings_can_be_null=False
                ),
            )
            names = reader.schema.names
        missing = [name for name in columns if name not in names]
        if missing:
            raise ValueError(
                f"'{path}' has no column(s) {missing}; its columns are {names}. "
                "Name them with --id-column / --text-column."
            )
        batches = (
            table_file.iter_batches(batch_size=chunk_size, columns=columns)
            if suffix == ".parquet"
            else reader
        )
        pending = None
        for batch in batches:
            table = pa.Table.from_batches([batch]).select(columns)
            pending = table if pending is None else pa.concat_tables([pending, table])
            while pending.num_rows >= chunk_size:
                yield pending.slice(0, chunk_size)
                pending = pending.slice(chunk_size)
        if pending is not None and pending.num_rows:
            yield pending


def _first_true(mask):
    import pyarrow.compute as pc

    return pc.index(mask, True).as_py()


class _Progress:
    """Counts encoded texts on stderr: a rich bar on a terminal, plain lines otherwise.

    Logs and CI capture stderr as a file, where a bar's cursor movements
    would be noise; there a line is written every 10% and at least every
    `every_s` seconds of work ("items.csv: encoded 8192/100000 texts (8%)").
    """

    def __init__(self, total, label, stream=None, every_s=10.0):
        self._stream = stream or sys.stderr
        self._total, self._label, self._every_s = total, label, every_s
        self._done, self._resumed, self._written, self._written_at = 0, 0, 0, time.monotonic()
        self._bar = None
        if self._stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]encoding {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(file=self._stream),
            )
            self._task = self._bar.add_task(label, total=total)
            self._bar.start()

    def note(self, line):
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            self._stream.write(line + "\n")
            self._stream.flush()

    def advance(self, count, resumed=False):
        self._done += count
        self._resumed += count if resumed else 0
        if self._bar is not None:
            self._bar.advance(self._task, count)
        elif (
            self._done * 10 // self._total > self._written * 10 // self._total
            or time.monotonic() - self._written_at >= self._every_s
        ):
            self._write_line()

    def _write_line(self):
        resumed = f", {self._resumed} of them resumed from an earlier run" if self._resumed else ""
        self.note(
            f"{self._label}: encoded {self._done}/{self._total} texts "
            f"({100 * self._done // self._total}%{resumed})"
        )
        self._written, self._written_at = self._done, time.monotonic()

    def close(self):
        if self._bar is not None:
            self._bar.stop()
        elif self._done != self._written:
            self._write_line()
