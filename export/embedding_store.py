"""The embedding store: vectors by id in parquet (plus optional .npy), read with numpy.

Written by `OnnxEncoder.encode_file` and `marc-keras encode`; read by the
Keras and TFRS rankers (`marc-keras rank`). Imports neither Keras, torch nor
TensorFlow, so any process can read a store.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from marc_keras.utils.atomic_files import write_atomically, write_json

ID_COLUMN = "id"
METADATA_KEY = b"marc_keras"
PART_METADATA_KEY = b"marc_keras_part"
PROGRESS_FILE = "progress.json"
# A sharded store is a directory (written by `ShardedEncoder`): its parts,
# listed in STORE_FILE, count once SUCCESS_FILE exists.
STORE_FILE = "_store.json"
SUCCESS_FILE = "_SUCCESS"


def _npy_path(path, column):
    return path.with_name(f"{path.stem}.{column}.npy")


def _ids_array(ids):
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return pa.array(ids.astype("int64"))
    return pa.array([str(value) for value in ids.tolist()], type=pa.string())


def _schema(dims, manifest, id_type):
    if id_type not in ("string", "int64"):
        raise ValueError(f"id_type must be 'string' or 'int64'; got '{id_type}'.")
    if not dims:
        raise ValueError("An embedding store needs at least one vector column.")
    metadata = {METADATA_KEY: json.dumps({"dims": dims, "manifest": manifest}).encode()}
    fields = [pa.field(ID_COLUMN, pa.string() if id_type == "string" else pa.int64())]
    fields += [pa.field(name, pa.list_(pa.float32(), dim)) for name, dim in dims.items()]
    return pa.schema(fields, metadata=metadata)


def rows_table(
    ids: np.ndarray,
    vectors: Mapping[str, np.ndarray],
    dims: Mapping[str, int],
    manifest: dict,
    id_type: str,
) -> pa.Table:
    """Rows of a store as an Arrow table: `ids` (n,) and `vectors[name]` (n, dims[name])
    as fixed-size float32 list columns, with the store's schema metadata."""
    return _table(_schema(dict(dims), manifest, id_type), dict(dims), ids, vectors)


def _table(schema, dims, ids, vectors):
    """Rows of a store: `ids` (n,) and `vectors[name]` (n, dims[name]) for every column."""
    missing = set(dims) - set(vectors)
    if missing:
        raise ValueError(f"Rows are missing vector columns {sorted(missing)}.")
    ids_array = _ids_array(ids)
    if ids_array.type != schema.field(ID_COLUMN).type:
        ids_array = ids_array.cast(schema.field(ID_COLUMN).type)
    columns = [ids_array]
    for name, dim in dims.items():
        array = np.ascontiguousarray(vectors[name], dtype="float32")
        if array.shape != (len(ids_array), dim):
            raise ValueError(
                f"Vectors '{name}' have shape {array.shape}; the store expects "
                f"({len(ids_array)}, {dim})."
            )
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), dim))
    return pa.Table.from_arrays(columns, schema=schema)


