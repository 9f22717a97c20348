"""A compiled training round: epochs of on-device shuffled minibatches in ``lax.scan``,
with periodic evaluation, ready for :func:`jaxsparse.lottery.run`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jaxsparse.filters import check_structure


def make_train_fn(
    loss_fn: Callable[[chex.ArrayTree, Any], jax.Array],
    data: Any,
    *,
    batch_size: int,
    steps: int,
    eval_fn: Callable[[chex.ArrayTree], Any] | None = None,
    eval_every: int | None = None,
    axis_name: str | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable[[Any, jax.Array], tuple[Any, Any]]:
    """Builds ``train_fn(state, key, data=None) -> (state, evals)`` training ``steps`` updates.

    Each epoch draws a fresh permutation of the examples on device (the last partial
    batch of an epoch is dropped); the whole round is a ``lax.scan``, so it jits, vmaps
    over seeds or arms and runs inside :func:`jaxsparse.lottery.run`.

    ``train_fn`` trains on ``data`` unless given other arrays of the same structure and
    shapes as its ``data`` argument. Across processes pass them that way, as an
    argument of the jitted function (``lottery.run_resumable(..., data=...)`` does): a
    jitted function cannot close over an array spread over several processes.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss; ``batch`` has ``data``'s structure.
      data: a pytree of arrays sharing a leading example axis, kept on device.
      batch_size: examples per update (per replica when ``axis_name`` is set).
      steps: updates per round.
      eval_fn: optional ``params -> metrics`` (a pytree of scalars), run before training
        and after every ``eval_every`` updates: ``evals`` stacks its results with a
        leading axis of ``steps // eval_every + 1`` (index i = after ``i * eval_every``
        updates). Without it, ``evals`` holds the per-step training loss.
      eval_every: must divide ``steps``.
      axis_name: for ``pmap``: each replica takes its slice of a global batch of
        ``batch_size * n_replicas`` (same permutation everywhere, same key on every
        replica) and gradients are ``pmean``-ed, so every replica computes the identical
        update and mask.
      batch_sharding: for ``jit`` over a ``Mesh``: the sharding each batch is
        constrained to (e.g. ``NamedSharding(mesh, P("data"))``).

    Examples:
        >>> data = {"x": jnp.linspace(-1, 1, 32)[:, None], "y": jnp.linspace(-2, 2, 32)}
        >>> def loss(p, b):
        ...     return jnp.mean((b["x"] @ p["w"] - b["y"][:, None]) ** 2)
        >>> train = make_train_fn(loss, data, batch_size=8, steps=40)
        >>> state = js.SparseTrainState.create(
        ...     apply_fn=None, params={"w": jnp.zeros((1, 1))}, tx=optax.sgd(0.5))
        >>> state, losses = jax.jit(train)(state, jax.random.key(0))
        >>> losses.shape, round(float(state.params["w"][0, 0]), 2)
        ((40,), 2.0)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (each IMP round
      trains the masked network).
    """
    given = data
    n = jax.tree.leaves(data)[0].shape[0]
    for leaf in jax.tree.leaves(data):
        if leaf.shape[:1] != (n,):
            raise ValueError("make_train_fn: every leaf of data needs the same leading axis")
    if steps <= 0 or batch_size <= 0:
        raise ValueError(
            f"make_train_fn: steps and batch_size must be positive, got {steps}, {batch_size}"
        )
    if eval_fn is not None and (not eval_every or steps % eval_every):
        raise ValueError(f"make_train_fn: eval_every ({eval_every}) must divide steps ({steps})")

    def indices(key, replicas):
        global_bs = batch_size * replicas
        per_epoch = n // global_bs
        if per_epoch == 0:
            raise ValueError(f"make_train_fn: global batch {global_bs} exceeds {n} examples")
        epochs = -(-steps // per_epoch)
        perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, epochs))
        idx = perms[:, : per_epoch * global_bs].reshape(-1, global_bs)[:steps]
        if axis_name is not None:
            lo = jax.lax.axis_index(axis_name) * batch_size
            idx = jax.lax.dynamic_slice_in_dim(idx, lo, batch_size, axis=1)
        return idx

    def step(state, idx, data):
        batch = jax.tree.map(lambda x: x[idx], data)
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        if axis_name is not None:
            loss, grads = jax.lax.pmean((loss, grads), axis_name)
        return state.apply_gradients(grads=grads), loss

    def train_fn(state, key, data=data):
        if data is not given:
            check_structure(data, given, name="train_fn: data", like_name="make_train_fn's data")
        replicas = 1 if axis_name is None else jax.lax.axis_size(axis_name)
        idx = indices(key, replicas)
        step_on = functools.partial(step, data=data)
        if eval_fn is None:
            return jax.lax.scan(step_on, state, idx)

        def chunk(state, idx_chunk):
            state, _ = jax.lax.scan(step_on, state, idx_chunk)
            return state, eval_fn(state.params)

        first = eval_fn(state.params)
        state, evals = jax.lax.scan(chunk, state, idx.reshape(-1, eval_every, idx.shape[-1]))
        evals = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, evals)
        return state, evals

    return train_fn
