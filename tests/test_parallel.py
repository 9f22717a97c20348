"""The IMP loop data-parallel: pmap over 8 fake devices and jit over a Mesh give the
same ticket as one device."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

import jaxsparse as js
from tests.test_lottery import DATA, init_params, loss_fn

N_DEV = 8
GLOBAL_BATCH = 16
STEPS = 12


def single_device_run(state, key):
    train = js.make_train_fn(loss_fn, DATA, batch_size=GLOBAL_BATCH, steps=STEPS)
    return jax.jit(lambda s, k: js.lottery.run(s, train, k, rounds=3, fraction=0.3))(state, key)


def new_state():
    return js.SparseTrainState.create(
        apply_fn=None, params=init_params(jax.random.key(0)), tx=optax.adam(1e-2)
    )


def test_pmap_imp_equals_single_device():
    assert jax.device_count() == N_DEV
    state, key = new_state(), jax.random.key(3)
    ref, ref_hist = single_device_run(state, key)
    train = js.make_train_fn(
        loss_fn, DATA, batch_size=GLOBAL_BATCH // N_DEV, steps=STEPS, axis_name="data"
    )
    run = jax.pmap(
        lambda s, k: js.lottery.run(s, train, k, rounds=3, fraction=0.3), axis_name="data"
    )
    keys = jnp.broadcast_to(jax.random.key_data(key), (N_DEV, *jax.random.key_data(key).shape))
    out, hist = run(js.parallel.replicate(state), jax.random.wrap_key_data(keys))
    # every replica derived the same mask, equal to the single-device ticket
    for m in jax.tree.leaves(out.mask):
        assert all(np.array_equal(m[0], m[d]) for d in range(N_DEV))
    chex.assert_trees_all_equal(js.parallel.unreplicate(out.mask), ref.mask)
    chex.assert_trees_all_close(
        js.parallel.unreplicate(out.params), ref.params, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(hist["metrics"][0], ref_hist["metrics"], rtol=1e-4, atol=1e-5)


def test_mesh_jit_imp_equals_single_device():
    state, key = new_state(), jax.random.key(3)
    ref, _ = single_device_run(state, key)
    mesh = js.parallel.data_mesh()
    data = jax.device_put(DATA, js.parallel.replicated(mesh))
    train = js.make_train_fn(
        loss_fn,
        data,
        batch_size=GLOBAL_BATCH,
        steps=STEPS,
        batch_sharding=js.parallel.batch_sharding(mesh),
    )
    state = jax.device_put(state, js.parallel.replicated(mesh))
    out, _ = jax.jit(lambda s, k: js.lottery.run(s, train, k, rounds=3, fraction=0.3))(state, key)
    chex.assert_trees_all_equal(out.mask, ref.mask)
    chex.assert_trees_all_close(out.params, ref.params, rtol=1e-5, atol=1e-6)


def test_global_prune_of_sharded_params_equals_single_device():
    mesh = js.parallel.data_mesh()
    rng = np.random.default_rng(0)
    params = {
        "a": jnp.asarray(rng.normal(size=(64, 24)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(32, 8)), jnp.float32),
    }
    sharded = jax.device_put(params, NamedSharding(mesh, PartitionSpec("data")))
    mask = js.parallel.shard_like(js.mask_like(params), sharded)
    assert mask["a"].sharding == sharded["a"].sharding
    prune = jax.jit(lambda p, m: js.prune(js.scores.magnitude(p), m, 0.37, scope="global"))
    ref = prune(params, js.mask_like(params))
    out = prune(sharded, mask)
    chex.assert_trees_all_equal(jax.device_get(out), jax.device_get(ref))
    assert sum(int(x.sum()) for x in jax.tree.leaves(out)) == 1792 - round(0.37 * 1792)


def test_process_rows_shard_batch_and_to_host_on_one_process():
    mesh = js.parallel.data_mesh()
    sharding = js.parallel.batch_sharding(mesh)
    assert js.parallel.process_rows(40, sharding) == slice(0, 40)
    x = np.arange(80.0, dtype=np.float32).reshape(40, 2)
    batch = js.parallel.shard_batch({"x": x[js.parallel.process_rows(40, sharding)]}, sharding)
    assert batch["x"].sharding == sharding
    assert batch["x"].addressable_shards[1].data.shape == (5, 2)
    host = js.parallel.to_host({"x": batch["x"], "n": 3, "a": np.ones(2)})
    assert isinstance(host["x"], np.ndarray)
    np.testing.assert_array_equal(host["x"], x)
    assert host["n"] == 3 and host["a"].tolist() == [1.0, 1.0]


def test_run_resumable_with_data_given_equals_closed_over(tmp_path):
    state, key = new_state(), jax.random.key(5)
    other = jax.tree.map(lambda x: x[::-1], DATA)  # the data an argument brings
    train = js.make_train_fn(loss_fn, DATA, batch_size=GLOBAL_BATCH, steps=4)
    built_on = js.make_train_fn(loss_fn, other, batch_size=GLOBAL_BATCH, steps=4)
    ref, ref_hist = js.lottery.run_resumable(
        state, built_on, key, rounds=1, directory=tmp_path / "a", fraction=0.3
    )
    out, hist = js.lottery.run_resumable(
        state, train, key, rounds=1, directory=tmp_path / "b", data=other, fraction=0.3
    )
    chex.assert_trees_all_equal(out.mask, ref.mask)
    chex.assert_trees_all_equal(out.params, ref.params)
    np.testing.assert_array_equal(hist["metrics"], ref_hist["metrics"])
