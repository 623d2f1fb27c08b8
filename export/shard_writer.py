"""Encodes one shard of a plan into a part file and its marker; the unit of work of every engine.

Imports neither Keras, torch, TensorFlow nor Ray: a Ray actor is this class,
built once per worker, and the local engine calls it in a loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping

import numpy as np

from marc_keras.export.embedding_store import rows_table
from marc_keras.export.encode_plan import resolve_filesystem
from marc_keras.export.onnx_encoder import OnnxEncoder

DONE_DIR = "_done"
TEMPORARY_PREFIX = "_tmp."
# Tests set this to a file path: the first shard written after it is absent
# kills its process mid-shard (after the temporary part, before the rename).
CRASH_ONCE_VARIABLE = "MARC_KERAS_TEST_CRASH_ONCE"


def part_name(shard_id: str) -> str:
    return f"part-{shard_id}.parquet"


def marker_name(shard_id: str) -> str:
    return f"{DONE_DIR}/{shard_id}.json"


def _write_whole(filesystem, directory, name, payload):
    # Temporary name first, then a rename: readers and resumes never meet half a file.
    temporary = f"{directory}/{TEMPORARY_PREFIX}{name.replace('/', '_')}.{uuid.uuid4().hex}"
    with filesystem.open_output_stream(temporary) as stream:
        stream.write(payload)
    return temporary


class ShardWriter:
    """Encodes shards of an `EncodePlan` with one `OnnxEncoder` and writes them as parts.

    For each shard: read its rows, refuse null ids or texts (naming file and
    row), encode the texts through the encoder's length-sorted batches,
    write `_tmp.<part>.<random>` and rename it to `part-<shard>.parquet`,
    then write `_done/<shard>.json` (rows, sha256 of the part, truncated
    texts, seconds) the same way. A shard that dies before its marker is
    encoded again by the next attempt; its stray temporary file is removed
    when the job finishes.

    Called with a batch `{"shard": [json, ...]}` it returns one summary row
    per shard, so the same object is a Ray Data actor (`map_batches`).

    Args:
        bundle_dir: the exported bundle (read once per writer).
        output_dir: the store directory (local path or URI).
        plan: `EncodePlan.to_dict()`.
        provider: ONNX Runtime provider ("cpu", "cuda", "auto").
        threads: ONNX Runtime intra-op threads; set it explicitly on Ray,
            which sets OMP_NUM_THREADS=1 in its workers.
        batch_size: texts per session run.

    Example:
    >>> writer = ShardWriter("bundles/demo", "vectors/users", plan.to_dict(), threads=2)
    >>> writer.encode_shard(plan.shards[0])["rows"]
    8192
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        output_dir: str,
        plan: Mapping,
        provider: str = "cpu",
        threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
        self.encoder = OnnxEncoder(
            bundle_dir, provider=provider, threads=threads, batch_size=batch_size
        )
        self.filesystem, self.directory = resolve_filesystem(str(output_dir))
        self.plan = dict(plan)
        self.dims = {name: int(dim) for name, dim in self.plan["outputs"].items()}
        self.manifest = self.encoder.manifest.to_dict()

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries = [self.encode_shard(json.loads(text)) for text in batch["shard"]]
        return {key: np.array([summary[key] for summary in summaries]) for key in summaries[0]}

    def _read(self, shard):
        import pyarrow as pa

        filesystem, path = resolve_filesystem(shard["path"])
        columns = [self.plan["id_column"], self.plan["text_column"]]
        if shard["format"] == "csv":
            import pyarrow.csv as pcsv

            with filesystem.open_input_stream(path) as stream:
                table = pcsv.read_csv(
                    stream,
                    convert_options=pcsv.ConvertOptions(
                        include_columns=columns,
                        column_types={self.plan["text_column"]: pa.string()},
                        strings_can_be_null=False,
                    ),
                )
            return table.select(columns)
        import pyarrow.parquet as pq

        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            metadata, start, end = parquet.metadata, shard["row_start"], shard["row_end"]
            groups, first_row, offset = [], None, 0
            for index in range(metadata.num_row_groups):
                rows = metadata.row_group(index).num_rows
                if offset < end and offset + rows > start:
                    groups.append(index)
                    first_row = offset if first_row is None else first_row
                offset += rows
            table = parquet.read_row_groups(groups, columns=columns)
        return table.slice(start - first_row, end - start)

    def _check(self, shard, ids, texts):
        import pyarrow as pa
        import pyarrow.compute as pc

        where = f"'{shard['path']}'"
        for column, values, fix in (
            (self.plan["id_column"], ids, "give every row an id"),
            (self.plan["text_column"], texts, "fill missing texts (an empty string is allowed)"),
        ):
            if values.null_count:
                row = shard["row_start"] + pc.indices_nonzero(values.is_null())[0].as_py()
                raise ValueError(
                    f"{where} row {row} has a null in column '{column}'; {fix} before encoding "
                    "(rows are counted from 0, a CSV header not counted)."
                )
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise ValueError(
                f"{where} column '{self.plan['text_column']}' holds {texts.type} values, not "
                "texts; store the texts as strings before encoding."
            )

    def encode_shard(self, shard: Mapping) -> dict:
        """Encodes one shard and writes its part and marker.

        Returns:
            A summary: `shard`, `rows`, `truncated`, `seconds`.

        Raises:
            ValueError: a null id or text, or texts that are not strings.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        started = time.perf_counter()
        table = self._read(shard)
        ids, texts = (table.column(name).combine_chunks() for name in table.column_names)
        self._check(shard, ids, texts)
        vectors = self.encoder.encode(texts.to_pylist())
        id_type = "int64" if pa.types.is_integer(ids.type) else "string"
        rows = rows_table(
            ids.to_numpy(zero_copy_only=False),
            {name: vectors[name] for name in self.dims},
            self.dims,
            self.manifest,
            id_type,
        )
        sink = pa.BufferOutputStream()
        pq.write_table(rows, sink)
        payload = sink.getvalue().to_pybytes()
        part = part_name(shard["id"])
        temporary = _write_whole(self.filesystem, self.directory, part, payload)
        crash_file = os.environ.get(CRASH_ONCE_VARIABLE)
        if crash_file and not os.path.exists(crash_file):
            open(crash_file, "w").close()
            os._exit(3)
        self.filesystem.move(temporary, f"{self.directory}/{part}")
        summary = {
            "shard": shard["id"],
            "rows": rows.num_rows,
            "truncated": int(self.encoder.last_truncated),
            "seconds": time.perf_counter() - started,
        }
        marker = {**summary, "part": part, "sha256": hashlib.sha256(payload).hexdigest()}
        marker_path = marker_name(shard["id"])
        self.filesystem.create_dir(f"{self.directory}/{DONE_DIR}", recursive=True)
        temporary = _write_whole(
            self.filesystem, self.directory, marker_path, json.dumps(marker).encode()
        )
        self.filesystem.move(temporary, f"{self.directory}/{marker_path}")
        return summary
