"""Exact, deterministic pruning by score: layerwise or global, in counting passes.

The rule, everywhere: ``prune`` removes exactly ``round(amount * n_alive)`` alive weights
with the lowest scores (Python's float64 product and half-to-even rounding, as
``torch.nn.utils.prune``), and the new mask is nested in the old one.

*Ties* (equal scores) are broken by position: the weight that comes first is pruned
first, ordering leaves as ``jax.tree.leaves`` does and entries within a leaf in row-major
order. *NaN scores* count as the lowest score (pruned first); with concrete (non-traced)
scores a NaN raises a ``ValueError`` naming its path instead.

Nothing is sorted or concatenated but a small strided sample. Scores become
order-preserving ``uint32`` keys, and a threshold ``t`` with exactly k alive keys below it
is found by counting passes (an exact search, :func:`_search`): a bracket from the sorted
sample first, then interpolation between the counts at the bracket's ends, safeguarded to
never take more than about 32 passes. Smooth score distributions need a handful; each
pass is a sum that XLA reduces across shards, so global pruning of sharded params never
gathers them onto one device. Where the k-th key is tied, a second search over positions
ranks the ties.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._packed import select
from jaxsparse.filters import (
    Filter,
    check_structure,
    is_floating,
    leaf_paths,
    path_str,
    prunable,
)
from jaxsparse.masks import check_mask, explicit_spec, mask_prunable


def _check_scores(scores: chex.ArrayTree, selected: list[bool]) -> None:
    """Prunable score leaves must be floating and, when concrete, free of NaN."""
    flat = jax.tree_util.tree_flatten_with_path(scores)[0]
    for (path, x), keep in zip(flat, selected):
        if not keep:
            continue
        if not is_floating(x):
            raise TypeError(
                f"prune: score leaf '{path_str(path)}' has dtype {jnp.result_type(x)}; "
                "scores must be floating"
            )
        if not isinstance(x, jax.core.Tracer) and bool(np.isnan(np.asarray(x)).any()):
            raise ValueError(f"prune: score leaf '{path_str(path)}' contains NaN")


def _check_fraction(x: Any, where: str) -> None:
    if isinstance(x, jax.core.Tracer):
        return
    if np.ndim(x) != 0:
        raise ValueError(f"{where} must be a scalar, got shape {np.shape(x)}")
    v = float(x)
    if not 0.0 <= v < 1.0 or not np.isfinite(v):
        raise ValueError(f"{where} must be in [0, 1), got {v}")


def _scalar(x: Any) -> bool:
    return isinstance(x, (float, int, np.number, jax.Array, np.ndarray)) and np.ndim(x) == 0


def _rate_for(path: str, rates: Mapping[str, float] | None) -> float | None:
    for pattern, rate in (rates or {}).items():
        if re.search(pattern, path):
            return rate
    return None


def prune(
    scores: chex.ArrayTree,
    mask: chex.ArrayTree,
    amount: float | chex.ArrayTree,
    *,
    scope: str = "layerwise",
    where: Filter = None,
    rates: Mapping[str, float] | None = None,
) -> chex.ArrayTree:
    """Prunes the lowest-scoring alive weights and returns a new, nested mask.

    Args:
      scores: a float pytree mirroring ``mask`` (e.g. :func:`jaxsparse.scores.magnitude`).
      mask: the current mask; pruned weights stay pruned.
      amount: either a scalar in ``[0, 1)``, the fraction of the *alive* prunable weights
        to remove (``round(amount * n_alive)`` of them, Python's rounding of the float64
        product when ``amount`` is a Python float; a traced amount (a jit argument) is
        float32 and its exact float32 value is used, so ``0.1`` traced is not ``0.1``;
        per leaf with
        ``scope="layerwise"`` or over all prunable leaves with ``scope="global"``), or a
        pytree mirroring the params of per-leaf *target sparsities* (as returned by
        :mod:`jaxsparse.distributions`), reached by pruning each leaf to
        ``round(target * size)`` dead weights (layerwise only).
      scope: ``"layerwise"`` or ``"global"``.
      where: which leaves may be pruned (default: kernels, ``ndim >= 2``, not biases).
      rates: optional ``{path_regex: fraction}`` overrides: prunable leaves whose path
        matches are pruned layerwise at that fraction of their alive weights, the rest
        by ``amount`` and ``scope`` (e.g. ``{"Dense_2": 0.1}`` for LeNet's output layer
        at half rate). The first matching pattern wins.

    Returns:
      A boolean pytree mirroring ``mask``, with ``new <= mask`` everywhere.

    Raises:
      ValueError / TypeError: mismatched trees, non-float or NaN scores, an amount
        outside ``[0, 1)``, or a ``where`` that selects no leaf, each naming the place.

    Examples:
        >>> w = {"w": jnp.array([[0.3, -0.1], [2.0, 0.05]])}
        >>> m = prune(scores.magnitude(w), mask_like(w), 0.5)
        >>> m["w"]
        Array([[ True, False],
               [ True, False]], dtype=bool)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (layerwise and global
      magnitude pruning); Paszke et al., ``torch.nn.utils.prune`` (rounding rule).
    """
    return _prune(scores, mask, amount, scope=scope, where=where, rates=rates, absolute=False)


def _prune(scores, mask, amount, *, scope, where, rates, absolute):
    """:func:`prune`; with ``absolute``, of ``|scores|`` (given the params, a magnitude
    prune that never writes ``|w|`` out: see :func:`jaxsparse._packed.select`)."""
    if scope not in ("layerwise", "global"):
        raise ValueError(f"prune: scope must be 'layerwise' or 'global', got {scope!r}")
    check_mask(mask, scores)
    sel = jax.tree.leaves(prunable(scores, where))
    if not any(sel):
        # silently pruning nothing hides a wrong filter, e.g. 1-D group scores under the
        # default (kernels only)
        raise ValueError(
            "prune: where= selects no leaf of the scores (the default takes kernels, "
            "ndim >= 2; pass where=js.all_leaves to prune 1-D scores such as group scores)"
        )
    _check_scores(scores, sel)
    for pattern, pattern_rate in (rates or {}).items():
        _check_fraction(pattern_rate, f"prune: rates[{pattern!r}]")
    paths = leaf_paths(scores)
    s_leaves = jax.tree.leaves(scores)
    m_leaves, treedef = jax.tree.flatten(mask)

    targets = None
    if not _scalar(amount):
        if scope == "global":
            raise ValueError("prune: per-leaf target sparsities need scope='layerwise'")
        targets = _target_leaves(amount, mask)
    else:
        _check_fraction(amount, "prune: amount")

    new = list(m_leaves)
    pooled, groups, modes = [], [], []
    amounts: list[float | jax.Array] = []
    scalar_amount = cast("float | jax.Array", amount)  # used only when targets is None
    for i, path in enumerate(paths):
        if not sel[i]:
            continue
        rate = _rate_for(path, rates)
        if rate is not None:
            modes.append("alive")
            amounts.append(rate)
        elif targets is not None:
            modes.append("target")
            amounts.append(targets[i])
        elif scope == "layerwise":
            modes.append("alive")
            amounts.append(scalar_amount)
        else:
            pooled.append(i)
            continue
        groups.append([i])
    if pooled:
        groups.append(pooled)
        modes.append("alive")
        amounts.append(scalar_amount)
    if groups:
        # one search for every leaf pruned on its own and the global pool
        gone = select(
            [[s_leaves[i] for i in g] for g in groups],
            [[m_leaves[i] for i in g] for g in groups],
            modes,
            amounts,
            absolute=absolute,
        )
        for idx, marks in zip(groups, gone):
            for i, g in zip(idx, marks):
                new[i] = m_leaves[i] & ~g
    return jax.tree.unflatten(treedef, new)


def _target_leaves(targets: Any, mask: chex.ArrayTree) -> list:
    check_structure(
        targets,
        mask,
        name="prune: the per-leaf target sparsities",
        like_name="the mask",
        shapes=False,
    )
    leaves = jax.tree.leaves(targets)
    for path, t in zip(leaf_paths(targets), leaves):
        _check_fraction(t, f"prune: target sparsity of '{path}'")
    return leaves


def shuffle_mask(
    key: jax.Array, mask: chex.ArrayTree, *, scope: str = "layerwise", where: Filter = None
) -> chex.ArrayTree:
    """A random mask with the same alive count per prunable leaf (or globally).

    The "random re-pruning" control of the lottery-ticket papers: the ticket's layer
    densities (``scope="layerwise"``) or only its global density (``scope="global"``),
    at random positions. Non-prunable leaves are returned as they are. Exact counts, no
    sort: the alive positions are the lowest of uniform random keys.

    Examples:
        >>> m = {"w": jnp.array([[True, False, False], [True, True, False]])}
        >>> int(shuffle_mask(jax.random.key(0), m)["w"].sum())
        3

    References:
      Frankle & Carbin, ICLR 2019 (random re-pruning control); Liu et al., ICLR 2022.
    """
    if scope not in ("layerwise", "global"):
        raise ValueError(f"shuffle_mask: scope must be 'layerwise' or 'global', got {scope!r}")
    leaves, treedef = jax.tree.flatten(mask)
    sel = mask_prunable(mask, where)
    keys = jax.random.split(key, max(len(leaves), 1))
    rand = [
        jax.random.uniform(k, m.shape, out_sharding=explicit_spec(m)) for k, m in zip(keys, leaves)
    ]
    out = list(leaves)
    idx = [i for i, s in enumerate(sel) if s]
    if idx:
        groups = [[i] for i in idx] if scope == "layerwise" else [idx]
        alive = [
            sum((jnp.sum(leaves[i], dtype=jnp.int32) for i in g), jnp.int32(0)) for g in groups
        ]
        picked = select(
            [[rand[i] for i in g] for g in groups],
            [[jnp.ones(leaves[i].shape, bool) for i in g] for g in groups],
            ["given"] * len(groups),
            alive,
        )
        for g, marks in zip(groups, picked):
            for i, new in zip(g, marks):
                out[i] = new
    return jax.tree.unflatten(treedef, out)


def _prune_to(
    scores: chex.ArrayTree,
    mask: chex.ArrayTree,
    target: Any,
    *,
    scope: str = "layerwise",
    where: Filter = None,
    absolute: bool = False,
) -> chex.ArrayTree:
    """Prunes the lowest-scoring alive weights until ``round(target * n)`` prunable
    weights are dead, per leaf (``n`` its size) or over all prunable leaves (``n`` their
    total); a leaf (or pool) already that sparse is left as it is. ``target`` may be
    traced (its exact float32 value is used, as :func:`prune`'s traced ``amount``).
    ``absolute``: of ``|scores|`` (as :func:`_prune`)."""
    if scope not in ("layerwise", "global"):
        raise ValueError(f"scope must be 'layerwise' or 'global', got {scope!r}")
    check_mask(mask, scores)
    sel = jax.tree.leaves(prunable(scores, where))
    _check_scores(scores, sel)
    s_leaves = jax.tree.leaves(scores)
    m_leaves, treedef = jax.tree.flatten(mask)
    idx = [i for i, keep in enumerate(sel) if keep]
    groups = [[i] for i in idx] if scope == "layerwise" else [idx] * bool(idx)
    new = list(m_leaves)
    if groups:  # one search for every group
        gone = select(
            [[s_leaves[i] for i in g] for g in groups],
            [[m_leaves[i] for i in g] for g in groups],
            ["target"] * len(groups),
            [target] * len(groups),
            absolute=absolute,
        )
        for group, marks in zip(groups, gone):
            for i, g in zip(group, marks):
                new[i] = m_leaves[i] & ~g
    return jax.tree.unflatten(treedef, new)
