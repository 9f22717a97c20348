"""Sparsity schedules (pure functions of the step) and ``gradual_prune``, which prunes a
train state to the scheduled target inside a jitted step.

A schedule, as optax's learning-rate schedules, is built by a function closing over its
hyperparameters and maps a step (a Python int or a traced int32) to the target sparsity,
a float32 scalar in ``[0, 1)``. :func:`gradual_prune` reaches it with exact counts:
``round(target · n)`` dead weights per prunable leaf of size ``n`` (layerwise) or over
all prunable leaves (global), ``target`` taken at its float32 value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse import scores as scores_lib
from jaxsparse.filters import Filter
from jaxsparse.masks import apply_mask
from jaxsparse.optim import get_mask, set_mask
from jaxsparse.pruning import _prune_to

Schedule = Callable[[Any], jax.Array]
State = Any  # duck-typed: .params, .opt_state, .step, .replace


def _concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_sparsity(x: Any, name: str) -> None:
    if _concrete(x) and not 0.0 <= float(x) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {x}")


def _check_positive(x: Any, name: str) -> None:
    if _concrete(x) and (np.ndim(x) != 0 or int(x) != x or x <= 0):
        raise ValueError(f"{name} must be a positive integer, got {x}")


def one_shot(sparsity: float, step: int = 0) -> Schedule:
    """Target ``sparsity`` from ``step`` on, 0 before: prune once.

    Args:
      sparsity: the target, in ``[0, 1)``.
      step: the step at which it applies, ``>= 0``.

    Returns:
      ``schedule(t) -> float32``.

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1)`` or a negative ``step``.

    Examples:
        >>> s = one_shot(0.9, step=100)
        >>> float(s(99)), round(float(s(100)), 6)
        (0.0, 0.9)

    References:
      Lee et al., "JaxPruner: A concise library for sparsity research", 2023 (one-shot,
      periodic and polynomial schedules).
    """
    _check_sparsity(sparsity, "one_shot: sparsity")
    if _concrete(step) and step < 0:
        raise ValueError(f"one_shot: step must be >= 0, got {step}")
    return lambda t: jnp.where(jnp.asarray(t) >= step, jnp.float32(sparsity), jnp.float32(0))


def polynomial(
    final: float, *, begin: int, end: int, initial: float = 0.0, power: float = 3
) -> Schedule:
    """Zhu & Gupta's gradual schedule ``s_t = s_f + (s_i − s_f)(1 − (t − t_0)/(n Δt))^p``.

    ``t_0 = begin`` and ``t_0 + n Δt = end``; before ``begin`` the target is ``initial``,
    from ``end`` on it is ``final`` (exactly). The paper's power is 3; ``Δt``, how often
    the mask is updated, is :func:`gradual_prune`'s ``every``.

    Args:
      final: ``s_f``, in ``[0, 1)``.
      begin: ``t_0``, the first step of the ramp.
      end: the step the ramp reaches ``final``; ``end > begin``.
      initial: ``s_i``, in ``[0, final]`` (usually 0).
      power: ``p > 0``.

    Returns:
      ``schedule(t) -> float32``.

    Raises:
      ValueError: sparsities outside ``[0, 1)`` or ``initial > final``,
        ``end <= begin``, or ``power <= 0``, naming the argument.

    Examples:
        >>> s = polynomial(0.8, begin=0, end=100)
        >>> [round(float(s(t)), 6) for t in (0, 50, 100, 200)]
        [0.0, 0.7, 0.8, 0.8]

    References:
      Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
      model compression", 2017.
    """
    _check_sparsity(final, "polynomial: final")
    _check_sparsity(initial, "polynomial: initial")
    if _concrete(initial) and _concrete(final) and initial > final:
        raise ValueError(f"polynomial: initial ({initial}) must be <= final ({final})")
    if _concrete(begin) and _concrete(end) and not end > begin:
        raise ValueError(f"polynomial: end ({end}) must come after begin ({begin})")
    if _concrete(power) and not power > 0:
        raise ValueError(f"polynomial: power must be > 0, got {power}")

    def schedule(t):
        frac = jnp.clip((jnp.asarray(t, jnp.float32) - begin) / (end - begin), 0.0, 1.0)
        s_f, s_i = jnp.float32(final), jnp.float32(initial)
        return s_f + (s_i - s_f) * (1.0 - frac) ** power

    return schedule


def imp_geometric(rate: float, every: int, rounds: int, *, start: int = 0) -> Schedule:
    """Iterative pruning's geometric schedule: after ``r`` rounds at rate ``p``, the
    sparsity is ``1 − (1 − p)^r``; round r happens at step ``start + (r − 1)·every``.

    Args:
      rate: ``p``, the fraction of the remaining weights pruned a round, in ``[0, 1)``.
      every: steps between rounds, a positive integer.
      rounds: the number of rounds, a positive integer.
      start: the step of the first round.

    Returns:
      ``schedule(t) -> float32``.

    Raises:
      ValueError: ``rate`` outside ``[0, 1)``, or ``every`` / ``rounds`` not positive.

    Examples:
        >>> s = imp_geometric(0.2, every=10, rounds=3)
        >>> [round(float(s(t)), 6) for t in (0, 9, 10, 20, 99)]
        [0.2, 0.2, 0.36, 0.488, 0.488]

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    _check_sparsity(rate, "imp_geometric: rate")
    _check_positive(every, "imp_geometric: every")
    _check_positive(rounds, "imp_geometric: rounds")

    def schedule(t):
        t = jnp.asarray(t, jnp.int32)
        r = jnp.where(t >= start, jnp.minimum((t - start) // every + 1, rounds), 0)
        return 1.0 - jnp.float32(1.0 - rate) ** r.astype(jnp.float32)

    return schedule


def gradual_prune(
    state: State,
    schedule: Schedule,
    every: int,
    *,
    scope: str = "layerwise",
    score_fn: Callable[[chex.ArrayTree], chex.ArrayTree] | None = None,
    where: Filter = None,
) -> State:
    """Prunes a train state to ``schedule(step)`` when ``step % every == 0``. Pure.

    Call it inside the jitted train step (after ``apply_gradients``). On a pruning step
    the lowest-scoring alive weights go until ``round(target · n)`` prunable weights are
    dead (per leaf, or over all prunable leaves with ``scope="global"``); a leaf already
    that sparse is left alone, so pruned weights stay pruned and the sparsity never
    falls. Newly pruned weights become 0 and the mask in the :func:`jaxsparse.masked`
    state is replaced; their optimizer moments are zeroed by ``masked()`` as the next
    update reads them (masking them here, on every step, made XLA copy the donated
    moments: 5x a ``masked(adam)`` step on a ResNet-50 tree). The new mask is chosen
    under ``lax.cond``, so nothing recompiles; but on a CPU a step that carries the cond
    costs about 2.7x the bare step on ResNet-50 and BERT-base trees even when it does not
    prune (``jaxsparse bench --sections models``). Where that matters, call it in a jitted
    function of its own on the steps that prune (``every=1``), and run the bare step
    otherwise: the other steps then cost nothing extra::

        prune = jax.jit(lambda s: gradual_prune(s, schedule, every=1), donate_argnums=0)
        for t in range(steps):
            state = train_step(state, batch)  # jitted, masked() in the optimizer
            if int(state.step) % 100 == 0:
                state = prune(state)

    Args:
      state: duck-typed (``.params``, ``.opt_state`` holding a :func:`jaxsparse.masked`
        state, ``.step``, ``.replace``; ``.where`` is used if present).
      schedule: ``step -> target sparsity`` (:func:`polynomial`, :func:`one_shot`...).
      every: ``Δt``, steps between mask updates, a positive integer.
      scope: ``"layerwise"`` (Zhu & Gupta) or ``"global"``.
      score_fn: ``params -> scores``, higher = keep (default ``|w|``); e.g.
        ``lambda p: js.scores.snip(loss_fn, p, batch)``.
      where: which leaves are pruned (default: the state's ``where``, else kernels).

    Returns:
      The state with the new mask, params and optimizer state (``step`` unchanged).

    Raises:
      ValueError: ``every`` not a positive integer or an unknown ``scope``.

    Examples:
        >>> state = js.SparseTrainState.create(
        ...     apply_fn=None, params={"w": jnp.arange(1.0, 11.0).reshape(2, 5)},
        ...     tx=optax.sgd(0.1))
        >>> state = gradual_prune(state, one_shot(0.75), every=10)
        >>> int(state.mask["w"].sum())  # round(0.75 * 10) = 8 dead
        2

    References:
      Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
      model compression", 2017.
    """
    _check_positive(every, "gradual_prune: every")
    if scope not in ("layerwise", "global"):
        raise ValueError(f"gradual_prune: scope must be 'layerwise' or 'global', got {scope!r}")
    score_fn = scores_lib.magnitude if score_fn is None else score_fn
    where = getattr(state, "where", None) if where is None else where
    step = jnp.asarray(state.step)

    mask = get_mask(state.opt_state)

    def prune_now():
        target = jnp.clip(jnp.asarray(schedule(step), jnp.float32), 0.0, 1.0)
        scores, absolute = scores_lib._to_rank(score_fn, state.params)
        return _prune_to(scores, mask, target, scope=scope, where=where, absolute=absolute)

    # Only the mask is chosen under the cond: a cond that passed the whole state through
    # copied params and optimizer state on every step. Masking the params is elementwise
    # and fuses with the update before it; the moments are left to masked(), which zeroes
    # pruned entries as the next update reads them (a select on them here made XLA copy
    # the donated moments every step).
    new = jax.lax.cond(step % every == 0, prune_now, lambda: mask)
    opt_state = set_mask(state.opt_state, new)
    return state.replace(params=apply_mask(state.params, new), opt_state=opt_state)
