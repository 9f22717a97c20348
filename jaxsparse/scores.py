"""Importance scores: a pytree mirroring params, higher = more important to keep.

``magnitude`` and ``random`` live here; the saliency scores that need a loss or a model
(``snip``, ``grasp``, ``synflow``, ``iterative_synflow``, ``movement``) live in
:mod:`jaxsparse.saliency` and are re-exported here. The contract is the same for all:
``scores`` is a float pytree shaped like the params, and :func:`jaxsparse.prune` removes
the lowest.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxsparse.filters import is_floating
from jaxsparse.masks import explicit_spec
from jaxsparse.saliency import grasp, iterative_synflow, movement, snip, synflow

__all__ = ["grasp", "iterative_synflow", "magnitude", "movement", "random", "snip", "synflow"]


def magnitude(params: chex.ArrayTree) -> chex.ArrayTree:
    """Magnitude scores ``|w|``, the criterion of iterative magnitude pruning.

    Args:
      params: a pytree of arrays.

    Returns:
      ``|w|`` for every floating leaf; other leaves (step counters, indices) come back
      unchanged: no ``where=`` filter selects a non-floating leaf for pruning, and
      :func:`jaxsparse.prune` raises ``TypeError`` if a custom one does.

    Examples:
        >>> magnitude({"w": jnp.array([-3.0, 1.0]), "n": jnp.array(7)})
        {'n': Array(7, dtype=int32, weak_type=True), 'w': Array([3., 1.], dtype=float32)}

    References:
      Han et al., "Learning both Weights and Connections", NeurIPS 2015;
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    return jax.tree.map(lambda x: jnp.abs(x) if is_floating(x) else x, params)


def _to_rank(score_fn, params):
    """What a selection ranks for ``score_fn(params)``, and whether by absolute value:
    for :func:`magnitude`, the params themselves, ``|w|`` taken after packing (so it is
    never written out leaf by leaf; see :func:`jaxsparse._packed.select`)."""
    if score_fn is magnitude:
        return params, True
    return score_fn(params), False


def random(key: jax.Array, params: chex.ArrayTree) -> chex.ArrayTree:
    """Uniform random scores in ``[0, 1)``, one independent stream per leaf.

    Pruning by these gives random pruning; combined with a per-leaf distribution
    (:mod:`jaxsparse.distributions`) it gives the random sparse networks of Liu et al.
    Non-floating leaves come back unchanged, as in :func:`magnitude`.

    Examples:
        >>> s = random(jax.random.key(0), {"w": jnp.ones((2, 3))})
        >>> s["w"].shape
        (2, 3)

    References:
      Liu et al., "The Unreasonable Effectiveness of Random Pruning", ICLR 2022.
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [
        jax.random.uniform(k, jnp.shape(x), jnp.float32, out_sharding=explicit_spec(x))
        if is_floating(x)
        else x
        for k, x in zip(keys, leaves)
    ]
    return jax.tree.unflatten(treedef, out)
