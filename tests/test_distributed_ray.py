"""Sharded indexes on a local single-node Ray cluster: build and search equal the in-process executor; faults."""

from __future__ import annotations

import importlib
import os
import signal

import numpy as np
import pytest
from synth import clustered_collection

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the test cluster listens on loopback only
ray = pytest.importorskip("ray")

from plaidx.distributed import (  # noqa: E402
    ShardBuildError,
    ShardedIndex,
    ShardUnavailableError,
    build,
)

build_module = importlib.import_module("plaidx.distributed.build")
pipeline_module = importlib.import_module("plaidx.distributed.pipeline")
ray_backend = importlib.import_module("plaidx.distributed.ray_backend")
NLIST = 32


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray cluster for the whole test session (start and stop cost seconds each)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 << 20)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def data():
    docs, queries, _ = clustered_collection(n_docs=160, dim=32, mean_len=20, n_queries=12, q_len=8, seed=5)
    return docs, queries


@pytest.fixture(scope="module")
def local_index(data, tmp_path_factory):
    return build(tmp_path_factory.mktemp("local") / "s", data[0], 3, nlist=NLIST, seed=4)


def _same_shards(a, b, stats: bool = False) -> None:
    assert a.manifest["codec"]["hash"] == b.manifest["codec"]["hash"]
    assert [sh["runs"] for sh in a.manifest["shards"]] == [sh["runs"] for sh in b.manifest["shards"]]
    for x, y in zip(a.shards, b.shards):
        for name in ("codes", "residuals", "doc_offsets", "doc_ids") + (("avg_residual",) if stats else ()):
            np.testing.assert_array_equal(x._snap.a[name], y._snap.a[name])
        if stats:  # the probe of a shard written from compressed rows is the one an ordinary build reads
            assert x._snap.manifest["build"]["residual_norm_mean"] == y._snap.manifest["build"]["residual_norm_mean"]


@pytest.fixture
def shard_writes(monkeypatch):
    """The jobs the driver hands to write_shard (what travels to the shard writers)."""
    seen = []
    real = ray_backend.RayRunner.map

    def spy(self, fn, jobs, fail_soft=False):
        if fn.__name__ == "write_shard":
            seen.extend(jobs)
        return real(self, fn, jobs, fail_soft)

    monkeypatch.setattr(ray_backend.RayRunner, "map", spy)
    return seen


