"""Tests for jaxsparse.checkpoint: exact state/ticket round trips, shardings, damaged
checkpoints, and an IMP run killed with SIGKILL and resumed."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxsparse as js
from jaxsparse import _storage, checkpoint
from jaxsparse.filters import path_str

WORKER = Path(__file__).with_name("_imp_worker.py")


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(16)(x))  # Dense_0: (4, 16)
        return nn.Dense(1)(h)  # Dense_1: (16, 1)


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(np.sin(x.sum(1, keepdims=True)))


# Everything jitted: eager jax ops compile one by one and would dominate the runtime.
@jax.jit
def _fresh_state_from_key(key):
    model = MLP()
    params = model.init(key, jnp.ones((1, 4)))["params"]
    return js.SparseTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2), rewind_step=2
    )


def _fresh_state(seed):
    return _fresh_state_from_key(jax.random.key(seed))


@jax.jit
def _train(state, x, y):
    def loss(p):
        return jnp.mean((state.apply_fn({"params": p}, x) - y) ** 2)

    def step(_, s):
        return s.apply_gradients(grads=jax.grad(loss)(s.params))

    return jax.lax.fori_loop(0, 5, step, state)


_imp = jax.jit(functools.partial(js.imp_round, fraction=0.3))


def _trained_state(seed=0):
    """Trained, pruned (imp_round), trained again: every leaf is non-trivial."""
    x, y = _data()
    state = _imp(_train(_fresh_state(seed), x, y))
    return _train(state, x, y)


def _assert_bit_identical(a, b):
    # Leaves and their paths; static fields (a state's tx, apply_fn) may differ.
    fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [path_str(p) for p, _ in fa] == [path_str(p) for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert (x.dtype, x.shape) == (y.dtype, y.shape), path_str(path)
        assert x.tobytes() == y.tobytes(), path_str(path)


def test_state_round_trip_is_bit_exact(tmp_path):
    state = _trained_state(0)
    assert int(state.round) == 1 and int(state.step) == 7
    checkpoint.save_state(tmp_path / "ckpt", state, extra={"loss": [0.5, 0.25], "tag": "a"})
    like = _fresh_state(1)  # other values: everything must come from the checkpoint
    restored, extra = checkpoint.load_state(tmp_path / "ckpt", like)

    _assert_bit_identical(restored, state)
    _assert_bit_identical(restored.mask, state.mask)
    assert (
        0
        < int(sum(m.sum() for m in jax.tree.leaves(state.mask)))
        < sum(m.size for m in jax.tree.leaves(state.mask))
    )
    assert (int(restored.step), int(restored.round)) == (7, 1)
    assert restored.tx is like.tx and restored.apply_fn is like.apply_fn
    assert extra == {"loss": [0.5, 0.25], "tag": "a"}
    # The restored state trains on exactly as the original would.
    x, y = _data()
    _assert_bit_identical(_train(restored, x, y), _train(state, x, y))


def test_batched_state_round_trip(tmp_path):
    x, y = _data()
    make = jax.jit(jax.vmap(_fresh_state_from_key))
    state = make(jax.random.split(jax.random.key(0), 3))
    state = jax.jit(jax.vmap(lambda s: js.imp_round(_train(s, x, y), fraction=0.5)))(state)
    assert state.params["Dense_0"]["kernel"].shape == (3, 4, 16)
    checkpoint.save_state(tmp_path / "batched", state)
    like = make(jax.random.split(jax.random.key(9), 3))
    restored, extra = checkpoint.load_state(tmp_path / "batched", like)
    _assert_bit_identical(restored, state)
    assert extra == {} and restored.round.tolist() == [1, 1, 1]
    # Seeds differ, so the three masks differ: the batch axis was kept apart.
    masks = state.mask["Dense_0"]["kernel"]
    assert not np.array_equal(masks[0], masks[1])


def test_overwrite_replaces_atomically(tmp_path):
    d = tmp_path / "ckpt"
    checkpoint.save_state(d, {"w": jnp.zeros((4, 4))}, extra={"v": 1})
    checkpoint.save_state(d, {"w": jnp.ones((4, 4))}, extra={"v": 2})
    restored, extra = checkpoint.load_state(d, {"w": jnp.zeros((4, 4))})
    assert extra == {"v": 2} and bool((restored["w"] == 1).all())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left


def test_failed_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / "ckpt"
    checkpoint.save_state(d, {"w": jnp.zeros(4)}, extra={"v": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_storage.json, "dump", crash)  # dies after orbax wrote the arrays
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_state(d, {"w": jnp.ones(4)}, extra={"v": 2})
    monkeypatch.undo()
    restored, extra = checkpoint.load_state(d, {"w": jnp.ones(4)})
    assert extra == {"v": 1} and restored["w"].tolist() == [0.0] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def _shard(tree, mesh):
    def one(x):
        spec = PartitionSpec("d") if x.ndim and x.shape[0] % 8 == 0 else PartitionSpec()
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(one, tree)


def test_restore_onto_sharding(tmp_path):
    mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
    params = {"w": jnp.arange(64.0).reshape(16, 4) - 20.0, "b": jnp.arange(16.0)}

    @functools.partial(jax.jit, static_argnums=1)
    def build(params, train):
        state = js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.adam(0.1))
        trained = state.apply_gradients(grads=jax.tree.map(jnp.ones_like, params))
        return js.imp_round(trained, fraction=0.25) if train else state

    state = build(params, True)
    like = _shard(build(jax.tree.map(jnp.zeros_like, params), False), mesh)

    checkpoint.save_state(tmp_path / "from_single", state)
    checkpoint.save_state(tmp_path / "from_sharded", _shard(state, mesh))
    for name in ("from_single", "from_sharded"):
        restored, _ = checkpoint.load_state(tmp_path / name, like)
        _assert_bit_identical(restored, state)
        for r, lk in zip(jax.tree.leaves(restored), jax.tree.leaves(like), strict=True):
            assert r.sharding == lk.sharding
    assert restored.params["w"].sharding.spec == PartitionSpec("d")
    # And back onto one device.
    single, _ = checkpoint.load_state(tmp_path / "from_sharded", state)
    assert single.params["w"].sharding == state.params["w"].sharding


def test_prng_key_leaves_round_trip(tmp_path):
    tree = {"key": jax.random.key(3), "keys": jax.random.split(jax.random.key(4), 5)}
    checkpoint.save_state(tmp_path / "k", tree)
    like = {"key": jax.random.key(0), "keys": jax.random.split(jax.random.key(0), 5)}
    restored, _ = checkpoint.load_state(tmp_path / "k", like)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree), strict=True):
        assert a.dtype == b.dtype
        assert np.array_equal(jax.random.key_data(a), jax.random.key_data(b))


def test_packed_mask_state_round_trips_and_is_told_apart(tmp_path):
    """A state whose masked() holds its mask as bits saves and loads bit for bit, and
    trains on as the original; loaded onto a bool-mask state it is refused, by path."""
    x, y = _data()

    @functools.partial(jax.jit, static_argnums=1)
    def packed_state(key, packed=True):
        model = MLP()
        params = model.init(key, jnp.ones((1, 4)))["params"]
        tx = js.masked(optax.adam(1e-2), packed=packed)
        return js.SparseTrainState.create(apply_fn=model.apply, params=params, tx=tx)

    state = _train(_imp(_train(packed_state(jax.random.key(0)), x, y)), x, y)
    assert state.opt_state.mask["Dense_0"]["kernel"].dtype == jnp.uint8  # (4, 16): bits
    checkpoint.save_state(tmp_path / "ckpt", state)
    restored, _ = checkpoint.load_state(tmp_path / "ckpt", packed_state(jax.random.key(1)))
    _assert_bit_identical(restored, state)
    _assert_bit_identical(_train(restored, x, y), _train(state, x, y))
    with pytest.raises(
        ValueError, match=r"'opt_state/mask/Dense_0/bias' has shape \(2,\) in the checkpoint"
    ):
        checkpoint.load_state(tmp_path / "ckpt", packed_state(jax.random.key(1), False))


def test_load_state_mismatch_names_the_path(tmp_path):
    checkpoint.save_state(tmp_path / "ckpt", _trained_state(0))
    model = nn.Dense(3)
    other = js.SparseTrainState.create(
        apply_fn=model.apply,
        params={
            "Dense_0": {"kernel": jnp.ones((4, 17)), "bias": jnp.ones(17)},
            "Dense_1": {"kernel": jnp.ones((17, 1)), "bias": jnp.ones(1)},
        },
        tx=optax.adam(1e-2),
        rewind_step=2,  # as saved: a state with k > 0 carries its snapshot's optimizer state
    )
    with pytest.raises(ValueError, match=r"params/Dense_0/bias' has shape \(16,\)") as e:
        checkpoint.load_state(tmp_path / "ckpt", other)
    assert str(tmp_path / "ckpt") in str(e.value)
    with pytest.raises(ValueError, match=r"does not match the structure.*params/Dense_1"):
        checkpoint.load_state(
            tmp_path / "ckpt",
            _fresh_state(0).replace(params={"Dense_0": _fresh_state(0).params["Dense_0"]}),
        )
    dtype_like = jax.tree.map(
        lambda x: x.astype(jnp.float16) if x.dtype == jnp.float32 else x, _fresh_state(0)
    )
    with pytest.raises(ValueError, match="dtype float32 in the checkpoint, float16"):
        checkpoint.load_state(tmp_path / "ckpt", dtype_like)
    # A ticket is not a state.
    checkpoint.save_ticket(tmp_path / "t", {"w": jnp.ones(3, bool)}, {"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="not a jaxsparse state checkpoint"):
        checkpoint.load_state(tmp_path / "t", {"w": jnp.ones(3)})


def test_missing_and_partial_checkpoints(tmp_path):
    like = {"w": jnp.zeros((8, 8))}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        checkpoint.load_state(tmp_path / "nowhere", like)
    d = tmp_path / "ckpt"
    checkpoint.save_state(d, {"w": jnp.ones((8, 8))})
    (d / _storage.RECORD).unlink()  # as if the save had died before completing
    with pytest.raises(ValueError, match="incomplete") as e:
        checkpoint.load_state(d, like)
    assert str(d) in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="incomplete"):
        checkpoint.load_state(tmp_path / "empty", like)


def _data_files(directory):
    files = [p for p in (directory / "arrays").rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_size)


# orbax's reader coroutines complain on their way out of a corrupt read; the error we
# raise is what the test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["garble", "bitflip", "truncate", "delete_arrays", "record"])
def test_corrupt_checkpoint_raises(tmp_path, damage):
    rng = np.random.default_rng(0)
    tree = {"w": jnp.asarray(rng.normal(size=(64, 64)).astype(np.float32)), "s": jnp.int32(3)}
    d = tmp_path / "ckpt"
    checkpoint.save_state(d, tree)
    biggest = _data_files(d)[-1]
    data = biggest.read_bytes()
    assert len(data) > 8000  # the float array's chunk, not a small metadata file
    if damage == "garble":
        biggest.write_bytes(data[:100] + rng.bytes(len(data) - 200) + data[-100:])
    elif damage == "bitflip":  # orbax reads this without complaint; the digest catches it
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        biggest.write_bytes(bytes(flipped))
    elif damage == "truncate":
        biggest.write_bytes(data[: len(data) // 2])
    elif damage == "delete_arrays":
        for p in _data_files(d):
            p.unlink()
    else:
        (d / _storage.RECORD).write_text('{"format": "jaxsparse.state", "leav')
    with pytest.raises(ValueError, match="corrupt") as e:
        checkpoint.load_state(d, jax.tree.map(jnp.zeros_like, tree))
    assert str(d) in str(e.value)
    if damage == "bitflip":
        assert "leaf 'w'" in str(e.value)


def test_silently_altered_values_are_caught(tmp_path):
    # Valid array data with the wrong values (another checkpoint's arrays swapped in):
    # orbax reads it fine, the digest does not match.
    a, b = tmp_path / "a", tmp_path / "b"
    checkpoint.save_state(a, {"w": jnp.zeros((8, 8))})
    checkpoint.save_state(b, {"w": jnp.ones((8, 8))})
    record = json.loads((a / _storage.RECORD).read_text())
    (b / _storage.RECORD).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="'w' does not match the digest"):
        checkpoint.load_state(b, {"w": jnp.zeros((8, 8))})


def test_extra_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save_state(tmp_path / "x", {"w": jnp.ones(2)}, extra={"a": object()})
    assert not list(tmp_path.iterdir())


def test_rounds_latest_restore_and_keep(tmp_path):
    root = tmp_path / "run"
    assert checkpoint.latest_round(root) is None
    assert checkpoint.restore_latest(root, {"w": jnp.zeros(2)}) is None
    for r in range(4):
        path = checkpoint.save_round(
            root, r, {"w": jnp.full(2, r, jnp.float32)}, extra={"r": r}, keep=2
        )
        assert path == root / f"round_{r:04d}"
    assert sorted(p.name for p in root.iterdir()) == ["round_0002", "round_0003"]
    # Incomplete and temporary directories of later rounds are ignored.
    (root / "round_0005").mkdir()
    (root / ".round_0007.tmp-deadbeef").mkdir()
    (root / "round_0009.bak").mkdir()
    assert checkpoint.latest_round(root) == 3
    r, state, extra = checkpoint.restore_latest(root, {"w": jnp.zeros(2)})
    assert (r, extra) == (3, {"r": 3}) and state["w"].tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match="round_index"):
        checkpoint.save_round(root, -1, {"w": jnp.zeros(2)})


def _ticket_inputs(seed=0, density=0.2):
    rng = np.random.default_rng(seed)
    params = {
        "Dense_0": {
            "kernel": rng.normal(size=(256, 256)).astype(np.float32),
            "bias": rng.normal(size=(256,)).astype(np.float32),
        },
        "Dense_1": {
            "kernel": rng.normal(size=(256, 3)).astype(np.float32),
            "bias": rng.normal(size=(3,)).astype(np.float32),
        },
    }
    params = jax.tree.map(jnp.asarray, params)
    mask = jax.tree.map(lambda p: jnp.asarray(rng.random(p.shape) < density), params)
    return mask, params


def test_ticket_round_trip_and_size(tmp_path):
    mask, params = _ticket_inputs()
    d = tmp_path / "ticket"
    checkpoint.save_ticket(d, mask, params, {"sparsity": 0.8, "round": 7})
    like = jax.tree.map(jnp.zeros_like, params)
    m2, p2, meta = checkpoint.load_ticket(d, like)
    _assert_bit_identical(m2, mask)
    _assert_bit_identical(p2, js.apply_mask(params, mask))
    for p, m in zip(jax.tree.leaves(p2), jax.tree.leaves(m2), strict=True):
        assert not np.asarray(p)[~np.asarray(m)].any()
    assert meta == {"sparsity": 0.8, "round": 7}

    n = sum(p.size for p in jax.tree.leaves(params))
    alive = int(sum(m.sum() for m in jax.tree.leaves(mask)))
    size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    # Packed mask (n / 8 bytes) + alive float32 values + a few KiB of orbax/JSON records.
    assert size < n / 8 + 4 * alive + 24_000
    assert size < 0.35 * 4 * n  # versus the dense float32 params


def test_ticket_onto_sharded_params(tmp_path):
    mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
    mask, params = _ticket_inputs(1)
    checkpoint.save_ticket(tmp_path / "t", mask, params)
    like = _shard(jax.tree.map(jnp.zeros_like, params), mesh)
    m2, p2, meta = checkpoint.load_ticket(tmp_path / "t", like)
    _assert_bit_identical(m2, mask)
    assert meta == {}
    for x, lk in zip(jax.tree.leaves(p2), jax.tree.leaves(like), strict=True):
        assert x.sharding == lk.sharding


def test_ticket_mismatch_names_the_path(tmp_path):
    mask, params = _ticket_inputs()
    checkpoint.save_ticket(tmp_path / "t", mask, params)
    wrong_shape = jax.tree.map(jnp.zeros_like, params)
    wrong_shape["Dense_1"]["kernel"] = jnp.zeros((256, 10))
    with pytest.raises(ValueError, match=r"'Dense_1/kernel' has shape \(256, 3\)"):
        checkpoint.load_ticket(tmp_path / "t", wrong_shape)
    wrong_tree = {"Dense_0": params["Dense_0"], "head": params["Dense_1"]}
    with pytest.raises(ValueError, match=r"structure.*Dense_1/bias"):
        checkpoint.load_ticket(tmp_path / "t", wrong_tree)
    with pytest.raises(ValueError, match="'Dense_0/kernel'"):
        checkpoint.save_ticket(
            tmp_path / "t2",
            {
                "Dense_0": {"kernel": mask["Dense_1"]["kernel"], "bias": mask["Dense_0"]["bias"]},
                "Dense_1": mask["Dense_1"],
            },
            params,
        )
    with pytest.raises(FileNotFoundError):
        checkpoint.load_ticket(tmp_path / "missing", params)


@settings(max_examples=12, deadline=None)
@given(
    bits=hnp.arrays(bool, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)),
    seed=st.integers(0, 99),
)
def test_ticket_round_trip_any_mask(tmp_path_factory, bits, seed):
    params = {"w": jnp.asarray(np.random.default_rng(seed).normal(size=bits.shape), jnp.float32)}
    mask = {"w": jnp.asarray(bits)}
    d = tmp_path_factory.mktemp("ticket")
    checkpoint.save_ticket(d / "t", mask, params, {"seed": seed})
    m2, p2, meta = checkpoint.load_ticket(d / "t", params)
    _assert_bit_identical(m2, mask)
    _assert_bit_identical(p2, js.apply_mask(params, mask))
    assert meta == {"seed": seed}


def _run_worker(tmp_path, ckpt, out, *extra):
    # A compilation cache shared by the three runs: only the first one compiles.
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(tmp_path / ckpt), str(tmp_path / out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.processes
def test_imp_killed_and_resumed_matches_uninterrupted(tmp_path):
    clean = _run_worker(tmp_path, "clean_ckpt", "clean_out")
    out, err = clean.communicate(timeout=120)
    assert clean.returncode == 0, err
    assert "resumed" not in out

    victim = _run_worker(tmp_path, "ckpt", "out", "--delay", "0.5")
    try:
        deadline = time.monotonic() + 120
        while (checkpoint.latest_round(tmp_path / "ckpt") or 0) < 2:
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline, "worker never reached round 2"
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    killed_at = checkpoint.latest_round(tmp_path / "ckpt")
    assert 2 <= killed_at <= 5 and not (tmp_path / "out").exists()

    resumed = _run_worker(tmp_path, "ckpt", "out")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"resumed from round {killed_at}" in out

    like = {
        "w1": jnp.zeros((16, 32)),
        "b1": jnp.zeros(32),
        "w2": jnp.zeros((32, 1)),
        "b2": jnp.zeros(1),
    }  # the worker's params
    m1, p1, meta1 = checkpoint.load_ticket(tmp_path / "out", like)
    m2, p2, meta2 = checkpoint.load_ticket(tmp_path / "clean_out", like)
    _assert_bit_identical(m1, m2)
    _assert_bit_identical(p1, p2)
    assert meta1 == meta2 and len(meta1["losses"]) == 6
    assert meta1["sparsity"] == pytest.approx(1 - 0.8**6, abs=0.01)
    assert checkpoint.latest_round(tmp_path / "ckpt") == 5  # rounds 0..5


def test_numpy_and_python_leaves_round_trip(tmp_path):
    # stored as JAX holds them: float64 -> float32, int64 -> int32 without x64
    tree = {
        "f64": np.linspace(0.0, 1.0, 5),
        "i64": np.arange(4),
        "pyint": 7,
        "pyfloat": 0.25,
        "flag": np.array([True, False]),
    }
    checkpoint.save_state(tmp_path / "c", tree, extra={"k": 1})
    like = jax.tree.map(jnp.asarray, tree)
    restored, _ = checkpoint.load_state(tmp_path / "c", like)
    for key in tree:
        np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(like[key]))
        assert restored[key].dtype == like[key].dtype
    mask = {"w": np.array([[True, False], [False, True]])}
    checkpoint.save_ticket(tmp_path / "t", mask, {"w": np.arange(4.0).reshape(2, 2)})
    m, p, _ = checkpoint.load_ticket(tmp_path / "t", {"w": jnp.zeros((2, 2))})
    np.testing.assert_array_equal(m["w"], mask["w"])
    np.testing.assert_array_equal(p["w"], [[0.0, 0.0], [0.0, 3.0]])
