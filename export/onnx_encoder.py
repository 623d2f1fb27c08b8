"""Batch encoding with ONNX Runtime: texts or files in, vectors or an embedding store out.

Imports neither Keras, torch nor TensorFlow: an inference fleet needs only
onnxruntime (or onnxruntime-gpu), tokenizers, numpy and pyarrow.
"""

import time
from pathlib import Path

import numpy as np

from marc_keras.export.bundle_manifest import MODEL_FILE, TOKENIZER_FILE, BundleManifest
from marc_keras.export.embedding_store import EmbeddingStore
from marc_keras.length_batches import encode_in_length_order
from marc_keras.text_tokenizer import TextTokenizer

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
            "Install marc-keras[gpu] (onnxruntime-gpu) on a machine with CUDA, or use provider='cpu'."
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
    >>> encoder.encode_file("items.parquet", "item-vectors.parquet", id_column="item_id", text_column="text")
    """

    def __init__(self, bundle_dir, provider="auto", threads=None, batch_size=64, sort_by_length=True):
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
        if tokenizer.vocabulary_size != manifest.tokenizer_vocabulary_size or tokenizer.vocabulary_size > manifest.vocabulary_size:
            raise ValueError(
                f"The tokenizer in '{self.bundle_dir}' knows {tokenizer.vocabulary_size} tokens, but the "
                f"model was exported with {manifest.tokenizer_vocabulary_size} (embedding rows "
                f"{manifest.vocabulary_size}): it does not belong to this model. Re-export the bundle."
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

    def encode(self, texts, on_batch=None):
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
        input_path,
        output_path,
        id_column="id",
        text_column="text",
        outputs=None,
        chunk_size=8192,
        write_npy=False,
        verbose=False,
    ):
        """Streams a parquet or CSV table of texts into an embedding store.

        Reads `chunk_size` rows at a time, so the input never has to fit in
        memory; the store (and `.npy` files with `write_npy`) appear only
        when every row is encoded.

        Args:
            input_path: `.parquet` or `.csv` with an id and a text column.
            output_path: the `.parquet` store to write.
            id_column: column of ids (integers or strings).
            text_column: column of texts.
            outputs: output names to store (default: all, `compressed` and
                `original`).
            chunk_size: rows read and encoded at a time.
            write_npy: also write `{stem}.{output}.npy` beside the store
                (these are assembled in memory).
            verbose: show a progress bar.

        Returns:
            A dict: `rows`, `truncated` (texts cut to max_length), `seconds`,
            `texts_per_s`, `output`.

        Raises:
            FileNotFoundError: `input_path` does not exist.
            ValueError: unsupported file type, missing columns, or a null
                or non-string text (the row and its id are named).
        """
        input_path, output_path = Path(input_path), Path(output_path)
        outputs = list(outputs or self.output_dims)
        unknown = [name for name in outputs if name not in self.output_dims]
        if unknown:
            raise ValueError(f"Unknown outputs {unknown}; this bundle has {sorted(self.output_dims)}.")
        chunks, total = self._read_chunks(input_path, id_column, text_column, chunk_size)
        started, rows, truncated, writer = time.perf_counter(), 0, 0, None
        progress = _Progress(total, input_path.name) if verbose else None
        try:
            for ids, texts in chunks:
                self._check_texts(texts, ids, rows, input_path, text_column)
                if writer is None:
                    id_type = "int64" if ids.dtype.kind in "iu" else "string"
                    dims = {name: self.output_dims[name] for name in outputs}
                    writer = EmbeddingStore.writer(
                        output_path, dims, self.manifest.to_dict(), id_type=id_type, write_npy=write_npy
                    )
                vectors = self.encode(texts, on_batch=progress.advance if progress else None)
                writer.append(ids, {name: vectors[name] for name in outputs})
                rows += len(texts)
                truncated += self.last_truncated
            if writer is None:
                raise ValueError(f"'{input_path}' has no rows to encode.")
            writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            if progress is not None:
                progress.close()
        seconds = time.perf_counter() - started
        return {
            "rows": rows,
            "truncated": truncated,
            "seconds": seconds,
            "texts_per_s": rows / seconds if seconds else float("nan"),
            "output": str(output_path),
        }

    @staticmethod
    def _check_texts(texts, ids, offset, path, column):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"'{path}' row {offset + index} (id {ids[index]!r}) has a "
                    f"{'null' if text is None else type(text).__name__} in column '{column}'; "
                    "fill missing texts (an empty string is allowed) before encoding."
                )

    @staticmethod
    def _read_chunks(path, id_column, text_column, chunk_size):
        import pyarrow as pa

        if not path.is_file():
            raise FileNotFoundError(f"Input table '{path}' does not exist.")
        suffix = path.suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            raise ValueError(f"'{path}' must be a .parquet or .csv table; got '{suffix or 'no suffix'}'.")
        columns = [id_column, text_column]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table_file = pq.ParquetFile(path)
            names, total = table_file.schema_arrow.names, table_file.metadata.num_rows
        else:
            import pyarrow.csv as pcsv

            # In CSV an empty field is an empty text, never a null.
            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=1 << 22),
                convert_options=pcsv.ConvertOptions(column_types={text_column: pa.string()}, strings_can_be_null=False),
            )
            names, total = reader.schema.names, None
        missing = [name for name in columns if name not in names]
        if missing:
            raise ValueError(
                f"'{path}' has no column(s) {missing}; its columns are {names}. "
                "Name them with --id-column / --text-column."
            )
        batches = table_file.iter_batches(batch_size=chunk_size, columns=columns) if suffix == ".parquet" else reader

        def chunks():
            for batch in batches:
                ids = batch.column(id_column).to_numpy(zero_copy_only=False)
                texts = batch.column(text_column).to_pylist()
                for start in range(0, len(texts), chunk_size):
                    yield ids[start : start + chunk_size], texts[start : start + chunk_size]

        return chunks(), total


class _Progress:
    """A rich progress bar that counts texts."""

    def __init__(self, total, label):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]encoding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        self._task = self._bar.add_task(label, total=total)
        self._bar.start()

    def advance(self, count):
        self._bar.advance(self._task, count)

    def close(self):
        self._bar.stop()
