"""Sharded, resumable batch encoding into a store directory, in one process or on Ray Data.

Ray is imported only by the `ray` engine (the `marc-keras[ray]` extra).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence

from marc_keras.export.bundle_manifest import MANIFEST_FILE, BundleManifest, file_sha256
from marc_keras.export.embedding_store import ID_COLUMN, STORE_FILE, SUCCESS_FILE
from marc_keras.export.encode_plan import PLAN_FILE, EncodePlan, resolve_filesystem
from marc_keras.export.shard_writer import (
    DONE_DIR,
    TEMPORARY_PREFIX,
    ShardWriter,
    marker_name,
    part_name,
)

ENGINES = ("local", "ray")


class ShardedEncoder:
    """Encodes tables of texts into a sharded embedding store: exactly one row per id.

    1. Plan (driver): list the input files, cut them into shards of about
       `shard_rows` rows (`EncodePlan`), write `_plan.json`.
    2. Execute: every shard without a marker goes to a `ShardWriter`, in
       this process (`engine="local"`) or on a Ray Data actor pool
       (`engine="ray"`: one `OnnxEncoder` per actor, built in the actor;
       ORT sessions do not pickle). A part is renamed into place before its
       marker is written, so a killed worker costs at most its shard.
    3. Finish (driver): check that the parts hold every planned row and
       each id once, write `_store.json` (parts, rows, dims, bundle
       manifest) and `_SUCCESS`, remove stray temporary files.

    Running again resumes: shards whose marker and part are there are
    skipped. A plan that differs (other bundle, inputs, columns, outputs or
    shard size) is refused unless `overwrite=True`, which starts afresh.
    `load_embedding_table(output_dir)` reads the finished store.

    Args:
        bundle_dir: a bundle from `marc-keras export` (local path; on a
            cluster, a path every worker can read).
        output_dir: the store directory (local path or pyarrow URI).
        id_column: column of ids.
        text_column: column of texts.
        outputs: vector columns to store (default: all of the bundle's).
        shard_rows: rows per shard (the work a killed worker can lose).
        batch_size: texts per ONNX Runtime run.
        overwrite: discard an output made with another plan.
        log: callable taking one progress line.

    Example:
    >>> job = ShardedEncoder("bundles/demo", "vectors/users", shard_rows=50_000)
    >>> stats = job.run(["texts/users.parquet"], engine="ray", workers=4, cpus_per_worker=4)
    >>> ids, vectors, _ = load_embedding_table("vectors/users")
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        id_column: str = "id",
        text_column: str = "text",
        outputs: Sequence[str] | None = None,
        shard_rows: int = 50_000,
        batch_size: int = 64,
        overwrite: bool = False,
        log: Callable[[str], object] = print,
    ) -> None:
        self.bundle_dir = os.path.abspath(bundle_dir)
        self.manifest = BundleManifest.load(self.bundle_dir)
        self.dims = self.manifest.output_dims(outputs)
        self.output_dir = str(output_dir)
        self.filesystem, self.directory = resolve_filesystem(self.output_dir)
        self.id_column, self.text_column = id_column, text_column
        self.shard_rows = int(shard_rows)
        self.batch_size = int(batch_size)
        self.overwrite = bool(overwrite)
        self.log = log

    def _path(self, name):
        return f"{self.directory}/{name}"

    def _is_file(self, name):
        from pyarrow import fs

        return self.filesystem.get_file_info(self._path(name)).type == fs.FileType.File

    def _read_json(self, name):
        if not self._is_file(name):
            return None
        with self.filesystem.open_input_stream(self._path(name)) as stream:
            try:
                return json.loads(stream.read())
            except ValueError:
                return None

    def _write_json(self, name, values):
        temporary = self._path(f"{TEMPORARY_PREFIX}{name}")
        with self.filesystem.open_output_stream(temporary) as stream:
            stream.write(json.dumps(values, indent=1, sort_keys=True).encode())
        self.filesystem.move(temporary, self._path(name))

    def plan(self, inputs: Sequence[str]) -> EncodePlan:
        """Makes the plan and reconciles it with the output directory (see the class)."""
        plan = EncodePlan.build(
            [str(location) for location in inputs],
            self.id_column,
            self.text_column,
            self.dims,
            file_sha256(os.path.join(self.bundle_dir, MANIFEST_FILE)),
            self.shard_rows,
        )
        recorded = self._read_json(PLAN_FILE)
        if recorded is not None:
            changed = plan.differences(EncodePlan.from_dict(recorded))
            if changed and not self.overwrite:
                raise ValueError(
                    f"'{self.output_dir}' holds an encode made with a different "
                    f"{', '.join(changed)}. Pass --overwrite to replace it, or choose "
                    "another output directory."
                )
            if changed:
                self.log(f"Overwriting '{self.output_dir}' (it differed in {', '.join(changed)}).")
                self.filesystem.delete_dir_contents(self.directory, missing_dir_ok=True)
        elif self._has_files() and not self.overwrite:
            raise ValueError(
                f"'{self.output_dir}' is not empty and was not written by a sharded encode; "
                "choose an empty or new output directory, or pass --overwrite."
            )
        elif self.overwrite:
            self.filesystem.delete_dir_contents(self.directory, missing_dir_ok=True)
        self.filesystem.create_dir(self._path(DONE_DIR), recursive=True)
        self._write_json(PLAN_FILE, plan.to_dict())
        return plan

    def _has_files(self):
        from pyarrow import fs

        if self.filesystem.get_file_info(self.directory).type != fs.FileType.Directory:
            return False
        return bool(self.filesystem.get_file_info(fs.FileSelector(self.directory)))

    def _finished_marker(self, shard):
        """The shard's marker when it and its part are there and the rows agree, else `None`."""
        marker = self._read_json(marker_name(shard["id"]))
        done = (
            marker is not None
            and self._is_file(part_name(shard["id"]))
            and (shard["rows"] is None or marker.get("rows") == shard["rows"])
        )
        return marker if done else None

    def pending(self, plan: EncodePlan) -> list[dict]:
        """Shards of `plan` without both a readable marker and its part."""
        return [shard for shard in plan.shards if self._finished_marker(shard) is None]

    def run(
        self,
        inputs: Sequence[str],
        engine: str = "local",
        provider: str = "cpu",
        threads: int | None = None,
        ray_address: str | None = None,
        workers: int = 1,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        threads_per_worker: int | None = None,
    ) -> dict:
        """Plans, encodes the pending shards with an engine, and finishes the store.

        Args:
            inputs: tables or directories (local paths or pyarrow URIs).
            engine: "local" (this process) or "ray".
            provider: ONNX Runtime provider of the local engine.
            threads: ONNX Runtime threads of the local engine.
            ray_address: an existing Ray cluster ("auto", "ray://host:10001"),
                or `None` to start a local one.
            workers: Ray actors, each holding one encoder.
            cpus_per_worker: CPUs Ray reserves per actor (fractions allowed).
            gpus_per_worker: GPUs per actor; above 0 the actors use CUDA.
            threads_per_worker: ONNX Runtime threads per actor (default:
                the CPUs it reserves, at least 1).

        Returns:
            A dict: `rows`, `shards`, `encoded_shards`, `resumed_shards`,
            `truncated`, `seconds`, `texts_per_s` (texts encoded by this call
            per second), `startup_s` (engine start), `engine`, `output`.

        Raises:
            ValueError: bad options, a refused plan, null or duplicate ids.
            RuntimeError: a shard failed on a worker (its error is quoted).
        """
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}; got '{engine}'.")
        started = time.perf_counter()
        plan = self.plan(inputs)
        pending = self.pending(plan)
        if pending and self._is_file(SUCCESS_FILE):
            # Readers must not take the store for finished while shards are redone.
            self.filesystem.delete_file(self._path(SUCCESS_FILE))
        self.log(
            f"{len(plan.shards)} shards, {len(plan.shards) - len(pending)} already done, "
            f"{len(pending)} to encode ({engine} engine)."
        )
        engine_started = time.perf_counter()
        startup_s = 0.0
        if pending and engine == "local":
            writer = ShardWriter(
                self.bundle_dir, self.output_dir, plan.to_dict(), provider, threads, self.batch_size
            )
            startup_s = time.perf_counter() - engine_started
            for index, shard in enumerate(pending):
                summary = writer.encode_shard(shard)
                self.log(
                    f"shard {index + 1}/{len(pending)} {shard['id']}: {summary['rows']} rows "
                    f"in {summary['seconds']:.1f} s"
                )
        elif pending:
            startup_s = self._run_ray(
                plan,
                pending,
                ray_address,
                int(workers),
                float(cpus_per_worker),
                float(gpus_per_worker),
                threads_per_worker,
            )
        encode_s = time.perf_counter() - engine_started - startup_s
        store = self.finish(plan)
        encoded = sum(store["shard_rows"][shard["id"]] for shard in pending)
        return {
            "rows": store["rows"],
            "shards": len(plan.shards),
            "encoded_shards": len(pending),
            "resumed_shards": len(plan.shards) - len(pending),
            "truncated": store["truncated"],
            "seconds": time.perf_counter() - started,
            "startup_s": startup_s,
            "texts_per_s": encoded / encode_s if encoded and encode_s > 0 else float("nan"),
            "engine": engine,
            "output": self.output_dir,
        }

    def _run_ray(self, plan, pending, address, workers, cpus_per_worker, gpus_per_worker, threads):
        """Encodes `pending` on a Ray Data actor pool; returns the start-up seconds."""
        try:
            import ray
        except ImportError:
            raise ImportError(
                "The ray engine needs Ray: pip install 'marc-keras[ray]' (or use --engine local)."
            ) from None
        started = time.perf_counter()
        if workers < 1 or cpus_per_worker <= 0 or gpus_per_worker < 0:
            raise ValueError(
                "workers must be >= 1, cpus_per_worker > 0 and gpus_per_worker >= 0; got "
                f"{workers}, {cpus_per_worker}, {gpus_per_worker}."
            )
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        try:
            total = ray.cluster_resources().get("CPU", 0.0)
            if workers * cpus_per_worker > total - 1:
                raise ValueError(
                    f"{workers} workers x {cpus_per_worker} CPUs would hold "
                    f"{workers * cpus_per_worker:g} of the cluster's {total:g} CPUs; leave at "
                    "least one free for Ray Data's own tasks, or the job waits forever "
                    "(ray#44687). Lower --workers or --cpus-per-worker (fractions are allowed)."
                )
            import ray.data

            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            items = [{"shard": json.dumps(shard)} for shard in pending]
            dataset = ray.data.from_items(items, override_num_blocks=len(items))
            threads = threads or max(1, math.floor(cpus_per_worker))
            results = dataset.map_batches(
                ShardWriter,
                fn_constructor_kwargs={
                    "bundle_dir": self.bundle_dir,
                    "output_dir": self.output_dir,
                    "plan": plan.to_dict(),
                    "provider": "cuda" if gpus_per_worker > 0 else "cpu",
                    "threads": threads,
                    "batch_size": self.batch_size,
                },
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker or None,
            )
            startup_s = None
            try:
                for done, row in enumerate(results.iter_rows(), start=1):
                    if startup_s is None:
                        # Ray starts the actors lazily: start-up ends where the first
                        # shard's own encoding began.
                        startup_s = time.perf_counter() - started - float(row["seconds"])
                    self.log(f"shard {done}/{len(pending)} {row['shard']}: {row['rows']} rows")
            except Exception as error:  # Ray wraps the worker's exception in its own types.
                raise RuntimeError(
                    f"A shard failed on a Ray worker: {_root_message(error)}"
                ) from error
            return startup_s
        finally:
            if started_here:
                ray.shutdown()

    def finish(self, plan: EncodePlan) -> dict:
        """Checks the parts, writes `_store.json` and `_SUCCESS`, removes stray temporary files.

        Returns:
            The store record: `parts`, `rows`, `shard_rows`, `truncated`, `dims`.

        Raises:
            ValueError: a shard is missing or holds another row count than
                planned, ids repeat across the input, or id types differ.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        from pyarrow import fs

        markers = {shard["id"]: self._finished_marker(shard) for shard in plan.shards}
        missing = [shard for shard in plan.shards if markers[shard["id"]] is None]
        if missing:
            raise ValueError(
                f"{len(missing)} shard(s) of '{self.output_dir}' are not encoded (first: "
                f"{missing[0]['id']} of '{missing[0]['path']}'); run the same command again."
            )
        id_chunks, shard_rows, truncated, id_types = [], {}, 0, set()
        for shard in plan.shards:
            marker = markers[shard["id"]]
            with self.filesystem.open_input_file(self._path(part_name(shard["id"]))) as handle:
                ids = pq.read_table(handle, columns=[ID_COLUMN]).column(ID_COLUMN)
            if len(ids) != marker["rows"]:
                raise ValueError(
                    f"Part {part_name(shard['id'])} holds {len(ids)} rows, its marker "
                    f"{marker['rows']}; delete both and run the same command again."
                )
            id_chunks.extend(ids.chunks)
            id_types.add(ids.type)
            shard_rows[shard["id"]] = len(ids)
            truncated += marker["truncated"]
        if len(id_types) > 1:
            raise ValueError(
                f"The inputs mix id types {sorted(map(str, id_types))}; give every file the "
                "same id type (all integers or all strings) and run again with --overwrite."
            )
        ids = pa.chunked_array(id_chunks)
        if len(pc.unique(ids)) != len(ids):
            counts = pc.value_counts(ids)
            repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
            shown = ", ".join(repr(value.as_py()) for value in repeated[:5])
            raise ValueError(
                f"The inputs {list(plan.inputs)} repeat {len(repeated)} id(s) in column "
                f"'{plan.id_column}' (e.g. {shown}); a store holds one vector per id. "
                "Deduplicate the input and run again with --overwrite."
            )
        store = {
            "parts": [part_name(shard["id"]) for shard in plan.shards],
            "rows": len(ids),
            "shard_rows": shard_rows,
            "truncated": truncated,
            "dims": self.dims,
            "manifest": self.manifest.to_dict(),
            "plan_sha256": hashlib.sha256(plan.to_json().encode()).hexdigest(),
        }
        self._write_json(STORE_FILE, store)
        for entry in self.filesystem.get_file_info(fs.FileSelector(self.directory, recursive=True)):
            if entry.base_name.startswith(TEMPORARY_PREFIX):
                self.filesystem.delete_file(entry.path)
        with self.filesystem.open_output_stream(self._path(SUCCESS_FILE)) as stream:
            stream.write(b"{}")
        return store


def _root_message(error):
    """The worker's own error, found inside the exceptions Ray wraps it in."""
    chain, seen = [], set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or getattr(error, "cause", None) or error.__context__
    for candidate in reversed(chain):
        if not type(candidate).__module__.startswith("ray"):
            return f"{type(candidate).__name__}: {candidate}"
    # Ray passes some errors on as text only: take the last "SomeError: message" line.
    lines = [line.strip() for item in chain for line in str(item).splitlines()]
    raised = [line for line in lines if re.match(r"^\w+(Error|Exception): ", line)]
    return raised[-1] if raised else f"{type(chain[-1]).__name__}: {chain[-1]}"
