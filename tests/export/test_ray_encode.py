"""The Ray engine on a local cluster (2 CPUs, dashboard off): equal to the local engine,
exactly one row per id after a worker dies, clear errors instead of retries or hangs."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from marc_keras.export.embedding_store import load_embedding_table
from marc_keras.export.shard_writer import CRASH_ONCE_VARIABLE
from marc_keras.export.sharded_encoder import ShardedEncoder

ray = pytest.importorskip("ray")

# Generous: a hang, not a slow machine, is what this catches (the bundle export in
# the fixture alone takes a minute on a busy 2-core machine).
pytestmark = pytest.mark.timeout(600)

WORDS = ("the", "a", "movie", "user", "likes", "film", "action", "comedy", "drama", "stars")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    # Workers read the crash hook's variable from the environment they start
    # with; its file exists (hook disarmed) until a test removes it.
    crash_file = tmp_path_factory.mktemp("ray") / "crashed-once"
    crash_file.write_text("")
    previous = os.environ.get(CRASH_ONCE_VARIABLE)
    os.environ[CRASH_ONCE_VARIABLE] = str(crash_file)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield crash_file
    ray.shutdown()
    if previous is None:
        os.environ.pop(CRASH_ONCE_VARIABLE)
    else:
        os.environ[CRASH_ONCE_VARIABLE] = previous


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, rng.integers(0, 15))) for _ in range(120)]
    path = tmp_path_factory.mktemp("inputs") / "texts.parquet"
    pq.write_table(pa.table({"id": np.arange(120), "text": texts}), path, row_group_size=20)
    return path


def job(bundle, output, **kwargs):
    return ShardedEncoder(bundle, output, shard_rows=40, log=lambda line: None, **kwargs)


def ray_run(bundle, output, inputs, **kwargs):
    return job(bundle, output, **kwargs).run([str(inputs)], engine="ray", workers=1)


def test_ray_output_equals_the_local_engine(ray_cluster, tiny_bundle, inputs, tmp_path):
    bundle, _ = tiny_bundle
    job(bundle, tmp_path / "local").run([str(inputs)], threads=1)
    stats = ray_run(bundle, tmp_path / "ray", inputs)
    assert (stats["rows"], stats["encoded_shards"], stats["engine"]) == (120, 3, "ray")
    for column in ("compressed", "original"):
        local_ids, local, _ = load_embedding_table(tmp_path / "local", column)
        ray_ids, remote, _ = load_embedding_table(tmp_path / "ray", column)
        assert ray_ids.tolist() == local_ids.tolist() == list(range(120))
        np.testing.assert_allclose(remote, local, atol=1e-6)


def test_a_worker_killed_mid_shard_is_restarted_and_no_row_is_lost_or_doubled(
    ray_cluster, tiny_bundle, inputs, tmp_path
):
    bundle, _ = tiny_bundle
    ray_cluster.unlink()  # arms the hook: the first shard's process exits mid-shard
    stats = ray_run(bundle, tmp_path / "store", inputs)
    assert ray_cluster.exists(), "the crash hook did not fire"
    assert stats["rows"] == 120
    ids, _, _ = load_embedding_table(tmp_path / "store")
    assert sorted(ids.tolist()) == list(range(120))
    assert not list((tmp_path / "store").rglob("_tmp.*"))


def test_an_exception_in_a_worker_fails_the_job_with_its_message(
    ray_cluster, tiny_bundle, tmp_path
):
    bundle, _ = tiny_bundle
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a film", None, "movie"]}), path)
    with pytest.raises(RuntimeError, match=r"Ray worker: .*row 1 has a null in column 'text'"):
        ray_run(bundle, tmp_path / "store", path)
    assert not (tmp_path / "store" / "_SUCCESS").exists()


def test_a_layout_holding_every_cpu_is_refused(ray_cluster, tiny_bundle, inputs, tmp_path):
    bundle, _ = tiny_bundle
    with pytest.raises(ValueError, match=r"2 workers x 1.0 CPUs would hold 2 of the cluster's 2"):
        job(bundle, tmp_path / "store").run([str(inputs)], engine="ray", workers=2)
    stats = job(bundle, tmp_path / "store").run(
        [str(inputs)], engine="ray", workers=2, cpus_per_worker=0.5
    )
    assert stats["rows"] == 120


def test_a_deleted_shard_is_re_encoded_alone_and_another_plan_is_refused(
    ray_cluster, tiny_bundle, inputs, tmp_path
):
    bundle, _ = tiny_bundle
    output = tmp_path / "store"
    ray_run(bundle, output, inputs)
    shard = sorted((output / "_done").iterdir())[1].stem
    (output / f"part-{shard}.parquet").unlink()
    (output / "_done" / f"{shard}.json").unlink()
    assert ray_run(bundle, output, inputs)["encoded_shards"] == 1
    other_plan = ShardedEncoder(bundle, output, shard_rows=30, log=lambda line: None)
    with pytest.raises(ValueError, match=r"different shards .*--overwrite"):
        other_plan.run([str(inputs)], engine="ray")
