"""``slimming``: the L1 sparsity penalty of network slimming, as an optax transform."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsparse.filters import Filter, path_str, resolve_filter


def slimming(strength: float | jax.Array = 1e-4, *, where: Filter) -> optax.GradientTransformation:
    """Adds ``strength * sign(x)`` to the gradient of every leaf ``x`` that ``where`` picks.

    This is the subgradient of ``strength * sum(|x|)`` over the chosen leaves: BatchNorm
    scales ``gamma`` in network slimming and Early-Bird (``where=r"BatchNorm_\\d+/scale"``),
    or the slimming coefficients of heads and FFN units in EarlyBERT. Put it *before* the
    optimizer, so the penalty goes through it as a loss gradient would; it chains with
    :func:`jaxsparse.masked` either way (a pruned ``x`` is 0 and ``sign(0) = 0``)::

        tx = js.masked(optax.chain(js.slimming(1e-4, where="scale"), optax.sgd(0.1)))

    Args:
      strength: the L1 coefficient (the papers' ``1e-4``), ``>= 0``.
      where: which leaves are penalised: a regex searched in the leaf path, a callable
        ``(path, leaf) -> bool``, or ``None`` for kernels (``ndim >= 2``). Only floating
        leaves are ever penalised.

    Returns:
      An optax ``GradientTransformation`` (stateless) whose ``update`` needs ``params``.

    Raises:
      ValueError: a negative or non-finite ``strength``; ``update`` called without
        ``params``.
      TypeError: a ``where`` that is not a filter.

    Examples:
        >>> tx = js.slimming(0.5, where="scale")
        >>> params = {"bn": {"scale": jnp.array([2.0, -1.0, 0.0]), "bias": jnp.ones(3)}}
        >>> grads = jax.tree.map(jnp.zeros_like, params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["bn"]["scale"], updates["bn"]["bias"]
        (Array([ 0.5, -0.5,  0. ], dtype=float32), Array([0., 0., 0.], dtype=float32))

    References:
      Liu et al., "Learning Efficient Convolutional Networks through Network Slimming",
      ICCV 2017; You et al., "Drawing Early-Bird Tickets", ICLR 2020; Chen et al.,
      "EarlyBERT", ACL 2021.
    """
    if not isinstance(strength, jax.core.Tracer) and (
        np.ndim(strength) != 0 or not np.isfinite(strength) or float(strength) < 0
    ):
        raise ValueError(f"slimming: strength must be a finite scalar >= 0, got {strength!r}")
    pred = resolve_filter(where)

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(
        updates: optax.Updates, state: optax.OptState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.OptState]:
        if params is None:
            raise ValueError(
                "slimming: update needs params (the penalty is strength * sign(params)); "
                "call tx.update(grads, state, params)"
            )

        def one(path, g, p):
            if not pred(path_str(path), p):
                return g
            return g + (strength * jnp.sign(p)).astype(g.dtype)

        return jax.tree_util.tree_map_with_path(one, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)
