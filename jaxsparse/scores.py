"""Importance scores: a pytree mirroring params, higher = more important to keep.

Saliency scores that need a loss (SNIP, GraSP, SynFlow) build on the same contract:
``scores`` is any float pytree shaped like the params, and :func:`jaxsparse.prune`
removes the lowest.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxsparse.filters import path_str


def _check_float(params: chex.ArrayTree, where: str) -> None:
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(
                f"{where}: leaf '{path_str(path)}' has dtype {jnp.result_type(x)}; "
                "only floating leaves can be scored"
            )


def magnitude(params: chex.ArrayTree) -> chex.ArrayTree:
    """Magnitude scores ``|w|``, the criterion of iterative magnitude pruning.

    Args:
      params: a pytree of floating arrays.

    Returns:
      ``jax.tree.map(jnp.abs, params)``.

    Raises:
      TypeError: a non-floating leaf, naming its path.

    Example:
        >>> magnitude({"w": jnp.array([-3.0, 1.0])})
        {'w': Array([3., 1.], dtype=float32)}

    References:
      Han et al., "Learning both Weights and Connections", NeurIPS 2015;
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    _check_float(params, "scores.magnitude")
    return jax.tree.map(jnp.abs, params)


def random(key: jax.Array, params: chex.ArrayTree) -> chex.ArrayTree:
    """Uniform random scores in ``[0, 1)``, one independent stream per leaf.

    Pruning by these gives random pruning; combined with a per-leaf distribution
    (:mod:`jaxsparse.distributions`) it gives the random sparse networks of Liu et al.

    Example:
        >>> s = random(jax.random.key(0), {"w": jnp.ones((2, 3))})
        >>> s["w"].shape
        (2, 3)

    References:
      Liu et al., "The Unreasonable Effectiveness of Random Pruning", ICLR 2022.
    """
    _check_float(params, "scores.random")
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [jax.random.uniform(k, jnp.shape(x), jnp.float32) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, out)
