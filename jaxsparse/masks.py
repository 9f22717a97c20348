"""Mask pytrees: the ground floor of jaxsparse.

A mask mirrors its params: the same pytree structure, one ``bool`` array per leaf with
the leaf's shape, ``True`` where the weight is alive. Leaves that are never pruned
(biases, norms by default) carry all-``True`` arrays, never ``None``, so
``jax.tree.map(f, params, mask)`` always works.

Which leaves are *prunable* is decided by a ``where=`` filter: see
:mod:`jaxsparse.filters`.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.filters import Filter, check_structure, path_str, resolve_filter


def mask_like(params: chex.ArrayTree, where: Filter = None) -> chex.ArrayTree:
    """An all-``True`` boolean mask mirroring ``params``.

    ``where`` is accepted for symmetry with the rest of the API and validated, but every
    leaf (prunable or not) starts fully alive.

    Args:
      params: any pytree of arrays.
      where: the prunable-leaf filter (see the module docstring).

    Returns:
      A pytree of ``bool`` arrays, each with its param's shape, all ``True``.

    Examples:
        >>> mask = mask_like({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)})
        >>> mask["w"].dtype, mask["w"].shape
        (dtype('bool'), (3, 2))

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    resolve_filter(where)
    # ones_like, not ones(shape): each mask leaf takes its param's sharding, which a
    # select against the param needs on a mesh with Explicit axes.
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=bool), params)


def explicit_spec(x: Any) -> jax.sharding.PartitionSpec | None:
    """``x``'s partition spec when it lives on a mesh with Explicit axes, else ``None``.

    What to pass as ``out_sharding=`` to build an array laid out like ``x`` (a random
    score, a mask); ``None`` leaves the layout to XLA, as under Auto axes or no mesh.

    Examples:
        >>> explicit_spec(jnp.zeros(3)) is None
        True

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (a mask per weight).
    """
    aval = jax.typeof(x)
    axis_types = getattr(aval.sharding.mesh, "axis_types", ())
    if jax.sharding.AxisType.Explicit not in axis_types:
        return None
    spec = tuple(aval.sharding.spec)
    return jax.sharding.PartitionSpec(*spec, *(None,) * (len(aval.shape) - len(spec)))


def align(m: jax.Array, like: jax.Array) -> jax.Array:
    """``m`` resharded like ``like`` where the two differ on a mesh with Explicit axes.

    A select (``jnp.where``) between differently sharded operands is a type error under
    Explicit axes (the default of ``jax.make_mesh``); under Auto axes, or with no mesh,
    XLA picks the layout and ``m`` is returned as it is.

    Examples:
        >>> m = align(jnp.ones(3, bool), jnp.zeros(3))
        >>> m.dtype, m.shape
        (dtype('bool'), (3,))

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (a mask per weight).
    """
    want = explicit_spec(like)
    if want is None or jnp.shape(m) != jnp.shape(like) or explicit_spec(m) == want:
        return m
    return jax.sharding.reshard(m, want)


def zero_pruned(x: jax.Array, m: jax.Array) -> jax.Array:
    """One leaf with its pruned entries set to zero (dtype and sharding kept).

    Examples:
        >>> zero_pruned(jnp.array([1.0, -2.0]), jnp.array([True, False]))
        Array([1., 0.], dtype=float32)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    return jnp.where(align(m, x), x, jnp.zeros((), jnp.result_type(x)))


def check_mask(mask: chex.ArrayTree, params: chex.ArrayTree, *, name: str = "mask") -> None:
    """Raises if ``mask`` does not mirror ``params``, naming the first wrong path.

    Checks structure, then each leaf's shape and ``bool`` dtype. Runs on shapes only,
    so it is free under ``jit``.

    Raises:
      ValueError: structure or shape mismatch, naming the pytree path.
      TypeError: a mask leaf that is not ``bool``.

    Examples:
        >>> check_mask({"w": jnp.ones(3, bool)}, {"w": jnp.ones(4)})
        Traceback (most recent call last):
        ...
        ValueError: mask leaf 'w' has shape (3,), params have (4,)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    check_structure(mask, params, name=name)
    for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
        if jnp.result_type(m) != jnp.bool_:
            raise TypeError(
                f"{name} leaf '{path_str(path)}' has dtype {jnp.result_type(m)}, expected bool"
            )


