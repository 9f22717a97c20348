"""The controls of the lottery-ticket papers: what a winning ticket is measured against.

* :func:`random_reinit`: the ticket's mask, fresh initial weights;
* :func:`reprune`: the ticket's initial weights, a random mask of the same densities.

Each maps a ticket state to a control state (``control(state, key) -> state``), the
shape :func:`jaxsparse.lottery.run` takes in ``controls=``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jaxsparse.filters import check_structure
from jaxsparse.masks import apply_mask
from jaxsparse.optim import set_mask
from jaxsparse.pruning import shuffle_mask
from jaxsparse.state import mask_moments, rewind, snapshot_opt_state, snapshot_step

State = Any  # duck-typed like jaxsparse.lottery's states


def random_reinit(
    state: State, init_fn: Callable[[jax.Array], chex.ArrayTree], key: jax.Array
) -> State:
    """The random re-initialisation control: same mask, fresh initial weights.

    ``init_fn(key)`` returns new params (the same structure); they are masked and become
    the snapshot. Training restarts where the ticket's does, at the snapshot's step k,
    with the snapshot's optimizer state but every per-weight moment zeroed (fresh, as
    ``tx.init`` makes them) and schedule counts kept at k, so under a learning-rate
    schedule the control and the ticket train over the same steps. With k = 0 this is
    ``tx.init`` exactly.

    Examples:
        >>> state = js.SparseTrainState.create(
        ...     apply_fn=None, params={"w": jnp.ones((2, 3))}, tx=optax.sgd(0.1),
        ...     mask={"w": jnp.array([[1, 0, 1], [0, 1, 0]], bool)})
        >>> new = random_reinit(state, lambda k: {"w": jax.random.normal(k, (2, 3))},
        ...                     jax.random.key(1))
        >>> bool((new.params["w"][~state.mask["w"]] == 0).all())
        True

    References:
      Frankle & Carbin, ICLR 2019 (winning tickets vs. random reinitialisation).
    """
    mask = state.mask
    fresh = init_fn(key)
    check_structure(fresh, mask, name="random_reinit: init_fn(key)", like_name="the params")
    params = apply_mask(fresh, mask)
    no_weight = jax.tree.map(jnp.zeros_like, mask)
    opt_state = set_mask(mask_moments(snapshot_opt_state(state), no_weight, params), mask)
    return state.replace(
        params=params,
        opt_state=opt_state,
        step=snapshot_step(state),
        rewind_params=fresh,
        # a state that carries no snapshot optimizer state (k = 0) makes it from `fresh`
        rewind_opt_state=None if state.rewind_opt_state is None else opt_state,
    )


def reprune(state: State, key: jax.Array, *, scope: str = "layerwise") -> State:
    """The random re-pruning control: same initial weights, a shuffled mask with the
    same per-layer (or global) density.

    Examples:
        >>> state = js.SparseTrainState.create(
        ...     apply_fn=None, params={"w": jnp.ones((4, 4))}, tx=optax.sgd(0.1),
        ...     mask={"w": jnp.eye(4, dtype=bool)})
        >>> int(reprune(state, jax.random.key(0)).params["w"].sum())
        4

    References:
      Frankle & Carbin, ICLR 2019 (random re-pruning control).
    """
    mask = shuffle_mask(key, state.mask, scope=scope, where=state.where)
    return rewind(state, mask)
