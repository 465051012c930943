"""Multi-host training (`guie_nb.training.distributed`): 2 processes x 4 CPU devices train to the
same weights as 1 process x 8 devices; the environment parsing and the pieces it rests on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from guie_nb.training import checkpoint, distributed

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _training_helpers import make_small_data  # noqa: E402

TIMEOUT_S = 600


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("distributed"))


def test_environment_selects_the_run():
    assert distributed.initialize_args({}) is None
    assert distributed.initialize_args({"GUIE_DISTRIBUTED": "auto"}) == {}
    assert distributed.initialize_args({"GUIE_COORDINATOR": "10.0.0.2:1234", "GUIE_NUM_PROCESSES": "4",
                                        "GUIE_PROCESS_ID": "3"}) == {
        "coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3}
    with pytest.raises(ValueError, match="missing GUIE_PROCESS_ID"):
        distributed.initialize_args({"GUIE_COORDINATOR": "h:1", "GUIE_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match="not in 0..1"):
        distributed.initialize_args({"GUIE_COORDINATOR": "h:1", "GUIE_NUM_PROCESSES": "2", "GUIE_PROCESS_ID": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        distributed.initialize_args({"GUIE_COORDINATOR": "h:1", "GUIE_NUM_PROCESSES": "two", "GUIE_PROCESS_ID": "0"})
    with pytest.raises(ValueError, match="host:port"):
        distributed.initialize_args({"GUIE_COORDINATOR": "h", "GUIE_NUM_PROCESSES": "2", "GUIE_PROCESS_ID": "0"})
    with pytest.raises(ValueError, match="only value is 'auto'"):
        distributed.initialize_args({"GUIE_DISTRIBUTED": "yes"})
    with pytest.raises(ValueError, match="choose one"):
        distributed.initialize_args({"GUIE_DISTRIBUTED": "auto", "GUIE_NUM_PROCESSES": "2"})


def test_single_process_is_the_plain_run():
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    assert distributed.initialize({}) is False
    assert distributed.is_writer()
    assert distributed.process_files(["a", "b", "c"]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="0 files for 1 processes"):
        distributed.process_files([])
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec(None, "batch"))
    n = 4 * len(jax.devices())
    assert distributed.process_rows(sharding, (2, n), axis=1) == slice(0, n)
    batch = np.arange(2 * n, dtype=np.float32).reshape(2, n)
    g = distributed.global_batch(batch, sharding)
    assert g.sharding == sharding and np.array_equal(distributed.to_host(g), batch)
    counts = np.array([3, 0, 2])
    assert np.array_equal(distributed.sum_over_processes(counts), counts)
    out = distributed.embed_sharded(lambda x: x * 2, batch[0, :5, None], mesh, "batch")  # padded, then cut
    assert np.array_equal(out, batch[0, :5, None] * 2)


def test_rows_of_the_global_batch(data_dir):
    """Each process's rows, decoded alone, are the rows of the one-process batches (augmentations included)."""
    from guie_nb.data.pipeline import train_dataset
    from guie_nb.data.prepare import load_manifest, train_paths

    files = train_paths(data_dir, load_manifest(data_dir))
    kwargs = dict(size=32, batch_size=8, seed=3, epoch=1, steps=4, skip_steps=1, steps_per_execution=2)
    whole = [b[0]["image"] for b in train_dataset(files, **kwargs).as_numpy_iterator()]
    parts = [[b[0]["image"] for b in train_dataset(files, **kwargs, rows=rows).as_numpy_iterator()]
             for rows in (slice(0, 2), slice(2, 8))]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 1 and whole[0].shape[:2] == (2, 8)
    np.testing.assert_array_equal(np.concatenate([parts[0][0], parts[1][0]], axis=1), whole[0])
    with pytest.raises(ValueError, match="not a block of rows"):
        train_dataset(files, **kwargs, rows=slice(4, 9))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(data_dir: Path, out_dir: Path, processes: int, local_devices: int, *mode: str) -> list[str]:
    """Run the training in `processes` processes of `local_devices` CPU devices; their output, or a
    failure naming each process's return code and the end of its output."""
    port = _free_port()
    procs = []
    for i in range(processes):
        env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
               "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
        for k in ("GUIE_DISTRIBUTED", "GUIE_COORDINATOR", "GUIE_NUM_PROCESSES", "GUIE_PROCESS_ID"):
            env.pop(k, None)
        if processes > 1:
            env.update(GUIE_COORDINATOR=f"127.0.0.1:{port}", GUIE_NUM_PROCESSES=str(processes),
                       GUIE_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "_distributed_helpers.py"), str(data_dir), str(out_dir), str(local_devices),
             *mode],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs, failed = [], False
    for p in procs:
        try:
            outs.append(p.communicate(timeout=TIMEOUT_S)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            outs.append(p.communicate()[0] + f"\n[timed out after {TIMEOUT_S} s]")
        failed |= p.returncode != 0
    if failed:
        report = "\n".join(f"--- process {i} (return code {p.returncode}) ---\n{o[-4000:]}"
                           for i, (p, o) in enumerate(zip(procs, outs)))
        pytest.fail(f"{processes} x {local_devices} run failed:\n{report}")
    return outs


def test_two_processes_train_as_one(data_dir, tmp_path):
    """2 processes x 4 devices end with the weights, optimizer state, losses and scores of 1 x 8.

    Tolerance rtol 1e-5 / atol 1e-6 (as the resume test): the two runs execute the same SPMD
    program on the same global batches; only the cross-device gradient sum differs (XLA's
    in-process all-reduce vs gloo between processes), adding float32 rounding in another order.
    Measured (this run with a linear margin schedule): at most 1.2e-7 on the weights, 6.6e-7 on
    the momentum, while steps 2 to 4 change every variable by at least 6.5e-3 (its largest
    element). With a planted bug (every process feeding the first rows of each batch) the
    weights differed by 0.23.
    The run uses Nesterov SGD: AdamW divides each gradient by its own running scale, so a
    gradient that is zero up to rounding (the attention key bias: softmax ignores a constant added
    to every key's score) becomes an lr-sized step whose sign is the rounding's; that makes
    AdamW weights differ by ~1e-3 between any two reduction orders, one process or two.
    """
    outs = {}
    for processes, local in ((1, 8), (2, 4)):
        outs[processes] = _launch(data_dir, tmp_path / f"p{processes}", processes, local)
    assert "process 1 of 2: 4 of 8 devices" in outs[2][1]
    one, two = tmp_path / "p1", tmp_path / "p2"
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert (m1["processes"], m2["processes"]) == (1, 2) and m1["devices"] == m2["devices"] == 8
    assert m1["step"] == m2["step"] == 4
    # the same checkpoints (Orbax: each process wrote its shards), every one complete
    names = [p.name for p in checkpoint.list_checkpoints(one)]
    assert names == [p.name for p in checkpoint.list_checkpoints(two)] and len(names) == 4
    a, meta_a = checkpoint.load(checkpoint.list_checkpoints(one)[-1])
    b, meta_b = checkpoint.load(checkpoint.list_checkpoints(two)[-1])
    first, _ = checkpoint.load(checkpoint.list_checkpoints(one)[0])
    # every array of the state: weights, RNG state, margins, optimizer momentum, step
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(jax.tree.leaves(a)) > 50
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # the comparison can fail: steps 2 to 4 moved the weights far beyond the tolerance
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a["params"]),
                                                           jax.tree.leaves(first["params"]))) > 1e-3
    assert [r["loss"] for r in meta_a["history"]] == pytest.approx([r["loss"] for r in meta_b["history"]], rel=1e-5)
    # evaluation gathered over the two processes scores as the one-process evaluation
    assert m2["initial"] == pytest.approx(m1["initial"], abs=1e-6)
    assert m2["final"] == pytest.approx(m1["final"], abs=1e-6)


