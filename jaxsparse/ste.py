"""Straight-through masks: the masked weights forward, the gradient to every weight.

When to use which:

* :func:`jaxsparse.masked` (the optimizer keeps pruned weights at exactly 0 and their
  gradients and moments at 0) for *fixed* or slowly changing masks: lottery tickets,
  pruning at initialisation, SET/RigL, gradual pruning. A pruned weight is gone until
  something regrows it.
* :func:`straight_through` for STE training (JaxPruner's ``*_ste`` methods, SR-STE for
  N:M): the *dense* weights keep training with a plain optimizer, the forward pass sees
  them masked, and the mask is recomputed from them on a schedule (e.g. every step,
  ``js.prune(js.scores.magnitude(params), js.mask_like(params), 0.9)``), so a pruned
  weight whose dense value grows back in magnitude re-enters the mask. SR-STE adds a
  decay ``λ (1 − m) ⊙ w`` of the pruned weights to the gradient; add it to ``grads``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxsparse.filters import is_floating
from jaxsparse.masks import check_mask


@jax.custom_vjp
def _ste(w: jax.Array, m: jax.Array) -> jax.Array:
    return jnp.where(m, w, jnp.zeros((), w.dtype))


def _ste_fwd(w, m):
    return _ste(w, m), None


def _ste_bwd(_, g):
    return g, None


_ste.defvjp(_ste_fwd, _ste_bwd)


def straight_through(params: chex.ArrayTree, mask: chex.ArrayTree) -> chex.ArrayTree:
    """``params`` masked in the forward pass, with the identity as its gradient.

    The value is ``where(mask, params, 0)``; the backward pass (a ``custom_vjp``) hands
    the cotangent to *every* weight, pruned or not, so ``jax.grad`` of a loss of
    ``straight_through(params, mask)`` is the dense model's gradient at the masked point.
    Non-floating leaves pass through.

    Args:
      params: the dense params.
      mask: a ``bool`` pytree mirroring ``params`` (data: a new mask never recompiles).

    Returns:
      The masked params, differentiable straight through the mask.

    Raises:
      ValueError, TypeError: ``mask`` does not mirror ``params`` (naming the path).

    Examples:
        >>> p, m = {"w": jnp.array([2.0, -3.0])}, {"w": jnp.array([True, False])}
        >>> loss = lambda q: jnp.sum(straight_through(q, m)["w"] * jnp.array([1.0, 5.0]))
        >>> float(loss(p)), jax.grad(loss)(p)["w"]
        (2.0, Array([1., 5.], dtype=float32))

    References:
      Bengio et al., "Estimating or Propagating Gradients Through Stochastic Neurons",
      2013; Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks
      From Scratch", ICLR 2021 (SR-STE).
    """
    check_mask(mask, params, name="straight_through: mask")
    return jax.tree.map(lambda w, m: _ste(w, m) if is_floating(w) else w, params, mask)
