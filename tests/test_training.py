"""make_train_fn: on-device epochs, periodic evaluation, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse as js

N = 24


def counting_setup():
    """A 'model' whose update adds, per example index, how often the batch held it."""
    data = {"i": jnp.arange(N)}

    def loss(params, batch):
        return jnp.sum(params["seen"] * jax.nn.one_hot(batch["i"], N).sum(0))

    state = js.SparseTrainState.create(
        apply_fn=None, params={"seen": jnp.zeros(N)}, tx=optax.sgd(-1.0)
    )
    return data, loss, state


def test_every_epoch_is_a_permutation_and_evals_are_stacked():
    data, loss, state = counting_setup()
    train = js.make_train_fn(
        loss, data, batch_size=6, steps=12, eval_fn=lambda p: jnp.sum(p["seen"]), eval_every=4
    )
    out, evals = jax.jit(train)(state, jax.random.key(0))
    # 12 steps of 6 = 3 epochs of 24: every example seen exactly 3 times
    np.testing.assert_array_equal(out.params["seen"], np.full(N, 3.0))
    np.testing.assert_array_equal(evals, [0.0, 24.0, 48.0, 72.0])  # before, then every 4
    assert int(out.step) == 12


def test_epochs_differ_by_key_and_drop_the_partial_batch():
    data, loss, state = counting_setup()
    train = jax.jit(js.make_train_fn(loss, data, batch_size=5, steps=4))  # 4 batches of 5
    out_a, losses = train(state, jax.random.key(1))
    out_b, _ = train(state, jax.random.key(2))
    seen_a = np.asarray(out_a.params["seen"])
    assert losses.shape == (4,)
    assert sorted(set(seen_a.tolist())) == [0.0, 1.0] and seen_a.sum() == 20  # 4 left out
    assert not np.array_equal(seen_a, np.asarray(out_b.params["seen"]))


def test_bad_arguments_are_named():
    data, loss, _ = counting_setup()
    with pytest.raises(ValueError, match=r"eval_every \(5\) must divide steps \(12\)"):
        js.make_train_fn(loss, data, batch_size=6, steps=12, eval_fn=jnp.sum, eval_every=5)
    with pytest.raises(ValueError, match="same leading axis"):
        js.make_train_fn(loss, {"x": jnp.ones(4), "y": jnp.ones(5)}, batch_size=2, steps=1)
    with pytest.raises(ValueError, match="must be positive"):
        js.make_train_fn(loss, data, batch_size=0, steps=1)
    train = js.make_train_fn(loss, data, batch_size=32, steps=1)
    with pytest.raises(ValueError, match="global batch 32 exceeds 24 examples"):
        train(counting_setup()[2], jax.random.key(0))


def test_data_given_at_call_replaces_the_data():
    """train_fn(state, key, data=...) trains on those arrays (as an argument of the jitted
    function: how data spread over processes must come in), like a train_fn built on them."""
    data, loss, state = counting_setup()
    weights = {"i": jnp.arange(N)[::-1]}  # the same shape, other values
    built_on = js.make_train_fn(loss, weights, batch_size=6, steps=5)
    given = js.make_train_fn(loss, data, batch_size=6, steps=5)
    key = jax.random.key(3)
    ref, ref_losses = jax.jit(built_on)(state, key)
    out, losses = jax.jit(lambda s, k, d: given(s, k, data=d))(state, key, weights)
    np.testing.assert_array_equal(out.params["seen"], ref.params["seen"])
    np.testing.assert_array_equal(losses, ref_losses)
    mine, _ = jax.jit(given)(state, key)
    assert not np.array_equal(mine.params["seen"], out.params["seen"])
    with pytest.raises(ValueError, match="train_fn: data"):
        given(state, key, data={"i": jnp.arange(N + 1)})
