"""Dynamic sparse training: SET and RigL as pure updates of a train state.

Both are meant to run *inside* a jitted train step, after ``apply_gradients``::

    grads = jax.grad(loss_fn)(state.params, batch)    # dense: dead weights get one too
    state = state.apply_gradients(grads=grads)
    state = dst.rigl(state, grads, every=100, end=75_000)

The state is duck-typed: ``.params``, ``.opt_state`` (holding a :func:`jaxsparse.masked`
state, whose mask is read and replaced), ``.step`` and ``.replace``;
:class:`jaxsparse.SparseTrainState` and a Flax ``TrainState`` whose ``tx`` is
``masked(...)`` both work. An update happens only when ``step % every == 0`` and
``start <= step < end``, under ``lax.cond``: other steps cost a comparison, and the
mask is data, so nothing recompiles when it changes. The hyperparameters may be traced
too (jit arguments); they are validated only when concrete.

The rule, per prunable leaf with ``n_alive`` alive weights at step ``t``:

* ``k = round(f(t) · n_alive)`` (Python's rounding, as :func:`jaxsparse.prune`);
  ``f(t) = α/2 · (1 + cos(π t / end))`` (RigL; SET: a constant ``ζ`` unless asked);
* *drop* the k alive weights of smallest ``|w|``;
* *grow* k weights among those dead *after the drop*: largest ``|∇L|`` (RigL), or at
  random (SET); ties go to the first in row-major order, as in :func:`jaxsparse.prune`.

*Dropped and regrown.* As in RigL's Algorithm 1 and its reference code (``ArgTopK`` over
``i ∉ θ \\ I_drop``; the code's default ``reinit_when_same=False``), a weight just
dropped may be grown back in the same update; it then simply stays alive, with its value
and optimizer moments untouched. So the mask changes in at most ``2k`` places, and the
weights that turn on (dead before, alive after) equal in number those that turn off.
Weights that turn on start at exactly 0; weights that turn off become 0. Per-leaf alive
counts never change. Moments are not touched here: :func:`jaxsparse.masked` zeroes the
per-weight state of pruned weights as each update reads it, so a weight that turns off
has zero moments from its next update on, and one that turns on starts from the moments
it had while pruned: exactly 0 for every optimizer whose state stays 0 under zero
gradients (SGD with momentum, Adam, AdamW, RMSProp, Adagrad, Lion...); AdaBelief's
``eps_root`` (1e-16) is the one drift seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._packed import select
from jaxsparse._rounding import round_mul
from jaxsparse.filters import Filter, check_structure
from jaxsparse.masks import apply_mask, explicit_spec, mask_prunable
from jaxsparse.optim import get_mask, set_mask

State = Any  # duck-typed: .params, .opt_state, .step, .replace


def _check(name: str, every: Any, start: Any, end: Any, frac_name: str, frac: Any) -> None:
    def concrete(x):
        return not isinstance(x, jax.core.Tracer)

    if concrete(every) and (np.ndim(every) != 0 or int(every) != every or every <= 0):
        raise ValueError(f"{name}: every must be a positive integer, got {every}")
    if concrete(start) and concrete(end) and not end > start:
        raise ValueError(f"{name}: end ({end}) must come after start ({start})")
    if concrete(frac) and not 0.0 < float(frac) <= 1.0:
        raise ValueError(f"{name}: {frac_name} must be in (0, 1], got {frac}")


def cosine_fraction(step: jax.Array, alpha: float, end: int) -> jax.Array:
    """RigL's drop fraction ``f(t) = α/2 · (1 + cos(π t / end))``, float32.

    Args:
      step: the step ``t`` (traced or not).
      alpha: the initial fraction ``α`` (the paper: 0.3).
      end: ``T_end``, the step after which the mask stops changing.

    Returns:
      ``f(t)``, from ``α`` at ``t = 0`` down to 0 at ``t = end``.

    Examples:
        >>> round(float(cosine_fraction(50, 0.3, 100)), 6)
        0.15

    References:
      Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
    """
    t = jnp.asarray(step, jnp.float32)
    return jnp.float32(alpha) / 2 * (1 + jnp.cos(jnp.pi * t / end))


def _update(
    state: State,
    grow_scores: Callable[[list[int], list[jax.Array]], list[jax.Array]],
    fraction: Callable[[jax.Array], jax.Array],
    every: int,
    start: int,
    end: int,
    where: Filter,
) -> State:
    mask = get_mask(state.opt_state)
    where = getattr(state, "where", None) if where is None else where
    idx = [i for i, s in enumerate(mask_prunable(mask, where)) if s]
    step = jnp.asarray(state.step)

    if not idx:
        return state

    def drop_and_grow():
        m_leaves, treedef = jax.tree.flatten(mask)
        w_leaves = jax.tree.leaves(state.params)
        f = fraction(step)
        grow = grow_scores(idx, m_leaves)
        # one exact rounding for all leaves (round_mul is elementwise)
        alive = jnp.stack([jnp.sum(m_leaves[i], dtype=jnp.int32) for i in idx])
        ks = jnp.asarray(round_mul(f, alive))
        new = list(m_leaves)
        # by |w|, taken after packing (never written out leaf by leaf)
        dropped = select(
            [[w_leaves[i]] for i in idx], [[m_leaves[i]] for i in idx], "given", ks, absolute=True
        )
        after = [m_leaves[i] & ~d for i, (d,) in zip(idx, dropped)]
        grown = select([[g] for g in grow], [[~a] for a in after], "given", ks, largest=True)
        for i, a, (g,) in zip(idx, after, grown):
            new[i] = a | g
        return jax.tree.unflatten(treedef, new)

    active = (step % every == 0) & (step >= start) & (step < end)
    # Only the mask is chosen under the cond (passing params and optimizer state through
    # one copied them every step); the masking below is elementwise and fuses with the
    # update before it. Alive before and after keeps its value; all else is 0. Moments
    # are left to masked(): it zeroes pruned entries as the next update reads them, and
    # a grown weight's moments are already 0 (it was pruned through the last update).
    new_mask = jax.lax.cond(active, drop_and_grow, lambda: mask)
    kept = jax.tree.map(jnp.logical_and, mask, new_mask)
    opt_state = set_mask(state.opt_state, new_mask)
    params = apply_mask(state.params, kept)
    return state.replace(params=params, opt_state=opt_state)


def rigl(
    state: State,
    grads: chex.ArrayTree,
    *,
    every: int = 100,
    end: int,
    alpha: float = 0.3,
    start: int = 0,
    where: Filter = None,
) -> State:
    """One RigL mask update (when due): drop the smallest ``|w|``, grow the largest
    ``|∇L|`` among the dead, ``k = round(f(t) · n_alive)`` per leaf with RigL's cosine
    ``f`` (see the module docstring for the full rule). Pure; call it inside ``jit``.

    Args:
      state: the train state (``.params``, ``.opt_state`` with a :func:`jaxsparse.masked`
        state, ``.step``, ``.replace``; ``.where`` is used if present).
      grads: the *dense* gradient mirroring ``params``: ``jax.grad(loss_fn)(params,
        batch)`` before any masking (the dead weights' entries pick what grows).
      every: ``ΔT``, steps between updates (the paper: 100), a positive integer.
      end: ``T_end``; no update at ``step >= end`` (the paper: 75% of training).
      alpha: the initial drop fraction ``α``, in ``(0, 1]`` (the paper: 0.3).
      start: no update before this step.
      where: which leaves are updated (default: the state's ``where``, else kernels).

    Returns:
      The state with the new mask, params and optimizer state (``step`` unchanged).

    Raises:
      ValueError: ``every <= 0``, ``end <= start``, ``alpha`` outside ``(0, 1]``, or
        ``grads`` that does not mirror the params, each naming the argument.

    Examples:
        >>> p = {"w": jnp.array([[0.1, 0.0], [-2.0, 0.0]])}
        >>> state = js.SparseTrainState.create(apply_fn=None, params=p, tx=optax.adam(0.1),
        ...     mask={"w": jnp.array([[True, False], [True, False]])})
        >>> g = {"w": jnp.array([[0.0, 5.0], [0.0, 1.0]])}
        >>> rigl(state, g, every=10, end=100, alpha=0.5).mask["w"]
        Array([[False,  True],
               [ True, False]], dtype=bool)

    References:
      Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
    """
    _check("rigl", every, start, end, "alpha", alpha)
    check_structure(grads, state.params, name="rigl: grads")
    g_leaves = jax.tree.leaves(grads)

    def grow_scores(idx, _):
        return [jnp.abs(g_leaves[i]) for i in idx]

    return _update(
        state,
        grow_scores,
        lambda t: cosine_fraction(t, alpha, end),
        every,
        start,
        end,
        where,
    )


def set(  # the algorithm's name, used as ``dst.set`` (shadows the builtin here only)
    state: State,
    key: jax.Array,
    *,
    every: int,
    end: int,
    zeta: float = 0.3,
    cosine: bool = False,
    start: int = 0,
    where: Filter = None,
) -> State:
    """One SET mask update (when due): drop the smallest ``|w|``, grow as many at random
    among the dead, ``k = round(ζ · n_alive)`` per leaf (see the module docstring).

    Args:
      state: the train state, as in :func:`rigl`.
      key: a PRNG key for the random growth; the step is folded into it, so one key
        can serve a whole run.
      every: steps between updates (the paper: one epoch), a positive integer.
      end: no update at ``step >= end``.
      zeta: the fraction ``ζ`` of alive weights replaced, in ``(0, 1]`` (the paper: 0.3).
      cosine: anneal ``ζ`` with RigL's cosine, ``ζ/2 · (1 + cos(π t / end))``, instead of
        keeping it constant (the paper).
      start: no update before this step.
      where: which leaves are updated (default: the state's ``where``, else kernels).

    Returns:
      The state with the new mask, params and optimizer state (``step`` unchanged).

    Raises:
      ValueError: ``every <= 0``, ``end <= start`` or ``zeta`` outside ``(0, 1]``.

    Examples:
        >>> p = {"w": jnp.arange(1.0, 9.0).reshape(2, 4)}
        >>> state = js.SparseTrainState.create(apply_fn=None, params=p, tx=optax.sgd(0.1),
        ...     mask={"w": jnp.array([[True] * 4, [False] * 4])})
        >>> new = set(state, jax.random.key(0), every=10, end=100, zeta=0.5)
        >>> int(new.mask["w"].sum()), bool(new.mask["w"][0, 2:].all())
        (4, True)

    References:
      Mocanu et al., "Scalable training of artificial neural networks with adaptive
      sparse connectivity inspired by network science", Nature Communications 2018.
    """
    _check("set", every, start, end, "zeta", zeta)

    def grow_scores(idx, m_leaves):
        keys = jax.random.split(jax.random.fold_in(key, state.step), len(m_leaves))
        return [
            jax.random.uniform(keys[i], m_leaves[i].shape, out_sharding=explicit_spec(m_leaves[i]))
            for i in idx
        ]

    def fraction(t):
        return cosine_fraction(t, zeta, end) if cosine else jnp.float32(zeta)

    return _update(state, grow_scores, fraction, every, start, end, where)
