"""The plan of a sharded encode: which rows of which input files each shard encodes.

Imports neither Keras, torch, TensorFlow nor Ray: the driver of a cluster job
plans with pyarrow alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence

TABLE_SUFFIXES = (".parquet", ".csv")
PLAN_FILE = "_plan.json"


def resolve_filesystem(location: str):
    """`(pyarrow filesystem, path)` for a local path or a URI (s3://, gs://, hdfs://, file://)."""
    from pyarrow import fs

    if "://" in location:
        return fs.FileSystem.from_uri(location)
    from pathlib import Path

    return fs.LocalFileSystem(), str(Path(location).resolve())


def _list_tables(location):
    """The .parquet / .csv files at a location (a file, or a directory searched recursively)."""
    from pyarrow import fs

    filesystem, path = resolve_filesystem(location)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"Input '{location}' does not exist.")
    if info.type == fs.FileType.File:
        if not path.lower().endswith(TABLE_SUFFIXES):
            raise ValueError(f"Input '{location}' must be a .parquet or .csv table.")
        return [(filesystem, path, info.size)]
    found = [
        (filesystem, entry.path, entry.size)
        for entry in filesystem.get_file_info(fs.FileSelector(path, recursive=True))
        if entry.type == fs.FileType.File
        and entry.path.lower().endswith(TABLE_SUFFIXES)
        and not entry.base_name.startswith(("_", "."))
    ]
    if not found:
        raise ValueError(f"Input directory '{location}' holds no .parquet or .csv table.")
    return sorted(found, key=lambda entry: entry[1])


def _row_ranges(group_rows, shard_rows):
    """Row ranges of about `shard_rows` rows that start and end on row-group bounds
    where the groups allow it; a group larger than `shard_rows` is cut inside."""
    ranges, start, end = [], 0, 0
    for rows in group_rows:
        if end > start and end - start + rows > shard_rows:
            ranges.append((start, end))
            start = end
        end += rows
        while end - start > shard_rows:
            ranges.append((start, start + shard_rows))
            start += shard_rows
    if end > start:
        ranges.append((start, end))
    return ranges


def _shard_id(path, start, end, size):
    return hashlib.sha256(f"{path}\0{start}\0{end}\0{size}".encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class EncodePlan:
    """Shards of the input tables, fixed before any encoding, and what they are encoded with.

    A shard is a row range `[row_start, row_end)` of one input file; its id
    is a hash of the file's path, the range and the file's size, so a plan
    made again over the same files gives the same ids, and a changed file
    gives new ones. Parquet files are cut on row-group bounds (a row group
    larger than `shard_rows` is cut inside and then read once per shard);
    a CSV file is one shard, since its rows cannot be reached without
    reading what comes before them. Saved as `_plan.json` in the output
    directory, where it decides whether a second run may resume.

    Args:
        inputs: the locations as given (paths or URIs).
        id_column: column of ids.
        text_column: column of texts.
        outputs: vector column -> width.
        bundle_sha256: sha256 of the bundle's manifest file.
        shard_rows: the rows per shard asked for.
        shards: dicts with `id`, `path` (a URI or an absolute local path),
            `format`, `size`, `row_start`, `row_end`, `rows`.

    Example:
    >>> plan = EncodePlan.build(["texts/"], "id", "text", {"compressed": 128}, sha, 50_000)
    >>> len(plan.shards), plan.rows
    (40, 2000000)
    """

    inputs: tuple[str, ...]
    id_column: str
    text_column: str
    outputs: dict
    bundle_sha256: str
    shard_rows: int
    shards: tuple[dict, ...]

    @classmethod
    def build(
        cls,
        inputs: Sequence[str],
        id_column: str,
        text_column: str,
        outputs: dict,
        bundle_sha256: str,
        shard_rows: int,
    ) -> EncodePlan:
        """Lists the input tables and cuts them into shards (reads parquet footers only).

        Raises:
            FileNotFoundError: an input does not exist.
            ValueError: no tables, a file of another kind, a missing column,
                an unreadable parquet file, or `shard_rows` < 1.
        """
        if int(shard_rows) < 1:
            raise ValueError(f"shard_rows must be at least 1; got {shard_rows}.")
        if not inputs:
            raise ValueError("Give at least one input table or directory.")
        shards = []
        for location in inputs:
            for filesystem, path, size in _list_tables(location):
                shown = path if "://" not in location else location.split("://")[0] + "://" + path
                shards += cls._file_shards(
                    filesystem, path, shown, size, id_column, text_column, int(shard_rows)
                )
        if not shards:
            raise ValueError(f"The inputs {list(inputs)} hold no rows to encode.")
        return cls(
            inputs=tuple(str(location) for location in inputs),
            id_column=id_column,
            text_column=text_column,
            outputs=dict(outputs),
            bundle_sha256=bundle_sha256,
            shard_rows=int(shard_rows),
            shards=tuple(shards),
        )

    @staticmethod
    def _file_shards(filesystem, path, shown, size, id_column, text_column, shard_rows):
        import pyarrow as pa

        if path.lower().endswith(".csv"):
            ranges, kind = [(0, None)], "csv"
            names = None
        else:
            import pyarrow.parquet as pq

            try:
                with filesystem.open_input_file(path) as handle:
                    parquet = pq.ParquetFile(handle)
                    metadata, names = parquet.metadata, parquet.schema_arrow.names
            except (pa.ArrowInvalid, OSError) as error:
                raise ValueError(f"'{shown}' is not a readable parquet file: {error}") from error
            group_rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
            ranges, kind = _row_ranges(group_rows, shard_rows), "parquet"
        if names is not None:
            missing = [name for name in (id_column, text_column) if name not in names]
            if missing:
                raise ValueError(
                    f"'{shown}' has no column(s) {missing}; its columns are {names}. "
                    "Name them with --id-column / --text-column."
                )
        return [
            {
                "id": _shard_id(shown, start, end, size),
                "path": shown,
                "format": kind,
                "size": size,
                "row_start": start,
                "row_end": end,
                "rows": None if end is None else end - start,
            }
            for start, end in ranges
        ]

    @property
    def rows(self) -> int | None:
        """Rows of all shards, `None` while a CSV shard's count is unknown."""
        counts = [shard["rows"] for shard in self.shards]
        return None if None in counts else sum(counts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> EncodePlan:
        values = dict(values)
        values["inputs"] = tuple(values["inputs"])
        values["shards"] = tuple(values["shards"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    def differences(self, other: EncodePlan) -> list[str]:
        """Names of what differs from `other` (empty when a run may resume from it)."""
        fields = ("id_column", "text_column", "outputs", "bundle_sha256")
        changed = [name for name in fields if getattr(self, name) != getattr(other, name)]
        if [shard["id"] for shard in self.shards] != [shard["id"] for shard in other.shards]:
            changed.append("shards (input files or shard_rows)")
        return changed
