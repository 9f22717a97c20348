"""Group specs: which param slices make up one prunable unit; group scores, expand, shrink.

A *group spec* is a plain mapping ``{set_name: [(path_regex, axis), ...]}``. Group ``c``
of a set is slice ``c`` along ``axis`` of every leaf whose path an entry's regex matches
(searched in the ``/``-joined path, as ``where=`` regexes are; anchor it with ``^...$``
to be exact). A *group mask* is ``{set_name: bool vector}`` and group scores
``{set_name: float vector}``, one entry per group.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.filters import Filter, is_floating, path_str, resolve_filter

GroupSpec = Mapping[str, Sequence[tuple[str, int]]]


class _Slice(NamedTuple):
    leaf: int  # the leaf's position in jax.tree.leaves order
    path: str
    axis: int  # non-negative


def _resolve(spec: GroupSpec, tree: chex.ArrayTree) -> dict[str, tuple[int, list[_Slice]]]:
    """``{set: (number of groups, slices)}``, validating the spec against ``tree``."""
    if not isinstance(spec, Mapping) or not spec:
        raise TypeError(f"group spec must be a non-empty mapping, got {type(spec).__name__}")
    flat = [(path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]
    owner: dict[tuple[int, int], str] = {}
    out = {}
    for name, entries in spec.items():
        # validates input that breaks the annotation (a bare string is a Sequence too)
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence) or not entries:  # type: ignore[unreachable]
            raise TypeError(f"group spec: set {name!r} must be a non-empty list of (regex, axis)")
        slices: list[_Slice] = []
        for entry in entries:
            if (
                not isinstance(entry, (tuple, list))
                or len(entry) != 2
                or not isinstance(entry[0], str)
                or isinstance(entry[1], bool)
                or not isinstance(entry[1], (int, np.integer))
            ):
                raise TypeError(
                    f"group spec: set {name!r} has entry {entry!r}; expected (regex, axis)"
                )
            regex, axis = entry
            pattern = re.compile(regex)
            hits = [(i, p, x) for i, (p, x) in enumerate(flat) if pattern.search(p)]
            if not hits:
                raise ValueError(f"group spec: set {name!r}: regex {regex!r} matches no leaf")
            for i, p, x in hits:
                ndim = len(jnp.shape(x))
                if not -ndim <= axis < ndim:
                    raise ValueError(
                        f"group spec: set {name!r}: axis {axis} is out of range for "
                        f"'{p}' of shape {jnp.shape(x)}"
                    )
                s = _Slice(i, p, int(axis) % ndim)
                other = owner.setdefault((s.leaf, s.axis), name)
                if other != name:
                    raise ValueError(
                        f"group spec: axis {s.axis} of '{p}' is in two sets, {other!r} and {name!r}"
                    )
                if s not in slices:
                    slices.append(s)
        sizes = [jnp.shape(flat[s.leaf][1])[s.axis] for s in slices]
        for s, n in zip(slices, sizes):
            if n != sizes[0]:
                first = slices[0]
                raise ValueError(
                    f"group spec: set {name!r}: slices do not line up: '{first.path}' has "
                    f"{sizes[0]} along axis {first.axis} but '{s.path}' has {n} along "
                    f"axis {s.axis}"
                )
        out[name] = (int(sizes[0]), slices)
    return out


def check_spec(spec: GroupSpec, params: chex.ArrayTree) -> dict[str, int]:
    """Validates a group spec against ``params`` and returns each set's number of groups.

    Args:
      spec: ``{set_name: [(path_regex, axis), ...]}``.
      params: the pytree the spec refers to (params, a variables dict, an NNX state).

    Returns:
      ``{set_name: number_of_groups}``.

    Raises:
      ValueError: a regex that matches no leaf, an axis out of range, slices of one set
        with different lengths (naming both paths), or one axis in two sets.
      TypeError: a spec that is not ``{name: [(regex, axis), ...]}``.

    Examples:
        >>> params = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))}}
        >>> js.structured.check_spec({"a": [("a/kernel", 1), ("b/kernel", 0)]}, params)
        {'a': 4}

    References:
      Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (a filter and the
      input channels it feeds are one unit).
    """
    return {name: n for name, (n, _) in _resolve(spec, params).items()}


def _check_group_tree(tree: Any, groups: Mapping, name: str, *, bool_dtype: bool) -> None:
    if not isinstance(tree, Mapping):
        raise TypeError(f"{name} must be a mapping {{set_name: vector}}, got {type(tree)}")
    if set(tree) != set(groups):
        raise ValueError(
            f"{name} does not match the spec: missing sets {sorted(set(groups) - set(tree))}, "
            f"unexpected sets {sorted(set(tree) - set(groups))}"
        )
    for key, (n, _) in groups.items():
        x = tree[key]
        if jnp.shape(x) != (n,):
            raise ValueError(f"{name}[{key!r}] has shape {jnp.shape(x)}, the spec needs ({n},)")
        if bool_dtype and jnp.result_type(x) != jnp.bool_:
            raise TypeError(f"{name}[{key!r}] has dtype {jnp.result_type(x)}, expected bool")


def group_scores(
    params: chex.ArrayTree, spec: GroupSpec, how: str = "l1", *, where: Filter = None
) -> dict[str, jax.Array]:
    """One importance score per group: the L1 or L2 norm of all its slices together.

    Prune the result with :func:`jaxsparse.prune` and ``where=js.all_leaves`` (its
    default filter picks ``ndim >= 2`` leaves and would skip these vectors)::

        gs = js.structured.group_scores(params, spec)
        gmask = js.prune(gs, js.mask_like(gs), 0.3, scope="global", where=js.all_leaves)

    Any ``{set_name: float vector}`` works in its place, e.g. ``|BN gamma|`` (which is
    ``group_scores(params, spec, where="BatchNorm_.*/scale")``) or the absolute slimming
    coefficients of EarlyBERT.

    Args:
      params: the params the spec refers to.
      spec: a group spec.
      how: ``"l1"`` (sum of ``|w|``) or ``"l2"`` (root of the sum of ``w**2``).
      where: only the slices of leaves this filter picks count (default: every slice).

    Returns:
      ``{set_name: float32 vector of length number_of_groups}``.

    Raises:
      ValueError: a bad spec (see :func:`check_spec`), an unknown ``how``, or a set in
        which ``where`` picks no leaf.
      TypeError: a non-floating leaf in a set, naming its path.

    Examples:
        >>> params = {"a": {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.0]])},
        ...           "b": {"kernel": jnp.array([[1.0], [1.0]])}}
        >>> spec = {"a": [("a/kernel", 1), ("b/kernel", 0)]}
        >>> js.structured.group_scores(params, spec)
        {'a': Array([5., 3.], dtype=float32)}

    References:
      Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (L1 of a filter);
      Liu et al., "Network Slimming", ICCV 2017 (|gamma|).
    """
    if how not in ("l1", "l2"):
        raise ValueError(f"group_scores: how must be 'l1' or 'l2', got {how!r}")
    pred = None if where is None else resolve_filter(where)
    leaves = jax.tree.leaves(params)
    out = {}
    for name, (n, slices) in _resolve(spec, params).items():
        total, used = jnp.zeros((n,), jnp.float32), 0
        for s in slices:
            x = leaves[s.leaf]
            if pred is not None and not pred(s.path, x):
                continue
            if not is_floating(x):
                raise TypeError(f"group_scores: leaf '{s.path}' of set {name!r} is not floating")
            axes = tuple(a for a in range(jnp.ndim(x)) if a != s.axis)
            x = jnp.asarray(x, jnp.float32)
            total = total + jnp.sum(jnp.abs(x) if how == "l1" else x * x, axis=axes)
            used += 1
        if not used:
            raise ValueError(f"group_scores: where= picks no leaf of set {name!r}")
        out[name] = total if how == "l1" else jnp.sqrt(total)
    return out


def expand(
    group_mask: Mapping[str, jax.Array], spec: GroupSpec, params: chex.ArrayTree
) -> chex.ArrayTree:
    """The param mask of a group mask: a pruned group prunes every one of its slices.

    Leaves no set touches are all ``True``; a leaf in several sets (a layer's kernel is
    in its own set on its output axis and in the previous layer's on its input axis) is
    pruned where any of them is. The result is an ordinary mask:
    :func:`jaxsparse.masked`, :func:`jaxsparse.apply_mask` and the rest take it as it is.
    Pure and jittable (the group mask is data).

    Args:
      group_mask: ``{set_name: bool vector}``, ``True`` = the group is alive.
      spec: a group spec.
      params: the tree the mask mirrors (params, or a variables dict / NNX state if the
        spec's regexes match its paths).

    Returns:
      A ``bool`` pytree mirroring ``params``.

    Raises:
      ValueError / TypeError: a bad spec, or a group mask whose sets or lengths differ
        from the spec's.

    Examples:
        >>> params = {"a": {"kernel": jnp.ones((2, 3))}, "b": {"kernel": jnp.ones((3, 1))}}
        >>> spec = {"a": [("a/kernel", 1), ("b/kernel", 0)]}
        >>> m = js.structured.expand({"a": jnp.array([True, False, True])}, spec, params)
        >>> m["a"]["kernel"], m["b"]["kernel"][:, 0]
        (Array([[ True, False,  True],
               [ True, False,  True]], dtype=bool), Array([ True, False,  True], dtype=bool))

    References:
      Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017; You et al.,
      "Drawing Early-Bird Tickets", ICLR 2020.
    """
    groups = _resolve(spec, params)
    _check_group_tree(group_mask, groups, "expand: group_mask", bool_dtype=True)
    leaves, treedef = jax.tree.flatten(params)
    out = [jnp.ones_like(x, dtype=bool) for x in leaves]
    for name, (n, slices) in groups.items():
        g = jnp.asarray(group_mask[name])
        for s in slices:
            shape = [1] * out[s.leaf].ndim
            shape[s.axis] = n
            out[s.leaf] = out[s.leaf] & g.reshape(shape)
    return jax.tree.unflatten(treedef, out)


def shrink(
    params: chex.ArrayTree, group_mask: Mapping[str, jax.Array], spec: GroupSpec
) -> tuple[chex.ArrayTree, dict[str, int]]:
    """Physically removes every pruned group: a smaller params pytree and the new widths.

    Every slice of a pruned group is cut out of every leaf in its set, so a model whose
    widths are constructor arguments, built with the returned ``widths``, takes the
    result as its params and computes what the masked full model computes. Pass the
    whole variables dict (``{"params": ..., "batch_stats": ...}``) or an NNX state to
    slice BatchNorm statistics too: the spec's regexes are matched against its paths
    (the helpers' regexes match ``params/...`` and ``batch_stats/...`` alike).

    Shapes change, so ``shrink`` runs on concrete arrays, outside ``jit``.

    Args:
      params: params, a variables dict or an NNX ``State`` / pure dict.
      group_mask: ``{set_name: bool vector}``, ``True`` = keep the group.
      spec: a group spec.

    Returns:
      ``(smaller, widths)``: the tree with ``params``' structure and smaller leaves, and
      ``{set_name: number of groups kept}``.

    Raises:
      ValueError / TypeError: a bad spec or group mask; a traced group mask (``TypeError``).

    Examples:
        >>> params = {"a": {"kernel": jnp.ones((2, 3))}, "b": {"kernel": jnp.ones((3, 1))}}
        >>> spec = {"a": [("a/kernel", 1), ("b/kernel", 0)]}
        >>> small, widths = js.structured.shrink(params, {"a": jnp.array([1, 0, 1], bool)}, spec)
        >>> small["a"]["kernel"].shape, small["b"]["kernel"].shape, widths
        ((2, 2), (2, 1), {'a': 2})

    References:
      Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017; You et al.,
      "Drawing Early-Bird Tickets", ICLR 2020 (the ticket is pruned physically).
    """
    groups = _resolve(spec, params)
    _check_group_tree(group_mask, groups, "shrink: group_mask", bool_dtype=True)
    keep = {}
    for name in groups:
        g = group_mask[name]
        if isinstance(g, jax.core.Tracer):
            raise TypeError(
                "shrink changes shapes, so it cannot run under jit: pass a concrete group mask"
            )
        keep[name] = np.flatnonzero(np.asarray(g))
    leaves, treedef = jax.tree.flatten(params)
    cut = set()
    for name, (_, slices) in groups.items():
        for s in slices:
            # on the host: an eager jnp.take compiles once per leaf shape (seconds each)
            leaves[s.leaf] = np.take(np.asarray(leaves[s.leaf]), keep[name], axis=s.axis)
            cut.add(s.leaf)
    leaves = [jnp.asarray(x) if i in cut else x for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, leaves), {k: len(v) for k, v in keep.items()}
