"""``SparseTrainState``: a Flax train state whose optimizer keeps the mask and which
remembers where to rewind to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxsparse.filters import Filter
from jaxsparse.masks import apply_mask, check_mask
from jaxsparse.optim import MaskedState, get_mask, mask_moments, masked, set_mask


def _has_masked(opt_state: optax.OptState) -> bool:
    leaves = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, MaskedState))
    return any(isinstance(x, MaskedState) for x in leaves)


def snapshot_step(state: Any) -> jax.Array:
    """The step the rewind snapshot was taken at: k once training has reached step k, 0
    before (the snapshot is then still the one taken at creation).

    Raises:
      ValueError: with a concrete state that has not reached k yet: rewinding it now
        would go back to step 0, not to k.
    """
    step, k = state.step, state.rewind_step
    concrete = not isinstance(step, jax.core.Tracer) and not isinstance(k, jax.core.Tracer)
    if concrete and bool(jnp.any(step < k)):
        raise ValueError(
            f"the state is at step {step} but rewind_step is {k}: the snapshot at step "
            "k is taken when training reaches it, so train at least k steps first"
        )
    return jnp.where(step >= k, k, jnp.zeros_like(k))


def snapshot_opt_state(state: Any) -> optax.OptState:
    """The optimizer state of the rewind snapshot: ``rewind_opt_state``, or, for a state
    that carries none (created with k = 0, whose snapshot is the initial state),
    ``tx.init`` of the snapshot's params, which is what :meth:`SparseTrainState.create`
    started from. Its mask is the dense one; every caller sets its own."""
    if state.rewind_opt_state is not None:
        return state.rewind_opt_state
    return state.tx.init(state.rewind_params)


def _zero_fills(init: Callable, params: Any) -> list[bool]:
    """For each leaf of ``init(params)``, whether tracing it shows a fill of ``+0.0``
    (``broadcast_in_dim`` of a literal zero): a leaf that masking would leave as it is."""
    jaxpr = jax.make_jaxpr(init)(params).jaxpr
    zero = set()
    for eqn in jaxpr.eqns:
        x = eqn.invars[0] if eqn.primitive.name == "broadcast_in_dim" else None
        if isinstance(x, jax.extend.core.Literal):
            v = np.asarray(x.val)
            if v.size == 1 and v == 0 and not np.signbit(v):
                zero.add(eqn.outvars[0])
    return [isinstance(v, jax.extend.core.Var) and v in zero for v in jaxpr.outvars]


def _zeros_over(old: jax.Array, never: jax.Array) -> jax.Array:
    """Zeros shaped like ``old``, written over it: ``where(never, old, 0)``, ``never``
    being ``False`` at run time in a way XLA cannot fold.

    Equal zero fills are one value to XLA: it makes one buffer and copies it out to each
    output, a single-threaded ``memcpy`` a leaf. A select on each leaf's own old buffer
    is one in-place loop a leaf, the same loop for every leaf of a shape (so compiled
    once; a fill from a constant of its own would compile a kernel a leaf).
    """
    return jnp.where(never, old, jnp.zeros((), old.dtype))


def _rewound_opt_state(state: Any, mask: chex.ArrayTree, params: Any) -> optax.OptState:
    """:func:`snapshot_opt_state` with the moments of ``mask``'s pruned weights zeroed.

    A snapshot made afresh by ``tx.init`` (k = 0) starts Adam's moments (and most
    optimizers' statistics) at zero: those leaves need no mask, and XLA:CPU, which does
    not fold ``select(m, 0, 0)``, would read the mask and copy the zeros out once per
    moment. They are written over the state's current moments instead
    (:func:`_zeros_over`), in place when the state is donated; any other start (an
    Adagrad accumulator of 0.1) is masked as usual.
    """
    if state.rewind_opt_state is not None:
        return mask_moments(state.rewind_opt_state, mask, params)
    keep = _zero_fills(state.tx.init, state.rewind_params)
    leaves, treedef = jax.tree.flatten(mask_moments(snapshot_opt_state(state), mask, params))
    old = jax.tree.leaves(state.opt_state)
    never = jnp.isnan(jnp.asarray(state.step, jnp.float32) * 0)  # a step count is finite
    out = [
        _zeros_over(o, never) if k and (o.shape, o.dtype) == (x.shape, x.dtype) else x
        for x, o, k in zip(leaves, old, keep, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


def rewind(state: Any, mask: chex.ArrayTree) -> Any:
    """The state at its rewind snapshot, under ``mask``: the snapshot's params with the
    pruned ones zeroed, its optimizer state with their moments zeroed and ``mask`` set,
    and ``step`` back to the snapshot's (see :func:`snapshot_step`).

    What :func:`jaxsparse.imp_round` and :func:`jaxsparse.reprune` both return, with
    their own masks.

    Examples:
        >>> state = SparseTrainState.create(
        ...     apply_fn=None, params={"w": jnp.array([[1.0, 2.0]])}, tx=optax.sgd(0.1))
        >>> state = state.apply_gradients(grads={"w": jnp.ones((1, 2))})
        >>> back = rewind(state, {"w": jnp.array([[False, True]])})
        >>> back.params["w"].tolist(), int(back.step)
        ([[0.0, 2.0]], 0)

    References:
      Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis",
      ICML 2020.
    """
    params = apply_mask(state.rewind_params, mask)
    opt_state = set_mask(_rewound_opt_state(state, mask, params), mask)
    return state.replace(params=params, opt_state=opt_state, step=snapshot_step(state))


class SparseTrainState(struct.PyTreeNode):
    """A drop-in for ``flax.training.train_state.TrainState`` for sparse training.

    ``tx`` is wrapped in :func:`jaxsparse.masked` (unless it already contains one), so
    the mask lives in ``opt_state`` and :attr:`mask` reads it from there: one source of
    truth (pass ``tx=js.masked(optax.adam(...), packed=True)`` to hold it as bits). The
    state also carries the *rewind point* of lottery-ticket training: the params and
    optimizer state at step ``rewind_step`` (k), captured inside
    :meth:`apply_gradients` when ``step`` reaches k (at :meth:`create` when k = 0), and
    the IMP round counter. All of it is data, so everything jits and nothing recompiles
    when the mask or the round changes.

    NNX models work through their pure state: ``graphdef, params = nnx.split(model,
    nnx.Param)``, train ``params`` with this state, and ``nnx.merge(graphdef,
    state.params)`` to get a model back.

    Attributes:
      step: number of updates applied (reset to k by rewinding).
      params: the model parameters; exactly zero where pruned.
      opt_state: the optimizer state, holding the mask.
      rewind_step: k, the step whose state :func:`jaxsparse.imp_round` rewinds to.
      rewind_params, rewind_opt_state: the snapshot at step k. With k = 0 (a
        state created with ``rewind_step=0``) ``rewind_opt_state`` is ``None``: the
        snapshot's optimizer state is ``tx.init(rewind_params)``, made again when
        rewinding (:func:`snapshot_opt_state`), not carried. For Adam that saves 2
        floats a weight, and a jitted step passes fewer leaves.
      round: how many IMP rounds have pruned this state.
      apply_fn, tx, where: static: the model's apply function, the (masked) optimizer,
        and the filter of prunable leaves.

    Examples:
        >>> import flax.linen as nn
        >>> model = nn.Dense(3)
        >>> params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
        >>> state = SparseTrainState.create(
        ...     apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
        >>> state = state.apply_gradients(grads=jax.tree.map(jnp.ones_like, params))
        >>> int(state.step), state.mask["kernel"].shape
        (1, (4, 3))

    References:
      Frankle & Carbin, ICLR 2019; Frankle et al., "Linear Mode Connectivity and the
      Lottery Ticket Hypothesis", ICML 2020 (rewinding to step k).
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    rewind_step: jax.Array
    rewind_params: Any
    rewind_opt_state: optax.OptState | None
    round: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    where: Filter = struct.field(pytree_node=False, default=None)

    @property
    def mask(self) -> chex.ArrayTree:
        """The current mask, read from the optimizer state."""
        return get_mask(self.opt_state)

    @property
    def takes_snapshot(self) -> bool:
        """Whether :meth:`apply_gradients` checks each step for step k (a ``lax.cond``):
        exactly when the state carries a snapshot optimizer state to fill.
        :meth:`create` carries none when k is a concrete 0, whose snapshot is the
        initial state, so those steps carry no check: on a GPU each check makes the
        host wait for the step's work (XLA reads a conditional's predicate on the
        host). To rewind to a later step, create the state with that ``rewind_step``;
        do not ``replace`` it on a state created with 0."""
        return self.rewind_opt_state is not None

    def apply_gradients(self, *, grads: chex.ArrayTree, **kwargs: Any) -> SparseTrainState:
        """One optimizer step; captures the rewind snapshot when ``step`` reaches k.

        The snapshot is taken once, in the first training run: rewinding sets ``step``
        back to k, so later rounds never step *onto* k again and all rounds rewind to
        the same weights, as in Frankle et al. (2020). With k = 0 the snapshot is
        taken at :meth:`create` and the step carries no check (``takes_snapshot``).

        Raises:
          ValueError: with a concrete ``rewind_step`` other than 0 on a state created
            with 0 (it would never take that snapshot).
        """
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        step = self.step + 1
        if not self.takes_snapshot:
            if not isinstance(self.rewind_step, jax.core.Tracer) and bool(
                jnp.any(self.rewind_step != 0)
            ):
                raise ValueError(
                    "SparseTrainState.apply_gradients: rewind_step is "
                    f"{self.rewind_step} but the state was created with rewind_step=0, "
                    "so it takes no snapshot; create it with the rewind_step you want"
                )
            return self.replace(step=step, params=params, opt_state=opt_state, **kwargs)
        rewind_params, rewind_opt_state = jax.lax.cond(
            step == self.rewind_step,
            lambda: (params, opt_state),
            lambda: (self.rewind_params, self.rewind_opt_state),
        )
        return self.replace(
            step=step,
            params=params,
            opt_state=opt_state,
            rewind_params=rewind_params,
            rewind_opt_state=rewind_opt_state,
            **kwargs,
        )

    @classmethod
    def create(
        cls,
        *,
        apply_fn: Callable,
        params: chex.ArrayTree,
        tx: optax.GradientTransformation,
        rewind_step: int | jax.Array = 0,
        mask: chex.ArrayTree | None = None,
        where: Filter = None,
        **kwargs: Any,
    ) -> SparseTrainState:
        """A fresh state at step 0.

        Args:
          apply_fn: the model's apply function (kept, not called).
          params: initial params.
          tx: any optax transform; wrapped in :func:`jaxsparse.masked` unless it holds one.
          rewind_step: k >= 0; the snapshot is the state after k updates.
          mask: an initial mask (default dense); params are masked with it.
          where: which leaves are prunable (default: kernels, ``ndim >= 2``, not biases).

        Raises:
          ValueError: a negative ``rewind_step`` or a mask that does not mirror params.
        """
        k = None if isinstance(rewind_step, jax.core.Tracer) else int(rewind_step)
        if k is not None and k < 0:
            raise ValueError(
                f"SparseTrainState.create: rewind_step must be >= 0, got {rewind_step}"
            )
        if not _has_masked(jax.eval_shape(tx.init, params)):
            tx = masked(tx)
        opt_state = tx.init(params)
        # The snapshot keeps the unmasked initial values: controls that move the mask
        # (random re-pruning) need the initial value of every weight.
        snapshot = params
        if mask is not None:
            check_mask(mask, params, name="SparseTrainState.create: mask")
            opt_state = set_mask(opt_state, mask)
        # params start exactly zero where pruned, whether the mask came as mask= or
        # inside the optimizer (masked(inner, mask))
        params = apply_mask(params, get_mask(opt_state))
        return cls(
            step=jnp.asarray(0, jnp.int32),
            params=params,
            opt_state=opt_state,
            rewind_step=jnp.asarray(rewind_step, jnp.int32),
            rewind_params=snapshot,
            # at k = 0 the snapshot's optimizer state is tx.init(snapshot): not carried,
            # and no step checks for k (takes_snapshot); a traced k may be anything
            rewind_opt_state=opt_state if k != 0 else None,
            round=jnp.asarray(0, jnp.int32),
            apply_fn=apply_fn,
            tx=tx,
            where=where,
            **kwargs,
        )
