"""The embedding store: vectors by id in parquet (plus optional .npy), read with numpy.

Written by `OnnxEncoder.encode_file` and `marc-keras encode`; read by the
Keras and TFRS rankers (`marc-keras rank`). Imports neither Keras, torch nor
TensorFlow, so any process can read a store.
"""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from marc_keras.atomic_files import write_atomically

ID_COLUMN = "id"
METADATA_KEY = b"marc_keras"


def _npy_path(path, column):
    return path.with_name(f"{path.stem}.{column}.npy")


def _ids_array(ids):
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return pa.array(ids.astype("int64"))
    return pa.array([str(value) for value in ids.tolist()], type=pa.string())


class EmbeddingStore:
    """A parquet file of `id` plus fixed-size float32 list columns, one per vector kind.

    The schema metadata (key `marc_keras`) holds the exporting bundle's
    manifest and the vector widths, so a reader knows where vectors came from
    and how wide they are without reading a row. `EmbeddingStore.writer`
    streams chunks into a temporary file that becomes the store only on
    `close`, so an interrupted encode leaves no half-written store; with
    `write_npy=True` each vector column is also saved as `{stem}.{column}.npy`
    beside it (row i = row i of the parquet).

    Args:
        path: the `.parquet` file.

    Example:
    >>> with EmbeddingStore.writer("items.parquet", {"compressed": 128}, manifest) as store:
    ...     store.append(["1", "2"], {"compressed": vectors})  # (2, 128)
    >>> ids, vectors, metadata = load_embedding_table("items.parquet")
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"Embedding store '{self.path}' does not exist; write one with `marc-keras encode`."
            )
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"'{self.path}' is not a readable parquet embedding store: {error}") from error
        raw = (self._file.schema_arrow.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError(
                f"'{self.path}' has no '{METADATA_KEY.decode()}' schema metadata; it was not "
                "written by marc-keras. Re-encode it with `marc-keras encode`."
            )
        self.metadata = json.loads(raw)
        self.dims = {name: int(dim) for name, dim in self.metadata["dims"].items()}

    @property
    def num_rows(self):
        return self._file.metadata.num_rows

    def read(self, column=None):
        """Reads ids and one vector column.

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
        table = self._file.read(columns=[ID_COLUMN, column])
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
    def writer(path, dims, manifest=None, id_type="string", write_npy=False):
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


class _StoreWriter:
    def __init__(self, path, dims, manifest, id_type, write_npy):
        if id_type not in ("string", "int64"):
            raise ValueError(f"id_type must be 'string' or 'int64'; got '{id_type}'.")
        if not dims:
            raise ValueError("An embedding store needs at least one vector column.")
        self.path = path
        self.dims = dims
        self.write_npy = write_npy
        metadata = {METADATA_KEY: json.dumps({"dims": dims, "manifest": manifest}).encode()}
        fields = [pa.field(ID_COLUMN, pa.string() if id_type == "string" else pa.int64())]
        fields += [pa.field(name, pa.list_(pa.float32(), dim)) for name, dim in dims.items()]
        self.schema = pa.schema(fields, metadata=metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
        self._writer = pq.ParquetWriter(self._partial, self.schema)
        self._chunks = {name: [] for name in dims} if write_npy else None
        self.rows = 0

    def append(self, ids, vectors):
        """Appends rows: `ids` (n,) and `vectors[name]` (n, dims[name]) for every column."""
        missing = set(self.dims) - set(vectors)
        if missing:
            raise ValueError(f"append() is missing vector columns {sorted(missing)}.")
        ids_array = _ids_array(ids)
        if ids_array.type != self.schema.field(ID_COLUMN).type:
            ids_array = ids_array.cast(self.schema.field(ID_COLUMN).type)
        columns = [ids_array]
        for name, dim in self.dims.items():
            array = np.ascontiguousarray(vectors[name], dtype="float32")
            if array.shape != (len(ids_array), dim):
                raise ValueError(
                    f"Vectors '{name}' have shape {array.shape}; the store expects "
                    f"({len(ids_array)}, {dim})."
                )
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), dim))
            if self._chunks is not None:
                self._chunks[name].append(array)
        self._writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))
        self.rows += len(ids_array)

    def close(self):
        self._writer.close()
        if self._chunks is not None:
            for name, chunks in self._chunks.items():
                stacked = np.concatenate(chunks) if chunks else np.zeros((0, self.dims[name]), "float32")
                write_atomically(_npy_path(self.path, name), lambda temporary, array=stacked: np.save(temporary, array))
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


def load_embedding_table(path, column=None):
    """Reads a store into numpy: `(ids, vectors, metadata)`.

    Args:
        path: a store written by `EmbeddingStore.writer` / `marc-keras encode`.
        column: vector column (`compressed` by default when present).

    Returns:
        ids (N,) as str objects or int64, vectors float32 (N, dim), and the
        metadata dict (`dims`, `manifest`).
    """
    store = EmbeddingStore(path)
    ids, vectors = store.read(column)
    return ids, vectors, store.metadata