def test_two_processes_embed_their_shares_and_train_the_cached_neck_as_one(data_dir, tmp_path):
    """The cached-embeddings path over 2 processes x 4 devices: each process embeds every 2nd file
    of the cache (3 training shards + the 2 validation files here) on its own devices, then each
    trains the same neck + head on all cached rows (one device per process); the cache, the
    checkpoints (written by Orbax from the replicated state) and the outputs equal 1 process x 8."""
    import re

    from guie_nb.training.feature_cache import CACHE_DIR

    outs = {}
    for processes, local in ((1, 8), (2, 4)):
        outs[processes] = _launch(data_dir, tmp_path / f"p{processes}", processes, local, "cached")
    one, two = tmp_path / "p1", tmp_path / "p2"
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert (m1["processes"], m2["processes"]) == (1, 2) and m1["cached_embeddings"] and m2["cached_embeddings"]
    # the expensive part split: each process embedded its files, none twice
    shares = [int(re.search(r"\(process \d of 2\): (\d+) images embedded", o).group(1)) for o in outs[2]]
    assert min(shares) > 0 and sum(shares) == m2["cached_images"] == m2["backbone_forward_passes_this_run"]
    assert m1["backbone_forward_passes_this_run"] == m1["cached_images"] == m2["cached_images"]
    files = sorted(p.name for p in (one / CACHE_DIR).glob("*.npz"))
    assert files == sorted(p.name for p in (two / CACHE_DIR).glob("*.npz")) and len(files) == 5
    for name in files:
        a, b = np.load(one / CACHE_DIR / name), np.load(two / CACHE_DIR / name)
        np.testing.assert_array_equal(a["image_ids"], b["image_ids"])
        np.testing.assert_allclose(a["features"].astype(np.float32), b["features"].astype(np.float32),
                                   rtol=2e-3, atol=2e-3)
    # the same training: every checkpointed array, the losses and the scores
    names = [p.name for p in checkpoint.list_checkpoints(one)]
    assert names == [p.name for p in checkpoint.list_checkpoints(two)] and len(names) == 2
    a, meta_a = checkpoint.load(checkpoint.list_checkpoints(one)[-1])
    b, meta_b = checkpoint.load(checkpoint.list_checkpoints(two)[-1])
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(jax.tree.leaves(a)) > 10
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in meta_a["history"]] == pytest.approx([r["loss"] for r in meta_b["history"]], rel=1e-5)
    assert m2["final"] == pytest.approx(m1["final"], abs=1e-6)
    assert (two / "embedding.weights.h5").is_file() and (two / "history.csv").is_file()