def apply_mask(params: chex.ArrayTree, mask: chex.ArrayTree) -> chex.ArrayTree:
    """Zeroes the pruned weights: ``where(mask, params, 0)`` leaf by leaf.

    Args:
      params: any pytree of arrays.
      mask: a ``bool`` pytree mirroring ``params``.

    Returns:
      ``params`` with every pruned entry set to zero (dtypes kept).

    Raises:
      ValueError, TypeError: ``mask`` does not mirror ``params`` (see :func:`check_mask`).

    Examples:
        >>> apply_mask({"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([True, False])})
        {'w': Array([1., 0.], dtype=float32)}

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    check_mask(mask, params)
    return jax.tree.map(zero_pruned, params, mask)


def mask_prunable(mask: chex.ArrayTree, where: Filter = None) -> list[bool]:
    """Which leaves of a *mask* the filter ``where`` selects, in ``jax.tree.leaves`` order.

    The filter sees each mask leaf's path and a float32 stand-in of its shape: a ``bool``
    leaf is never "floating", yet it stands for a (floating) weight.

    Examples:
        >>> mask_prunable({"b": jnp.ones(3, bool), "w": jnp.ones((3, 2), bool)})
        [False, True]

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    pred = resolve_filter(where)
    return [
        bool(pred(path_str(path), jax.ShapeDtypeStruct(jnp.shape(m), jnp.float32)))
        for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]
    ]


def _selected(mask: chex.ArrayTree, where: Filter) -> list[tuple[str, jax.Array]]:
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    return [(path_str(p), m) for (p, m), s in zip(flat, mask_prunable(mask, where)) if s]


def counts(mask: chex.ArrayTree, where: Filter = None) -> tuple[jax.Array, int]:
    """``(alive, total)`` over the prunable leaves of ``mask``.

    Args:
      mask: a ``bool`` pytree.
      where: which leaves are counted (default: kernels, ``ndim >= 2``, not biases).

    Returns:
      ``alive``, an int32 scalar (traceable), and ``total``, a static Python int.

    Examples:
        >>> counts({"w": jnp.array([[True, False], [True, True]]), "b": jnp.ones(2, bool)})
        (Array(3, dtype=int32), 4)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    leaves = _selected(mask, where)
    total = sum(int(np.prod(jnp.shape(m))) for _, m in leaves)
    alive = sum((jnp.sum(m, dtype=jnp.int32) for _, m in leaves), jnp.int32(0))
    return alive, total


def sparsity(mask: chex.ArrayTree, where: Filter = None) -> jax.Array:
    """Global fraction of pruned weights over the prunable leaves.

    Args:
      mask: a ``bool`` pytree.
      where: which leaves are counted (default: kernels, ``ndim >= 2``, not biases).

    Returns:
      A float32 scalar in ``[0, 1]``.

    Raises:
      ValueError: ``where`` selects no leaf.

    Examples:
        >>> sparsity({"w": jnp.array([[True, False], [False, False]])})
        Array(0.75, dtype=float32)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    alive, total = counts(mask, where)
    if total == 0:
        raise ValueError("sparsity: no leaf of the mask is selected by where=")
    return 1.0 - alive / total


def density(mask: chex.ArrayTree, where: Filter = None) -> jax.Array:
    """Global fraction of alive weights over the prunable leaves (``1 - sparsity``).

    Args:
      mask: a ``bool`` pytree.
      where: which leaves are counted (default: kernels, ``ndim >= 2``, not biases).

    Returns:
      A float32 scalar in ``[0, 1]``.

    Raises:
      ValueError: ``where`` selects no leaf.

    Examples:
        >>> density({"w": jnp.array([[True, False], [False, False]])})
        Array(0.25, dtype=float32)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    return 1.0 - sparsity(mask, where)


def leaf_sparsity(mask: chex.ArrayTree) -> chex.ArrayTree:
    """Per-leaf sparsity: a pytree of scalars mirroring ``mask``.

    Every leaf is included, prunable or not.

    Args:
      mask: a ``bool`` pytree.

    Returns:
      A pytree of float32 scalars, each the fraction of ``False`` entries of its leaf.

    Examples:
        >>> leaf_sparsity({"w": jnp.array([True, False, False, False]), "b": jnp.ones(2, bool)})
        {'b': Array(0., dtype=float32), 'w': Array(0.75, dtype=float32)}

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    return jax.tree.map(lambda m: 1.0 - jnp.mean(m.astype(jnp.float32)), mask)


