"""Ticket reuse: carry a mask, or a whole ticket, onto another model's params by path.

* :func:`transfer_mask`: a mask found on one model, onto another's params (a new task
  head, a renamed backbone, Linen to NNX), with a :class:`TransferReport` of what matched.
* :class:`Ticket`, :func:`ticket`, :func:`apply_ticket`: a ticket (mask and the weights to
  rewind to) taken from a state, saved with :func:`jaxsparse.checkpoint.save_ticket`, and
  applied to a new model's params.
* :func:`elastic` (from :mod:`jaxsparse.elastic`): a ticket stretched or squeezed to
  another depth of the same family.

Paths are ``/``-joined keys; the trailing ``value`` of an NNX ``Variable`` is dropped, so
an ``nnx.State`` (``nnx.split(model, nnx.Param)[1]``), its pure dict
(``nnx.to_pure_dict(state)``) and a Linen params dict of the same model match leaf for leaf.
Which leaf goes where is decided from paths and shapes only, so everything here also
runs under ``jit``; output leaves take the *target* leaves' dtypes and shardings.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxsparse._transplant import (
    Rename,
    TransferReport,
    check_bool,
    dense_like,
    onto,
    plan_by_path,
)
from jaxsparse.elastic import block_mapping, elastic
from jaxsparse.masks import apply_mask, check_mask

__all__ = [
    "Ticket",
    "TransferReport",
    "apply_ticket",
    "block_mapping",
    "elastic",
    "ticket",
    "transfer_mask",
]


def transfer_mask(
    mask: chex.ArrayTree,
    target_params: chex.ArrayTree,
    *,
    rename: Rename | None = None,
    missing: str = "dense",
    extra: str = "drop",
) -> tuple[chex.ArrayTree, TransferReport]:
    """Carries a mask onto another params pytree, leaf by leaf, by path.

    Each source leaf's path (see the module docstring) is first rewritten by ``rename``,
    then matched to the target leaf of the same path; the shapes must agree. ``rename``
    maps a source-path regex to a target-path template: the *first* pattern (in the
    mapping's order) that ``re.search`` finds in a path rewrites it with ``re.sub``
    semantics (every match replaced; ``\\1`` or ``\\g<name>`` refer to groups), and
    paths no pattern finds are kept. A template ``None`` drops the matching source
    leaves (the old task head, whose shape may differ from the new one).

    Args:
      mask: the source mask (``bool`` leaves).
      target_params: the params the new mask must mirror (only paths, shapes, dtypes
        and shardings are read).
      rename: optional ``{source_regex: target_template_or_None}``.
      missing: a target leaf no source leaf maps to is left dense (all ``True``) with
        ``"dense"``, or raises with ``"raise"``.
      extra: a source leaf with no target leaf is dropped with ``"drop"`` or raises with
        ``"raise"`` (leaves dropped by a ``None`` template never raise).

    Returns:
      ``(new_mask, report)``: ``new_mask`` mirrors ``target_params``, each leaf built
      on the target leaf (its sharding when concrete); ``report`` is a
      :class:`TransferReport`.

    Raises:
      ValueError: a shape mismatch (naming both paths and shapes), two source leaves
        renamed onto one path, a missing or extra leaf under ``"raise"``, an invalid
        ``missing``/``extra`` value or rename regex.
      TypeError: a non-``bool`` mask leaf, or a malformed ``rename``.

    Examples:
        >>> mask = {"body": {"kernel": jnp.array([[True, False], [False, True]])},
        ...         "head": {"kernel": jnp.ones((2, 3), bool)}}
        >>> target = {"encoder": {"kernel": jnp.zeros((2, 2))},
        ...           "head": {"kernel": jnp.zeros((2, 5))}}
        >>> new, report = transfer_mask(mask, target,
        ...                             rename={"^body/": "encoder/", "^head/": None})
        >>> new["encoder"]["kernel"].tolist(), bool(new["head"]["kernel"].all())
        ([[True, False], [False, True]], True)
        >>> print(report)
        status   source       target          weights
        matched  body/kernel  encoder/kernel        4
        dense    -            head/kernel          10
        dropped  head/kernel  -                     6
        matched 1 leaves (4 weights), left dense 1 (10), dropped 1 (6)

    References:
      Chen et al., "The Lottery Ticket Hypothesis for Pre-trained BERT Networks",
      NeurIPS 2020; Chen et al., "The Lottery Tickets Hypothesis for Supervised and
      Self-supervised Pre-training in Computer Vision Models", CVPR 2021.
    """
    check_bool(mask, "transfer_mask: mask")
    sources, report = plan_by_path(mask, target_params, rename, missing, extra, "transfer_mask")
    m_leaves = jax.tree.leaves(mask)
    t_leaves, treedef = jax.tree.flatten(target_params)
    out = [
        dense_like(p) if i is None else onto(m_leaves[i], p, bool)
        for i, p in zip(sources, t_leaves)
    ]
    return jax.tree.unflatten(treedef, out), report


class Ticket(NamedTuple):
    """A lottery ticket: the mask and the weights to rewind to (exactly 0 where pruned).

    A pytree (a ``NamedTuple``), so it jits; it unpacks to ``(mask, params)``, the
    argument order of :func:`jaxsparse.checkpoint.save_ticket`:
    ``save_ticket(directory, *t)`` writes it and
    ``Ticket(*load_ticket(directory, like)[:2])`` reads it back.

    Attributes:
      mask: a ``bool`` pytree mirroring ``params``.
      params: the rewind weights, zero where ``mask`` is ``False``.

    Examples:
        >>> t = Ticket(mask={"w": jnp.array([True, False])}, params={"w": jnp.array([2., 0.])})
        >>> mask, params = t
        >>> params["w"].tolist()
        [2.0, 0.0]

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (a ticket is the
      mask and the initial weights).
    """

    mask: chex.ArrayTree
    params: chex.ArrayTree


def ticket(state_or_params: Any, mask: chex.ArrayTree | None = None) -> Ticket:
    """The ticket of a train state, or of given weights and a mask.

    From a :class:`jaxsparse.SparseTrainState` (anything with ``rewind_params``) the
    weights are its rewind snapshot (the weights at step k once training has reached k,
    the creation weights before; or the ``rewind_to`` of the last
    :func:`jaxsparse.imp_round`) and the mask defaults to ``state.mask``. From a
    params pytree, those params are the weights and ``mask`` is required. Either way the
    pruned weights are zeroed.

    Args:
      state_or_params: a state with a rewind snapshot, or the weights to rewind to.
      mask: the ticket's mask (default: the state's current mask).

    Returns:
      A :class:`Ticket`.

    Raises:
      TypeError: no mask for plain params, or a state without a rewind snapshot (a plain
        ``TrainState``: pass the weights to rewind to and its mask instead).
      ValueError: ``mask`` does not mirror the weights (names the path).

    Examples:
        IMP with rewinding to pre-trained weights (Chen et al. 2020): prune, rewind to
        ``pretrained``, train, repeat; then take the ticket.

        >>> pretrained = {"w": jnp.arange(1.0, 9.0).reshape(2, 4)}
        >>> state = js.SparseTrainState.create(
        ...     apply_fn=None, params=pretrained, tx=optax.sgd(0.1))
        >>> # ... train on the source task, then:
        >>> state = js.imp_round(state, fraction=0.5, rewind_to=pretrained)
        >>> ticket(state).params["w"].tolist()
        [[0.0, 0.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0]]

    References:
      Frankle & Carbin, ICLR 2019; Chen et al., "The Lottery Ticket Hypothesis for
      Pre-trained BERT Networks", NeurIPS 2020 (rewinding to pre-trained weights).
    """
    if hasattr(state_or_params, "rewind_params"):
        weights = state_or_params.rewind_params
        mask = state_or_params.mask if mask is None else mask
    elif hasattr(state_or_params, "params") and hasattr(state_or_params, "opt_state"):
        raise TypeError(
            f"ticket: {type(state_or_params).__name__} keeps no rewind snapshot "
            "(rewind_params); pass the weights to rewind to and the mask, e.g. "
            "ticket(pretrained, js.get_mask(state.opt_state))"
        )
    else:
        weights = state_or_params
        if mask is None:
            raise TypeError("ticket: a mask is required when given params, not a state")
    check_mask(mask, weights, name="ticket: mask")
    return Ticket(mask=mask, params=apply_mask(weights, mask))


def apply_ticket(
    ticket: Ticket | tuple[chex.ArrayTree, chex.ArrayTree],
    target_params: chex.ArrayTree,
    *,
    rename: Rename | None = None,
    missing: str = "dense",
    extra: str = "drop",
) -> tuple[chex.ArrayTree, chex.ArrayTree, TransferReport]:
    """Applies a ticket (its mask *and* rewind weights) to a new model's params.

    Leaves are matched as in :func:`transfer_mask` (same ``rename``, ``missing`` and
    ``extra``). A matched target leaf takes the ticket's weights (cast to the target
    leaf's dtype, zero where pruned) and mask; a target leaf the ticket lacks (a new task
    head) keeps its own values and is dense. Train the result from there, e.g.
    ``SparseTrainState.create(params=params, mask=mask, tx=...)``; further IMP rounds
    that rewind to the transferred weights are ``js.imp_round(state,
    rewind_to=params)``.

    Args:
      ticket: a :class:`Ticket`, or any ``(mask, params)`` pair.
      target_params: the new model's params (initial values for the leaves the ticket
        lacks; structure, shapes, dtypes and shardings for all).
      rename: as for :func:`transfer_mask`.
      missing: as for :func:`transfer_mask`.
      extra: as for :func:`transfer_mask`.

    Returns:
      ``(params, mask, report)``, ``params`` and ``mask`` mirroring ``target_params``.

    Raises:
      ValueError, TypeError: as :func:`transfer_mask`, or a ticket whose mask does not
        mirror its params.

    Examples:
        >>> t = Ticket(mask={"body": jnp.array([[True, False]]), "head": jnp.ones((2, 2), bool)},
        ...            params={"body": jnp.array([[3.0, 0.0]]), "head": jnp.ones((2, 2))})
        >>> new_model = {"body": jnp.full((1, 2), 9.0), "head": jnp.full((2, 7), 9.0)}
        >>> params, mask, report = apply_ticket(t, new_model, rename={"^head": None})
        >>> params["body"].tolist(), float(params["head"].mean()), bool(mask["head"].all())
        ([[3.0, 0.0]], 9.0, True)

    References:
      Chen et al., "The Lottery Ticket Hypothesis for Pre-trained BERT Networks",
      NeurIPS 2020; Chen et al., CVPR 2021 (tickets transferred to downstream tasks).
    """
    mask, weights = ticket
    check_mask(mask, weights, name="apply_ticket: ticket mask")
    sources, report = plan_by_path(weights, target_params, rename, missing, extra, "apply_ticket")
    m_leaves, w_leaves = jax.tree.leaves(mask), jax.tree.leaves(weights)
    t_leaves, treedef = jax.tree.flatten(target_params)
    new_mask, new_params = [], []
    for i, p in zip(sources, t_leaves):
        if i is None:
            new_mask.append(dense_like(p))
            new_params.append(p)
            continue
        m = onto(m_leaves[i], p, bool)
        w = onto(w_leaves[i], p)
        new_mask.append(m)
        new_params.append(jnp.where(m, w, jnp.zeros((), w.dtype)))
    return jax.tree.unflatten(treedef, new_params), jax.tree.unflatten(treedef, new_mask), report
