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