def report(mask: chex.ArrayTree, where: Filter = None) -> str:
    """A readable per-path table: shape, alive, total, sparsity, and a global line.

    Examples:
        >>> print(report({"w": jnp.array([[True, False], [True, True]])}))
        path   shape    alive   total  sparsity
        w      (2, 2)       3       4    25.00%
        total               3       4    25.00%

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    rows = []
    for path, m in _selected(mask, where):
        alive, total = int(jnp.sum(m)), int(np.prod(jnp.shape(m)))
        rows.append((path, str(tuple(jnp.shape(m))), alive, total))
    alive_all, total_all = sum(r[2] for r in rows), sum(r[3] for r in rows)
    rows.append(("total", "", alive_all, total_all))
    w_path = max(len("path"), *(len(r[0]) for r in rows))
    w_shape = max(len("shape"), *(len(r[1]) for r in rows))
    lines = [f"{'path':<{w_path}}  {'shape':<{w_shape}}  {'alive':>6}  {'total':>6}  sparsity"]
    for path, shape, alive, total in rows:
        sp = 100.0 * (1 - alive / total) if total else 0.0
        lines.append(f"{path:<{w_path}}  {shape:<{w_shape}}  {alive:>6}  {total:>6}  {sp:>7.2f}%")
    return "\n".join(lines)


def hamming(m1: chex.ArrayTree, m2: chex.ArrayTree, where: Filter = None) -> jax.Array:
    """Normalised Hamming distance: the fraction of prunable positions where masks differ.

    Examples:
        >>> hamming({"w": jnp.array([[1, 1], [0, 0]], bool)},
        ...         {"w": jnp.array([[1, 0], [0, 0]], bool)})
        Array(0.25, dtype=float32)

    References:
      You et al., "Drawing Early-Bird Tickets", ICLR 2020 (mask distance).
    """
    check_mask(m2, m1, name="m2")
    a, b = _selected(m1, where), _selected(m2, where)
    total = sum(int(np.prod(jnp.shape(x))) for _, x in a)
    if total == 0:
        raise ValueError("hamming: no leaf of the masks is selected by where=")
    diff = sum((jnp.sum(x != y, dtype=jnp.int32) for (_, x), (_, y) in zip(a, b)), jnp.int32(0))
    return diff / total


def overlap(m1: chex.ArrayTree, m2: chex.ArrayTree, where: Filter = None) -> jax.Array:
    """Intersection over union of the alive weights of two masks (1.0 for two empty masks).

    Examples:
        >>> overlap({"w": jnp.array([[1, 1], [0, 0]], bool)},
        ...         {"w": jnp.array([[1, 0], [1, 0]], bool)})
        Array(0.33333334, dtype=float32)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019; You et al.,
      "Drawing Early-Bird Tickets", ICLR 2020 (comparing masks).
    """
    check_mask(m2, m1, name="m2")
    a, b = _selected(m1, where), _selected(m2, where)
    if not a:
        raise ValueError("overlap: no leaf of the masks is selected by where=")
    inter = sum((jnp.sum(x & y, dtype=jnp.int32) for (_, x), (_, y) in zip(a, b)), jnp.int32(0))
    union = sum((jnp.sum(x | y, dtype=jnp.int32) for (_, x), (_, y) in zip(a, b)), jnp.int32(0))
    # equal counts give exactly 1.0 (a GPU may divide by a reciprocal: x / x = 0.99999994)
    return jnp.where(inter == union, 1.0, inter / jnp.maximum(union, 1))


def pack(mask: chex.ArrayTree) -> chex.ArrayTree:
    """Bit-packs a mask for storage: one ``uint8`` vector per leaf, 1 bit a weight.

    Examples:
        >>> pack({"w": jnp.ones((3, 3), bool)})["w"].shape
        (2,)

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (a ticket's mask
      is what gets stored).
    """
    return jax.tree.map(lambda m: jnp.packbits(jnp.ravel(m)), mask)


def unpack(packed: chex.ArrayTree, like: chex.ArrayTree) -> chex.ArrayTree:
    """Inverse of :func:`pack`; ``like`` (params or a mask) gives the leaf shapes.

    Args:
      packed: the output of :func:`pack`.
      like: a pytree with the original structure and leaf shapes.

    Returns:
      A ``bool`` pytree with ``like``'s structure and shapes.

    Raises:
      ValueError: a packed leaf whose length does not fit its shape, naming the path.

    Examples:
        >>> mask = {"w": jnp.array([[True, False, True], [False, True, True]])}
        >>> bool((unpack(pack(mask), mask)["w"] == mask["w"]).all())
        True

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (a ticket's mask
      is what gets stored).
    """

    def one(path, p, x):
        shape = jnp.shape(x)
        n = int(np.prod(shape))
        if jnp.shape(p) != ((n + 7) // 8,):
            raise ValueError(
                f"packed leaf '{path_str(path)}' has shape {jnp.shape(p)}, "
                f"expected ({(n + 7) // 8},) for a leaf of shape {shape}"
            )
        return jnp.unpackbits(jnp.asarray(p, jnp.uint8), count=n).astype(bool).reshape(shape)

    return jax.tree_util.tree_map_with_path(one, packed, like)
