"""Saliency scores for pruning at initialisation and while fine-tuning (SNIP, GraSP,
SynFlow, movement), re-exported by :mod:`jaxsparse.scores`.

Every score is a pytree mirroring the params, *higher = keep*, so that
:func:`jaxsparse.prune` (which removes the lowest) applies them as their papers do.
Only floating leaves are differentiated and scored; other leaves (step counters,
indices) come back unchanged, as in :func:`jaxsparse.scores.magnitude`. All are pure and
jittable; ``loss_fn(params, batch)`` and ``apply_fn(params, x)`` are the user's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jaxsparse.filters import Filter, check_structure, is_floating
from jaxsparse.masks import apply_mask, mask_like
from jaxsparse.pruning import _prune_to

LossFn = Callable[[chex.ArrayTree, Any], jax.Array]


def _split(
    params: chex.ArrayTree,
) -> tuple[list[jax.Array], Callable[[list[jax.Array]], chex.ArrayTree]]:
    """(floating leaves, merge): ``merge(new_floats)`` rebuilds the tree around them."""
    leaves, treedef = jax.tree.flatten(params)
    flags = [is_floating(x) for x in leaves]

    def merge(floats):
        it = iter(floats)
        return jax.tree.unflatten(treedef, [next(it) if f else x for x, f in zip(leaves, flags)])

    return [x for x, f in zip(leaves, flags) if f], merge


def _loss_of_floats(
    name: str, loss_fn: LossFn, params: chex.ArrayTree, batch: Any
) -> tuple[
    list[jax.Array],
    Callable[[list[jax.Array]], chex.ArrayTree],
    Callable[[list[jax.Array]], jax.Array],
]:
    """The loss as a function of the floating leaves, after checking ``batch`` fits."""
    floats, merge = _split(params)
    try:
        out = jax.eval_shape(loss_fn, params, batch)
    except Exception as err:
        shapes = jax.tree.map(jnp.shape, batch)
        raise ValueError(
            f"{name}: loss_fn(params, batch) fails on this batch (batch leaf shapes "
            f"{shapes}): {type(err).__name__}: {err}"
        ) from err
    if jnp.shape(out) != ():
        raise ValueError(f"{name}: loss_fn must return a scalar loss, got shape {out.shape}")
    return floats, merge, lambda fs: loss_fn(merge(fs), batch)


def snip(loss_fn: LossFn, params: chex.ArrayTree, batch: Any) -> chex.ArrayTree:
    """SNIP connection sensitivity ``|g ⊙ w|``, ``g`` the loss gradient on one batch.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: the (initial) params.
      batch: one mini-batch, whatever ``loss_fn`` takes.

    Returns:
      A pytree mirroring ``params``: ``|∂L/∂w · w|`` on floating leaves.

    Raises:
      ValueError: ``loss_fn`` fails on ``batch`` (the message names ``batch`` and its
        leaf shapes) or does not return a scalar.

    Examples:
        >>> loss = lambda p, b: jnp.sum((b @ p["w"]) ** 2)
        >>> snip(loss, {"w": jnp.array([[1.0], [-2.0]])}, jnp.ones((1, 2)))["w"]
        Array([[2.],
               [4.]], dtype=float32)

    References:
      Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
      ICLR 2019.
    """
    floats, merge, loss = _loss_of_floats("snip", loss_fn, params, batch)
    grads = jax.grad(loss)(floats)
    return merge([jnp.abs(g * w) for g, w in zip(grads, floats)])


def grasp(loss_fn: LossFn, params: chex.ArrayTree, batch: Any) -> chex.ArrayTree:
    """GraSP scores ``+w ⊙ Hg`` (higher = keep), ``H`` the Hessian, ``g`` the gradient.

    *Sign.* GraSP estimates how removing a weight changes the gradient norm:
    ``Δ(gᵀg) ≈ 2 δᵀHg``, and removing weight i is ``δ = −w_i e_i``, so the paper's score
    is ``S(−w) = −w ⊙ Hg`` and it removes the weights with the *highest* ``S`` (their
    removal reduces gradient flow least, or increases it). Here, where every score is
    "higher = keep" and :func:`jaxsparse.prune` removes the lowest, the score is its
    negation, ``+w ⊙ Hg``: pruning the lowest of ours is pruning the highest of theirs.
    Unlike SNIP's, the score is signed, never take its absolute value.

    ``Hg`` is a forward-over-reverse Hessian-vector product (``jax.jvp`` of
    ``jax.grad``) with ``g`` held constant, as the paper's second backward pass of
    ``gᵀ∇L``. The paper's temperature (200 on the logits) belongs in ``loss_fn``.

    Args:
      loss_fn: ``(params, batch) -> scalar`` loss.
      params: the (initial) params.
      batch: one mini-batch (the paper: 10 or 25 samples a class).

    Returns:
      A pytree mirroring ``params``: ``w · (H g)`` on floating leaves.

    Raises:
      ValueError: ``loss_fn`` fails on ``batch`` (naming ``batch``) or is not scalar.

    Examples:
        >>> loss = lambda p, b: jnp.sum((b * p["w"]) ** 2)  # H = diag(2 b²)
        >>> grasp(loss, {"w": jnp.array([1.0, -2.0])}, jnp.array([1.0, 3.0]))["w"]
        Array([   4., 1296.], dtype=float32)

    References:
      Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient
      Flow", ICLR 2020.
    """
    floats, merge, loss = _loss_of_floats("grasp", loss_fn, params, batch)
    grad_fn = jax.grad(loss)
    g = jax.lax.stop_gradient(grad_fn(floats))
    _, hg = jax.jvp(grad_fn, (floats,), (g,))
    return merge([w * h for w, h in zip(floats, hg)])


def _layer_scale(w: jax.Array) -> jax.Array:
    """A positive factor that makes ``|W|`` map an all-ones input to about all-ones:
    its mean fan-in sum (``Σ|W| / shape[-1]``, the output axis last as in Flax)."""
    if w.ndim < 2:
        return jnp.ones((), w.dtype)
    c = jnp.sum(w, dtype=jnp.float32) / w.shape[-1]
    return jnp.where(c > 0, c, 1.0).astype(w.dtype)


def synflow(
    apply_fn: Callable[[chex.ArrayTree, jax.Array], Any],
    params: chex.ArrayTree,
    input_shape: Sequence[int],
    *,
    rescale: bool = True,
) -> chex.ArrayTree:
    """SynFlow scores ``|∂R/∂w ⊙ w|``, data-free: ``R = Σ apply_fn(|params|, 1)``.

    *Overflow.* ``R`` is a product over layers (``1ᵀ Π|W_l| 1`` for a linear chain) and
    leaves float32 range in deep nets. With ``rescale=True`` each kernel (``ndim >= 2``)
    is divided by its mean fan-in sum ``c_l = Σ|W_l| / n_out``, so each layer maps
    all-ones to about all-ones and nothing overflows. For a network positively
    homogeneous in each kernel (linear, conv, ReLU, pooling; biases zero, as Flax
    initialises them; no normalisation layer) every score is then divided by the same
    constant ``Π_l c_l``: no ranking changes, layerwise or global. Nets with non-zero
    biases or normalisation layers get approximate scores; pass ``rescale=False`` for
    the plain float32 computation (exact, but it may overflow to ``inf``).

    Args:
      apply_fn: ``(params, x) -> output`` (e.g. ``lambda p, x: model.apply({"params":
        p}, x)``); run it with batch norm in inference mode, as the paper does.
      params: the params (already masked in iterative use).
      input_shape: the full input shape, batch axis included (e.g. ``(1, 28, 28, 1)``).
      rescale: per-kernel rescaling against overflow (see above).

    Returns:
      A non-negative pytree mirroring ``params`` (scaled by ``1 / Π c_l`` if ``rescale``).

    Raises:
      ValueError: ``apply_fn`` fails on an input of ``input_shape``.

    Examples:
        >>> apply = lambda p, x: x @ p["w1"] @ p["w2"]
        >>> p = {"w1": jnp.array([[1.0, -2.0]]), "w2": jnp.array([[3.0], [0.5]])}
        >>> synflow(apply, p, (1, 1), rescale=False)["w1"]
        Array([[3., 1.]], dtype=float32)

    References:
      Tanaka et al., "Pruning neural networks without any data by iteratively
      conserving synaptic flow", NeurIPS 2020.
    """
    floats, merge = _split(params)
    x = jnp.ones(tuple(input_shape), jnp.float32)
    try:
        jax.eval_shape(apply_fn, params, x)
    except Exception as err:
        raise ValueError(
            f"synflow: apply_fn(params, x) fails on an input of input_shape "
            f"{tuple(input_shape)}: {type(err).__name__}: {err}"
        ) from err
    pos = [jnp.abs(w) for w in floats]
    if rescale:
        pos = [w / _layer_scale(w) for w in pos]

    def flow(fs):
        out = apply_fn(merge(fs), x)
        return sum((jnp.sum(o, dtype=jnp.float32) for o in jax.tree.leaves(out)), 0.0)

    grads = jax.grad(flow)(pos)
    return merge([jnp.abs(g * w) for g, w in zip(grads, pos)])


def iterative_synflow(
    apply_fn: Callable[[chex.ArrayTree, jax.Array], Any],
    params: chex.ArrayTree,
    input_shape: Sequence[int],
    density: float | jax.Array,
    *,
    rounds: int = 100,
    mask: chex.ArrayTree | None = None,
    scope: str = "global",
    where: Filter = None,
    rescale: bool = True,
) -> chex.ArrayTree:
    """SynFlow's iterative pruning: ``rounds`` rounds of score, then prune to density
    ``density ** (k / rounds)`` (k = 1..rounds), re-scoring the masked params each time.

    Round k leaves ``round(n · (1 − density ** (k / rounds)))`` prunable weights dead
    (``n`` over all prunable leaves, or per leaf with ``scope="layerwise"``); the last
    round ``round(n · (1 − density))`` exactly (Python's rounding). The rounds run in a
    ``lax.fori_loop``, so the program is compiled once however many there are.

    Args:
      apply_fn: as in :func:`synflow`.
      params: the initial params.
      input_shape: as in :func:`synflow`.
      density: the final fraction of alive prunable weights, in ``(0, 1]``.
      rounds: number of rounds, ``>= 1`` (the paper: 100).
      mask: a starting mask (default dense); pruned weights stay pruned.
      scope: ``"global"`` (the paper) or ``"layerwise"``.
      where: which leaves may be pruned (default: kernels, ``ndim >= 2``, not biases).
      rescale: as in :func:`synflow`.

    Returns:
      The final mask, a ``bool`` pytree mirroring ``params``.

    Raises:
      ValueError: ``density`` outside ``(0, 1]``, ``rounds < 1``, or as :func:`synflow`.

    Examples:
        >>> apply = lambda p, x: x @ p["w1"] @ p["w2"]
        >>> p = {"w1": jnp.arange(1.0, 7.0).reshape(2, 3), "w2": jnp.ones((3, 2))}
        >>> m = iterative_synflow(apply, p, (1, 2), 0.5, rounds=4)
        >>> int(m["w1"].sum() + m["w2"].sum())
        6

    References:
      Tanaka et al., "Pruning neural networks without any data by iteratively
      conserving synaptic flow", NeurIPS 2020.
    """
    if not isinstance(density, jax.core.Tracer) and not 0.0 < float(density) <= 1.0:
        raise ValueError(f"iterative_synflow: density must be in (0, 1], got {density}")
    if int(rounds) < 1:
        raise ValueError(f"iterative_synflow: rounds must be >= 1, got {rounds}")
    mask = mask_like(params) if mask is None else mask

    def one_round(m, target):
        s = synflow(apply_fn, apply_mask(params, m), input_shape, rescale=rescale)
        return _prune_to(s, m, target, scope=scope, where=where)

    def body(k, m):
        d = jnp.power(jnp.float32(density), (k + 1).astype(jnp.float32) / rounds)
        return one_round(m, jnp.clip(1.0 - d, 0.0, 1.0))

    mask = jax.lax.fori_loop(0, int(rounds) - 1, body, mask)
    return one_round(mask, 1.0 - density)


def movement(grads_sum: chex.ArrayTree, params: chex.ArrayTree) -> chex.ArrayTree:
    """Movement scores ``−w ⊙ Σ_t g_t`` for pruning while fine-tuning (higher = keep).

    A weight scores high when training moves it away from zero (``w`` and ``−g`` of the
    same sign). Accumulate ``grads_sum`` over the fine-tuning steps since the scores
    were last reset (the paper's ``S = −Σ_t (∂L/∂W)^(t) W^(t)`` uses the weight at each
    step; with the current weight, as here, it is the common first-order shortcut).

    Args:
      grads_sum: the summed gradients, mirroring ``params``.
      params: the current params.

    Returns:
      A pytree mirroring ``params``: ``−w · Σg`` on floating leaves.

    Raises:
      ValueError: ``grads_sum`` does not mirror ``params`` (naming the path).

    Examples:
        >>> movement({"w": jnp.array([1.0, 1.0])}, {"w": jnp.array([-2.0, 3.0])})["w"]
        Array([ 2., -3.], dtype=float32)

    References:
      Sanh et al., "Movement Pruning: Adaptive Sparsity by Fine-Tuning", NeurIPS 2020.
    """
    check_structure(grads_sum, params, name="movement: grads_sum")
    return jax.tree.map(lambda g, w: -w * g if is_floating(w) else w, grads_sum, params)