def _only_compressed(job, dim: int) -> None:
    """A write_shard job holds the shard's compressed rows (and a probe of at most PROBE_TOKENS tokens)."""
    from plaidx.engine.build import PROBE_TOKENS

    _, rows, lengths, probe = job[:4]
    schema = rows.schema()
    assert schema.names == ["codes", "residuals", "n_tokens", "norm"]
    kinds = [str(t) for t in schema.types]
    assert "uint16" in kinds[0] and "uint8" in kinds[1] and "float32" not in " ".join(kinds), kinds
    n_tokens = int(lengths.sum())
    embeddings = n_tokens * dim * 4
    compressed = n_tokens * (2 + dim // 2)  # nbits=4: a code and d/2 bytes of residuals per token
    assert rows.size_bytes() <= compressed + 80 * lengths.size < embeddings / 2, (rows.size_bytes(), embeddings)
    probe_tokens = sum(x.shape[0] for x in probe.values())
    assert probe_tokens <= min(n_tokens, PROBE_TOKENS + int(lengths.max()))


def test_ray_build_and_search_equal_the_local_executor(ray_cluster, data, local_index, tmp_path):
    docs, queries = data
    with build(tmp_path / "s", docs, 3, nlist=NLIST, seed=4, executor="ray", actor_cpus=0.25,
               replicas=2) as remote:
        _same_shards(remote, local_index)
        for kwargs in ({"exact": True}, {}, {"doc_ids": [0, 50, 51, 159]}):
            s1, i1 = remote.search(queries, 10, **kwargs)
            s2, i2 = local_index.search(queries, 10, **kwargs)
            np.testing.assert_array_equal(i1, i2)
            np.testing.assert_allclose(s1, s2, atol=1e-6)
        assert remote.search(queries, 10)[1].shape == (12, 10)  # the second replica answers the same
        np.testing.assert_array_equal(remote.search(queries, 10)[1], local_index.search(queries, 10)[1])
        # writes through a Ray handle restart its actors on the new shard folders
        ids = remote.add(docs[:3])
        assert ids.tolist() == [160, 161, 162]
        hit = remote.search(docs[1][None], 2, exact=True)[1]
        assert sorted(hit[0].tolist()) == [1, 161]  # the same embeddings under two ids


@pytest.mark.parametrize("kind", ["arrays", "dataset"])
def test_a_worker_killed_mid_build_then_a_rerun_equals_an_uninterrupted_build(ray_cluster, data, local_index,
                                                                               tmp_path, monkeypatch, kind,
                                                                               shard_writes):
    """A worker dies while it writes shard 1 (compressing it from arrays, or copying its compressed rows from a
    dataset): the re-run keeps the finished shards, redoes shard 1 only and equals an uninterrupted build."""
    docs, queries = data
    if kind == "arrays":
        module, name, source = build_module, "build_shard", docs

        def dying(shard_dir, part, *rest):  # pickled by value into the worker
            if "shard-0001" in shard_dir:
                def stream():
                    for i, doc in enumerate(part):
                        if i == len(part) // 2:
                            os._exit(1)  # the worker process dies in the middle of the shard
                        yield doc
                return real(shard_dir, stream(), *rest)
            return real(shard_dir, part, *rest)
    else:
        module, name = pipeline_module, "write_shard"
        source = ray.data.from_items([{"embedding": d} for d in docs], override_num_blocks=6)

        class DiesMidway:  # compressed rows whose reader dies after the first batch (pickled by value)
            def __init__(self, rows):
                self.rows = rows

            def iter_batches(self, **kwargs):
                for i, batch in enumerate(self.rows.iter_batches(**kwargs)):
                    if i == 1:
                        os._exit(1)
                    yield batch
                os._exit(1)

        def dying(shard_dir, rows, *rest):
            return real(shard_dir, DiesMidway(rows) if "shard-0001" in shard_dir else rows, *rest)
    real = getattr(module, name)
    monkeypatch.setattr(module, name, dying)
    with pytest.raises(ShardBuildError, match=r"shards \[1\]"):
        build(tmp_path / "s", source, 3, nlist=NLIST, seed=4, executor="ray", retries=0)
    kept = os.stat(tmp_path / "s" / "shard-0000.g000001" / "manifest.json").st_ino
    monkeypatch.setattr(module, name, real)
    del shard_writes[:]
    with build(tmp_path / "s", source, 3, nlist=NLIST, seed=4, executor="ray", actor_cpus=0.25) as resumed:
        assert os.stat(tmp_path / "s" / "shard-0000.g000001" / "manifest.json").st_ino == kept
        _same_shards(resumed, local_index)
        np.testing.assert_array_equal(resumed.search(queries, 10)[1], local_index.search(queries, 10)[1])
    if kind == "dataset":  # only shard 1 was compressed and written again
        assert [job[0].rsplit("/", 1)[-1] for job in shard_writes] == ["shard-0001.g000001"]
        assert int(shard_writes[0][1].sum("n_tokens")) == resumed.shards[1].n_tokens


def test_an_actor_killed_mid_search_is_retried_or_fails_clearly(ray_cluster, data, local_index):
    _, queries = data
    expect = local_index.search(queries, 10)
    with ShardedIndex.open(local_index.path, executor="ray", actor_cpus=0.25) as remote:
        remote.search(queries, 10)
        os.kill(remote.executor.actor_pids()[1][0], signal.SIGKILL)
        s, i = remote.search(queries, 10)  # the dead actor restarts (a reopen) and the call is retried
        np.testing.assert_array_equal(i, expect[1])
        np.testing.assert_allclose(s, expect[0], atol=1e-6)
    with ShardedIndex.open(local_index.path, executor="ray", actor_cpus=0.25) as fragile:
        fragile.search(queries, 10)
        shard2 = fragile.executor.actors[str(fragile.shard_paths[2])][0]
        ray.kill(shard2, no_restart=True)  # gone for good: every attempt fails
        with pytest.raises(ShardUnavailableError, match=r"(?s)shard 2 .* no partial result"):
            fragile.search(queries, 10)


def test_search_actors_the_cluster_cannot_place_fail_the_open_and_never_hang_a_search(ray_cluster, local_index,
                                                                                       monkeypatch):
    monkeypatch.setattr(ray_backend.RaySearch, "start_wait_s", 5.0)
    with pytest.raises(ShardUnavailableError, match=r"3 shards x 2 replicas x 0.5 CPU need 3 CPUs and the cluster "
                                                    r"has 2; open with fewer replicas or a smaller actor_cpus"):
        ShardedIndex.open(local_index.path, executor="ray", replicas=2, actor_cpus=0.5)
    with ShardedIndex.open(local_index.path, executor="ray", actor_cpus=0.25) as fits:  # the actors were released
        assert fits.search(local_index.reconstruct(5)[None], 1, exact=True)[1][0, 0] == 5


def test_a_dataset_of_embeddings_is_compressed_on_the_workers_and_equals_a_local_build(ray_cluster, data,
                                                                                        local_index, tmp_path,
                                                                                        shard_writes):
    docs, queries = data
    ds = ray.data.from_items([{"embedding": d, "title": f"t{i}"} for i, d in enumerate(docs)], override_num_blocks=4)
    with build(tmp_path / "r", ds, 3, nlist=NLIST, seed=4, executor="ray", actor_cpus=0.25) as remote:
        _same_shards(remote, local_index, stats=True)
        np.testing.assert_array_equal(remote.search(queries, 10)[1], local_index.search(queries, 10)[1])
    assert len(shard_writes) == 3
    for job in shard_writes:
        assert set(job[1].schema().names) == {"codes", "residuals", "n_tokens", "norm"}
        assert all(x.dtype == np.float32 for x in job[3].values())  # only the probe comes as embeddings
    with build(tmp_path / "l", ds, 3, nlist=NLIST, seed=4) as local:  # the local executor: the same pipeline
        _same_shards(local, local_index, stats=True)


def test_the_compression_stage_skips_the_documents_of_finished_shards(data, local_index):
    """The map_batches stage compresses exactly as an ordinary build does, and leaves out (unread) the rows
    whose keys a resumed build did not ask for."""
    docs, _ = data
    codec_dir = str(local_index.path / local_index.manifest["codec"]["dir"])
    col = np.empty(6, dtype=object)
    col[:] = docs[:6]
    batch = {"embedding": col}
    keys = np.array([pipeline_module._key(d, False)[0] for d in docs[1:6:2]], np.uint64)
    stage = pipeline_module._Compress("embedding", False, None, codec_dir, np.sort(keys), None)
    out = stage(batch)
    shard0 = local_index.shards[0]._snap.a
    for i in range(6):
        if i % 2:
            lo, hi = shard0["doc_offsets"][i], shard0["doc_offsets"][i + 1]
            np.testing.assert_array_equal(out["codes"][i], shard0["codes"][lo:hi])
            np.testing.assert_array_equal(out["residuals"][i], shard0["residuals"][lo:hi])
            assert out["n_tokens"][i] == hi - lo
        else:
            assert out["n_tokens"][i] == 0 and out["codes"][i].size == 0


def test_bad_datasets_fail_clearly(ray_cluster, data, tmp_path):
    docs, _ = data
    with pytest.raises(ValueError, match="neither 'embedding'.*nor 'text'"):
        build(tmp_path / "a", ray.data.from_items([{"body": "x"}] * 4), 2, executor="ray")
    with pytest.raises(ValueError, match="already has embeddings"):
        build(tmp_path / "b", ray.data.from_items([{"embedding": d} for d in docs[:4]]), 2, model="m")
    mixed = [{"embedding": d} for d in docs[:5]] + [{"embedding": docs[5][:, :16]}]
    with pytest.raises(ValueError, match=r"documents\[5\] has dimension 16, documents\[0\] has 32"):
        build(tmp_path / "c", ray.data.from_items(mixed), 2, executor="ray")
    with pytest.raises(Exception, match="expected a float array"):
        build(tmp_path / "d", ray.data.from_items([{"embedding": "not a vector"}] * 4), 2, executor="ray")
    with pytest.raises(ValueError, match="encode_concurrency must be a positive integer"):
        build(tmp_path / "e", ray.data.from_items([{"text": "a b"}] * 4), 2, executor="ray", encode_concurrency=0)


def test_a_ray_dataset_of_texts_is_encoded_on_the_workers(ray_cluster, tmp_path, shard_writes):
    """Texts encoded and compressed in one map_batches stage on the workers: the shard writers receive only
    compressed rows, and the shards equal a local build of the driver's own embeddings."""
    from encoder_fixtures import WORDS, make_tiny_checkpoint

    import plaidx

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", "stanford", query_length=16, document_length=32)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(40)]
    ds = ray.data.from_items([{"text": t} for t in texts], override_num_blocks=2)
    with build(tmp_path / "s", ds, 2, nbits=4, nlist=16, executor="ray", model=str(ckpt),
               actor_cpus=0.25) as remote:
        model = plaidx.ColBERT.from_pretrained(str(ckpt))
        local = build(tmp_path / "l", model.encode_documents(texts), 2, nbits=4, nlist=16)
        _same_shards(remote, local)  # encoded in a worker, bit for bit what the driver encodes
        assert remote.manifest["build"]["n_tokens"] == local.manifest["build"]["n_tokens"]
    assert len(shard_writes) == 2
    for job in shard_writes:
        _only_compressed(job, model.dim)


def test_the_index_folder_layer_serves_shards_from_ray_actors_when_asked(ray_cluster, data, local_index,
                                                                        monkeypatch):
    from plaidx.rag.folder import IndexFolder

    _, queries = data
    local = IndexFolder(local_index.path)
    assert local.engine.executor.name == "local"
    monkeypatch.setenv("PLAIDX_SHARDED_EXECUTOR", "ray")  # what `plaidx serve` reads from its environment
    remote = IndexFolder(local_index.path)
    try:
        assert remote.engine.executor.name == "ray"
        assert remote.search(queries, 5) == local.search(queries, 5)
    finally:
        remote.engine.close()
    monkeypatch.setenv("PLAIDX_SHARDED_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="PLAIDX_SHARDED_EXECUTOR='spark'"):
        IndexFolder(local_index.path)


_STARTS_ITS_OWN = """
import json, os, sys
import numpy as np
import psutil
import ray  # imported before plaidx is asked to start a cluster
from plaidx.distributed import build
rng = np.random.default_rng(0)
docs = [rng.standard_normal((8, 16)).astype(np.float32) for _ in range(20)]
sh = build(sys.argv[1], docs, 2, nlist=8, executor="ray", init={"num_cpus": 1}, actor_cpus=0.25)
listen = set()
for p in psutil.Process().children(recursive=True):
    try:
        listen |= {c.laddr.ip for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        pass
print(json.dumps({"nodes": [n["NodeManagerAddress"] for n in ray.nodes()], "listen": sorted(listen),
                  "usage_stats": os.environ.get("RAY_USAGE_STATS_ENABLED"), "documents": len(sh)}))
"""


def test_a_cluster_plaidx_starts_listens_on_loopback_without_usage_stats(tmp_path):
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    out = subprocess.run([sys.executable, "-c", _STARTS_ITS_OWN, str(tmp_path / "s")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["documents"] == 20 and got["usage_stats"] == "0" and got["nodes"] == ["127.0.0.1"]
    assert got["listen"] and set(got["listen"]) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, got["listen"]