class EmbeddingStore:
    """A parquet file of `id` plus fixed-size float32 list columns, one per vector kind.

    The schema metadata (key `marc_keras`) holds the exporting bundle's
    manifest and the vector widths, so a reader knows where vectors came from
    and how wide they are without reading a row. `EmbeddingStore.writer`
    streams chunks into a temporary file that becomes the store only on
    `close`, so an interrupted encode leaves no half-written store; with
    `write_npy=True` each vector column is also saved as `{stem}.{column}.npy`
    beside it (row i = row i of the parquet). `EmbeddingStore.staged` writes
    the chunks as part files that outlive a killed process, so that a re-run
    resumes instead of starting over.

    Args:
        path: the `.parquet` file.

    Example:
    >>> with EmbeddingStore.writer("items.parquet", {"compressed": 128}, manifest) as store:
    ...     store.append(["1", "2"], {"compressed": vectors})  # (2, 128)
    >>> ids, vectors, metadata = load_embedding_table("items.parquet")
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self._files, self.metadata = self._open_sharded()
        else:
            self._files = [self._open_part(self.path)]
            self.metadata = self._part_metadata(self.path, self._files[0])
        self.dims = {name: int(dim) for name, dim in self.metadata["dims"].items()}

    def _open_part(self, path):
        if not path.is_file():
            raise FileNotFoundError(
                f"Embedding store '{path}' does not exist; write one with `marc-keras encode`."
            )
        try:
            return pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(
                f"'{path}' is not a readable parquet embedding store: {error}"
            ) from error

    @staticmethod
    def _part_metadata(path, parquet_file):
        raw = (parquet_file.schema_arrow.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError(
                f"'{path}' has no '{METADATA_KEY.decode()}' schema metadata; it was not "
                "written by marc-keras. Re-encode it with `marc-keras encode`."
            )
        return json.loads(raw)

    def _open_sharded(self):
        if not (self.path / SUCCESS_FILE).is_file():
            raise ValueError(
                f"Sharded embedding store '{self.path}' is not finished (no {SUCCESS_FILE}); "
                "run the same `marc-keras encode` command again to finish it."
            )
        store = json.loads((self.path / STORE_FILE).read_text("utf-8"))
        missing = [part for part in store["parts"] if not (self.path / part).is_file()]
        if missing:
            raise ValueError(
                f"Sharded embedding store '{self.path}' lacks {len(missing)} of its parts "
                f"({missing[0]}, ...): run the same `marc-keras encode` command again to "
                "re-encode them."
            )
        files = [self._open_part(self.path / part) for part in store["parts"]]
        rows = sum(parquet_file.metadata.num_rows for parquet_file in files)
        if rows != store["rows"]:
            raise ValueError(
                f"Sharded embedding store '{self.path}' holds {rows} rows in its parts, but its "
                f"{STORE_FILE} records {store['rows']}: a part was changed after the encode. "
                "Run the encode again with --overwrite."
            )
        return files, {"dims": store["dims"], "manifest": store["manifest"]}

    @property
    def num_rows(self) -> int:
        return sum(parquet_file.metadata.num_rows for parquet_file in self._files)

    def read(self, column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Reads ids and one vector column (of every part, in order, for a sharded store).

        Args:
            column: a vector column name; `None` takes `compressed` when present,
                else the only one.

        Returns:
            `(ids, vectors)`: ids as a numpy array (str objects or int64) and
            vectors as float32 (N, dim).

        Raises:
            KeyError: the store has no such column (the message lists them).
        """
        column = self._column(column)
        table = pa.concat_tables(
            [parquet_file.read(columns=[ID_COLUMN, column]) for parquet_file in self._files]
        )
        ids = table.column(ID_COLUMN).to_numpy(zero_copy_only=False)
        values = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return ids, values.astype("float32", copy=False).reshape(len(ids), self.dims[column])

    def _column(self, column):
        if column is None:
            column = "compressed" if "compressed" in self.dims else next(iter(self.dims))
        if column not in self.dims:
            raise KeyError(
                f"Embedding store '{self.path}' has no vector column '{column}'; "
                f"it has {sorted(self.dims)}."
            )
        return column

    @staticmethod
    def writer(
        path: str | os.PathLike,
        dims: Mapping[str, int],
        manifest: dict | None = None,
        id_type: str = "string",
        write_npy: bool = False,
    ) -> _StoreWriter:
        """Opens a streaming writer for a new store.

        Args:
            path: the `.parquet` file to create (replaced atomically on close).
            dims: vector column name -> width, for example
                `{"compressed": 128, "original": 384}`.
            manifest: a JSON-serialisable dict (the bundle manifest) stored in
                the schema metadata.
            id_type: "string" or "int64".
            write_npy: also write `{stem}.{column}.npy` files.

        Returns:
            A context manager with `append(ids, vectors)` and `close()`.
        """
        return _StoreWriter(Path(path), dict(dims), manifest or {}, id_type, write_npy)

    @staticmethod
    def staged(
        path: str | os.PathLike,
        dims: Mapping[str, int],
        manifest: dict | None,
        id_type: str,
        key: dict,
    ) -> _StagedStore:
        """Opens a resumable writer: chunks are kept as part files until the store is finished.

        Each chunk becomes `part-00000.parquet`, `part-00001.parquet`, ... in
        the staging directory `.partial-{name}` beside `path`, each written
        whole or not at all; `progress.json` there records `key`, what the
        parts were made from. Opened again with an equal `key`, the writer
        offers those parts back (`resume`); with another key, or none
        recorded, it removes the staging directory first and says why in
        `discarded`. `finish` streams the parts into the store (and `.npy`
        files), renames it into place and removes the staging directory.

        Args:
            path: the `.parquet` store to create.
            dims: vector column name -> width.
            manifest: a JSON-serialisable dict stored in the schema metadata.
            id_type: "string" or "int64".
            key: a JSON-serialisable dict naming everything the vectors
                depend on (input file, model checksums, chunking, columns).

        Returns:
            A writer with `resume(ids)`, `write(ids, vectors, notes)`,
            `finish(write_npy)`, `rows` and `discarded` (`None`, or a
            sentence saying which staging directory was dropped and why).

        Example:
        >>> store = EmbeddingStore.staged(
        ...     "items.parquet", {"compressed": 128}, manifest, "string", key
        ... )
        >>> for ids, texts in chunks:
        ...     if store.resume(ids) is None:  # not finished by an earlier attempt
        ...         store.write(ids, encode(texts))
        >>> store.finish()
        """
        return _StagedStore(Path(path), dict(dims), manifest or {}, id_type, key)


