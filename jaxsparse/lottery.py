"""Lottery tickets: ``imp_round`` (prune + rewind + reset) and the whole
iterative-magnitude-pruning loop as one compiled program (its controls live in
:mod:`jaxsparse.controls`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse import scores as scores_lib
from jaxsparse.filters import check_structure
from jaxsparse.masks import apply_mask, density
from jaxsparse.optim import get_mask, set_mask
from jaxsparse.pruning import _prune
from jaxsparse.state import rewind

State = Any  # duck-typed: .params, .opt_state, .step, .replace (+ rewind fields)


def _round_mask(
    state: State,
    fraction: float,
    *,
    scope: str,
    rates: Mapping[str, float] | None,
    score_fn: Callable[[chex.ArrayTree], chex.ArrayTree],
) -> chex.ArrayTree:
    """The mask :func:`imp_round` prunes to (also timed alone by the bench's ``optrace``
    section): ``fraction`` of the alive weights by ``score_fn(state.params)``, magnitude
    ranked from the params with ``|w|`` taken after packing."""
    scores, absolute = scores_lib._to_rank(score_fn, state.params)
    return _prune(
        scores,
        get_mask(state.opt_state),
        fraction,
        scope=scope,
        where=getattr(state, "where", None),
        rates=rates,
        absolute=absolute,
    )


def imp_round(
    state: State,
    *,
    fraction: float = 0.2,
    scope: str = "global",
    rates: Mapping[str, float] | None = None,
    score_fn: Callable[[chex.ArrayTree], chex.ArrayTree] = scores_lib.magnitude,
    rewind_to: chex.ArrayTree | None = None,
) -> State:
    """One round of iterative magnitude pruning: prune, rewind, reset. Pure and jittable.

    Prunes ``fraction`` of the alive prunable weights by ``score_fn(state.params)``
    (per ``scope``, with per-path ``rates`` overrides pruned layerwise), then rewinds:
    survivors take their values from the snapshot at step k (``state.rewind_params``),
    pruned weights become exactly 0, the optimizer state becomes the snapshot's (its
    moments masked, its schedule counts as they were at k) with the new mask, ``step``
    goes back to k so learning-rate schedules replay, and ``round`` increments.

    The snapshot is taken when training first reaches step k; a concrete state that has
    not got there raises ``ValueError``, and under ``jit`` such a state rewinds to its
    creation snapshot and step 0 (consistently: params, optimizer state and step).

    With ``rewind_to`` (e.g. pre-trained weights, for transfer), survivors take those
    values instead, the optimizer starts fresh, and ``rewind_to`` becomes the new
    snapshot at step 0.

    Called on its own, jit it with the state donated and ``keep_unused=True``:
    ``jax.jit(lambda s: imp_round(s), donate_argnums=0, keep_unused=True)``. A round of
    a state with k > 0 never reads the moments it resets, so without ``keep_unused``
    ``jit`` drops them from its arguments and the new ones take fresh memory (at k = 0
    the fresh zeros are written over them, so they are kept); and an undonated call copies
    the snapshot, which it returns unchanged (``jit`` does not pass an unchanged input
    through). On BERT-base on a 2-core CPU, a round jitted so cost its prune plus 0.4-3.4
    passes over params and optimizer state, an undonated one its prune plus 9-33
    (``docs/bench/models.md``).

    Args:
      state: a :class:`jaxsparse.SparseTrainState`, or any state with its fields. A plain
        ``flax.training.train_state.TrainState`` whose ``tx`` holds a
        :func:`jaxsparse.masked` works too, given ``rewind_to`` (it keeps no snapshot).
      fraction: share of the *alive* prunable weights removed, in ``[0, 1)``.
      scope: ``"global"`` (one threshold over all prunable leaves) or ``"layerwise"``.
      rates: ``{path_regex: fraction}`` per-leaf overrides (LeNet: ``{"Dense_2": 0.1}``).
      score_fn: params -> scores (higher = keep); default ``|w|``.
      rewind_to: optional params to rewind to instead of the step-k snapshot.

    Returns:
      The rewound state with the new, nested mask.

    Examples:
        >>> params = {"w": jnp.arange(1.0, 11.0).reshape(2, 5)}
        >>> state = js.SparseTrainState.create(
        ...     apply_fn=None, params=params, tx=optax.sgd(0.1))
        >>> state = imp_round(state, fraction=0.2)
        >>> int(state.mask["w"].sum()), int(state.round)
        (8, 1)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019; Frankle et al.,
      "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020.
    """
    mask = _round_mask(state, fraction, scope=scope, rates=rates, score_fn=score_fn)
    has_snapshot = hasattr(state, "rewind_params")
    if rewind_to is None:
        if not has_snapshot:
            raise ValueError(
                f"imp_round: {type(state).__name__} has no rewind snapshot (rewind_params); "
                "use jaxsparse.SparseTrainState or pass rewind_to="
            )
        return rewind(state, mask).replace(round=state.round + 1)
    check_structure(rewind_to, mask, name="imp_round: rewind_to", like_name="the params")
    params = apply_mask(rewind_to, mask)
    opt_state = set_mask(state.tx.init(params), mask)
    if not has_snapshot:  # a plain flax TrainState whose tx holds a masked()
        return state.replace(params=params, opt_state=opt_state, step=jnp.zeros_like(state.step))
    return state.replace(
        params=params,
        opt_state=opt_state,
        step=jnp.zeros_like(state.step),
        rewind_step=jnp.zeros_like(state.rewind_step),
        rewind_params=rewind_to,
        rewind_opt_state=None if state.rewind_opt_state is None else state.tx.init(rewind_to),
        round=state.round + 1,
    )


Control = Callable[[State, jax.Array], State]


def run(
    state: State,
    train_fn: Callable[[State, jax.Array], tuple[State, Any]],
    key: jax.Array,
    *,
    rounds: int,
    controls: Sequence[Control] = (),
    **imp_kwargs: Any,
) -> tuple[State, dict[str, Any]]:
    """The whole IMP loop, train -> prune -> rewind, as one ``lax.scan`` over rounds.

    Round r trains the current ticket with ``train_fn(state, key) -> (trained, metrics)``
    (e.g. from :func:`jaxsparse.training.make_train_fn`), records ``metrics`` and the
    density, then calls :func:`imp_round` on the trained state. Each control
    ``control(ticket, key) -> state`` (e.g. ``jaxsparse.reprune``) derives an
    arm from the untrained ticket of the round; the ticket and its controls are stacked
    and trained together under ``jax.vmap``, so K arms cost one program; all arms of a
    round see the same data order (the same training key), so they differ only in what
    the control changed. Only the ticket (arm 0) is pruned to seed the next round.

    Jit it whole (``jax.jit(run, static_argnames=...)`` or inside your own jitted
    function) and the R rounds compile once; ``vmap`` it over keys for seeds.

    Args:
      state: the dense starting state (rewind snapshot already captured, or k > 0).
      train_fn: trains one round; must be pure and jittable.
      key: a PRNG key; split per round and per arm.
      rounds: number of trainings; the returned state is the ticket after ``rounds``
        prunings (rewound, untrained, density ``(1 - fraction) ** rounds``).
      controls: functions deriving control arms from each round's ticket.
      **imp_kwargs: passed to :func:`imp_round` (``fraction``, ``scope``, ``rates``...).

    Returns:
      ``(state, history)``; ``history["metrics"]`` stacks ``train_fn``'s metrics with
      leading axes (rounds, arms) and ``history["density"]`` the trained masks' global
      densities, shape (rounds, arms).

    Examples:
        >>> params = {"w": jnp.ones((4, 4))}
        >>> state = js.SparseTrainState.create(apply_fn=None, params=params,
        ...                                    tx=optax.sgd(0.1))
        >>> def train_fn(s, key):
        ...     g = jax.tree.map(lambda p: p - jax.random.normal(key, p.shape), s.params)
        ...     s = s.apply_gradients(grads=g)
        ...     return s, {"norm": jnp.sum(s.params["w"] ** 2)}
        >>> final, hist = run(state, train_fn, jax.random.key(0), rounds=3, fraction=0.5)
        >>> hist["density"][:, 0].tolist(), int(final.mask["w"].sum())
        ([1.0, 0.5, 0.25], 2)

    References:
      Frankle & Carbin, ICLR 2019; Frankle et al., ICML 2020.
    """

    def one_round(ticket, r):
        return _round(ticket, train_fn, jax.random.fold_in(key, r), controls, imp_kwargs)

    # fold_in, not split: round r's key does not depend on how many rounds there are
    return jax.lax.scan(one_round, state, jnp.arange(rounds))


def _round(ticket, train_fn, key, controls, imp_kwargs):
    """One round of :func:`run`: derive the arms, train them together, prune the ticket."""
    k_arms, k_train = jax.random.split(key)
    arm_keys = jax.random.split(k_arms, max(len(controls), 1))
    arms = [ticket] + [c(ticket, k) for c, k in zip(controls, arm_keys)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *arms)
    # one data order for every arm: the arms differ only in their mask or init
    trained, metrics = jax.vmap(train_fn, in_axes=(0, None))(stacked, k_train)
    dens = jax.vmap(lambda s: density(s.mask, s.where))(trained)
    trained_ticket = jax.tree.map(lambda x: x[0], trained)
    return imp_round(trained_ticket, **imp_kwargs), {"metrics": metrics, "density": dens}


def run_resumable(
    state: State,
    train_fn: Callable[..., tuple[State, Any]],
    key: jax.Array,
    *,
    rounds: int,
    directory: str | os.PathLike,
    controls: Sequence[Control] = (),
    keep: int | None = None,
    on_round: Callable[[int, State, Any], None] | None = None,
    data: Any = None,
    **imp_kwargs: Any,
) -> tuple[State, dict[str, Any]]:
    """:func:`run`, one compiled round a call, checkpointed after every round.

    After round r the ticket and the history so far are saved (orbax, atomically) as
    ``directory/round_{r:04d}``. Called again on the same ``directory``, it resumes
    after the latest complete round, so a run killed at any moment (even ``SIGKILL``)
    and restarted ends with the same ticket and history, bit for bit, as one that was
    never interrupted — and as :func:`run` with the same arguments. Round r's key is
    ``fold_in(key, r)`` (in :func:`run` too), so a finished run can be extended by asking
    for more ``rounds``. The round compiles once; ``on_round(r, state, record)`` is
    called after each round (progress, logs).

    Across processes (``jax.distributed``), every process calls it with the same
    arguments and a ``directory`` they all share; each takes part in every checkpoint
    (see :mod:`jaxsparse.checkpoint`), and a run killed on all processes resumes as
    above. Pass data spread over the processes as ``data``: it reaches
    ``train_fn(state, key, data=data)`` as an argument of the compiled round (a jitted
    function cannot close over it); :func:`jaxsparse.make_train_fn` takes it so.

    Args:
      state: as for :func:`run`.
      train_fn: as for :func:`run`; with ``data``, called as
        ``train_fn(state, key, data=data)``.
      key: as for :func:`run`.
      rounds: as for :func:`run`.
      controls: as for :func:`run`.
      **imp_kwargs: as for :func:`run`.
      directory: where the round checkpoints live (created if missing).
      keep: keep only the newest ``keep`` round checkpoints (default: all).
      on_round: optional callback after each completed round.
      data: optional pytree passed to ``train_fn`` as ``data=`` (see above).

    Returns:
      ``(state, history)`` as :func:`run` returns them (history leaves as NumPy arrays).

    Raises:
      ValueError: a checkpoint in ``directory`` is corrupt or does not match ``state``
        (see :func:`jaxsparse.checkpoint.load_state`), was written with another key,
        controls or pruning arguments, or holds more rounds than ``rounds``.

    Examples:
        >>> import tempfile
        >>> state = js.SparseTrainState.create(
        ...     apply_fn=None, params={"w": jnp.arange(1.0, 17.0).reshape(4, 4)},
        ...     tx=optax.sgd(0.1))
        >>> def train_fn(s, key):
        ...     return s, {"alive": jnp.sum(s.mask["w"])}
        >>> d = tempfile.mkdtemp()
        >>> _, hist = run_resumable(state, train_fn, jax.random.key(0), rounds=2,
        ...                         directory=d, fraction=0.5)
        >>> hist["metrics"]["alive"][:, 0].tolist(), js.checkpoint.latest_round(d)
        ([16, 8], 1)

    References:
      Frankle & Carbin, ICLR 2019; Orbax checkpointing (orbax.checkpoint).
    """
    from jaxsparse import checkpoint  # floors beside this one, imported where used
    from jaxsparse.parallel import to_host

    def round_on(s, k, d):
        fn = train_fn if d is None else functools.partial(train_fn, data=d)
        return _round(s, fn, k, tuple(controls), imp_kwargs)

    step = functools.partial(jax.jit(round_on), d=data)
    record_shape = jax.eval_shape(step, state, key)[1]
    run_id = _fingerprint(key, controls, imp_kwargs)

    def history_like(n):
        return jax.tree.map(lambda x: np.zeros((n, *x.shape), x.dtype), record_shape)

    start, history = 0, history_like(0)
    last = checkpoint.latest_round(directory)
    if last is not None:
        if last >= rounds:
            raise ValueError(
                f"run_resumable: {directory} already holds round {last}, beyond rounds={rounds}"
            )
        saved, extra = checkpoint.load_state(
            Path(directory) / f"round_{last:04d}",
            {"state": state, "history": history_like(last + 1)},
        )
        if extra.get("run") != run_id:
            raise ValueError(
                f"run_resumable: {directory} holds a run with other arguments "
                f"(saved {extra.get('run')}, now {run_id}); use another directory"
            )
        state, history, start = saved["state"], to_host(saved["history"]), last + 1
    for r in range(start, rounds):
        state, record = step(state, jax.random.fold_in(key, r))
        record = to_host(record)
        history = jax.tree.map(lambda h, x: np.concatenate([h, x[None]]), history, record)
        checkpoint.save_round(
            directory, r, {"state": state, "history": history}, extra={"run": run_id}, keep=keep
        )
        if on_round is not None:
            on_round(r, state, record)
    return state, history


def _fingerprint(key: jax.Array, controls: Sequence[Control], imp_kwargs: Mapping[str, Any]) -> str:
    """What must not change between a run and its resumption, as a short string."""

    def name(x):
        return getattr(x, "__qualname__", None) or repr(x)

    parts = {
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "controls": [name(c) for c in controls],
        "imp": {k: name(v) if callable(v) else v for k, v in sorted(imp_kwargs.items())},
    }
    return repr(parts)