class _StoreWriter:
    def __init__(self, path, dims, manifest, id_type, write_npy):
        self.path = path
        self.dims = dims
        self.write_npy = write_npy
        self.schema = _schema(dims, manifest, id_type)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
        self._writer = pq.ParquetWriter(self._partial, self.schema)
        self._chunks = {name: [] for name in dims} if write_npy else None
        self.rows = 0

    def append(self, ids, vectors):
        """Appends rows: `ids` (n,) and `vectors[name]` (n, dims[name]) for every column."""
        table = _table(self.schema, self.dims, ids, vectors)
        if self._chunks is not None:
            for name in self.dims:
                self._chunks[name].append(np.asarray(vectors[name], dtype="float32"))
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self):
        self._writer.close()
        if self._chunks is not None:
            for name, chunks in self._chunks.items():
                stacked = (
                    np.concatenate(chunks) if chunks else np.zeros((0, self.dims[name]), "float32")
                )
                write_atomically(
                    _npy_path(self.path, name),
                    lambda temporary, array=stacked: np.save(temporary, array),
                )
        os.replace(self._partial, self.path)

    def abort(self):
        self._writer.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, error_type, error, traceback):
        if error_type is None:
            self.close()
        else:
            self.abort()


class _StagedStore:
    def __init__(self, path, dims, manifest, id_type, key):
        self.path = path
        self.dims = dims
        self.schema = _schema(dims, manifest, id_type)
        self.directory = path.with_name(f".partial-{path.name}")
        self.key = json.loads(json.dumps(key))
        self.discarded = self._discard_stale()
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / PROGRESS_FILE).is_file():
            write_json(self.directory / PROGRESS_FILE, self.key)
        self._parts = []
        self.rows = 0

    def _discard_stale(self):
        if not self.directory.exists():
            return None
        try:
            recorded = json.loads((self.directory / PROGRESS_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            recorded = None
        if recorded == self.key:
            return None
        if isinstance(recorded, dict):
            changed = sorted(
                name
                for name in self.key.keys() | recorded.keys()
                if recorded.get(name) != self.key.get(name)
            )
            reason = f"it was made with a different {', '.join(changed)}"
        else:
            reason = f"it has no readable {PROGRESS_FILE}"
        shutil.rmtree(self.directory)
        return f"Discarded the unfinished encode in '{self.directory}': {reason}."

    def _next_part(self):
        return self.directory / f"part-{len(self._parts):05d}.parquet"

    def resume(self, ids):
        """Takes the next part from an earlier attempt if it holds exactly `ids`.

        Returns:
            The `notes` dict it was written with, or `None` when the part is
            missing or unreadable or holds other ids (then `write` it).
        """
        part = self._next_part()
        if not part.is_file():
            return None
        try:
            part_file = pq.ParquetFile(part)
            stored = part_file.read(columns=[ID_COLUMN]).column(ID_COLUMN)
        except (OSError, pa.ArrowException):
            return None
        expected = _ids_array(ids).cast(self.schema.field(ID_COLUMN).type)
        if not stored.equals(pa.chunked_array([expected])):
            return None
        self._parts.append(part)
        self.rows += len(expected)
        return json.loads(part_file.schema_arrow.metadata[PART_METADATA_KEY])

    def write(self, ids, vectors, notes=None):
        """Writes the next part: `ids` (n,), `vectors[name]` (n, dims[name]), and a small
        JSON `notes` dict."""
        part = self._next_part()
        table = _table(self.schema, self.dims, ids, vectors)
        table = table.replace_schema_metadata(
            {**self.schema.metadata, PART_METADATA_KEY: json.dumps(notes or {}).encode()}
        )
        write_atomically(part, lambda temporary: pq.write_table(table, temporary))
        self._parts.append(part)
        self.rows += table.num_rows

    def finish(self, write_npy=False):
        """Streams the parts into the store (and `.npy` files), one part in memory at a time."""
        combined = self.directory / f"combined-{self.path.name}"
        with pq.ParquetWriter(combined, self.schema) as writer:
            for part in self._parts:
                for batch in pq.ParquetFile(part).iter_batches():
                    writer.write_batch(batch)
        if write_npy:
            for name, dim in self.dims.items():
                self._write_npy(name, dim)
        os.replace(combined, self.path)
        shutil.rmtree(self.directory)

    def _write_npy(self, name, dim):
        temporary = self.directory / f"combined.{name}.npy"
        array = np.lib.format.open_memmap(
            temporary, mode="w+", dtype="float32", shape=(self.rows, dim)
        )
        start = 0
        for part in self._parts:
            column = pq.read_table(part, columns=[name]).column(name).combine_chunks()
            values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), dim)
            array[start : start + len(values)] = values
            start += len(values)
        array.flush()
        del array
        os.replace(temporary, _npy_path(self.path, name))


def load_embedding_table(
    path: str | os.PathLike, column: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Reads a store into numpy: `(ids, vectors, metadata)`.

    Args:
        path: a store written by `EmbeddingStore.writer` / `marc-keras encode`
            (a `.parquet` file), or a sharded store directory written by
            `ShardedEncoder` / `marc-keras encode --engine`.
        column: vector column (`compressed` by default when present).

    Returns:
        ids (N,) as str objects or int64, vectors float32 (N, dim), and the
        metadata dict (`dims`, `manifest`).
    """
    store = EmbeddingStore(path)
    ids, vectors = store.read(column)
    return ids, vectors, store.metadata
