"""Mask pytrees: the ground floor of jaxsparse.

A mask mirrors its params: the same pytree structure, one ``bool`` array per leaf with
the leaf's shape, ``True`` where the weight is alive. Leaves that are never pruned
(biases, norms by default) carry all-``True`` arrays, never ``None``, so
``jax.tree.map(f, params, mask)`` always works.

Which leaves are *prunable* is decided by a filter (``where=``), in the spirit of
equinox's filter specs:

* ``kernels`` (the default): every floating leaf with ``ndim >= 2``;
* a string: a regular expression searched in the leaf's path (``"Dense_0/kernel"``);
* a callable ``(path: str, leaf) -> bool``;
* ``all_leaves``: every floating leaf.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

Filter = str | Callable[[str, Any], bool] | None


def path_str(path: jax.tree_util.KeyPath) -> str:
    """The ``/``-joined path of a leaf, e.g. ``"params/Dense_0/kernel"``."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def kernels(path: str, leaf: Any) -> bool:
    """Default filter: floating leaves with ``ndim >= 2`` (dense and conv kernels)."""
    del path
    return _is_float(leaf) and len(jnp.shape(leaf)) >= 2


def all_leaves(path: str, leaf: Any) -> bool:
    """Filter that selects every floating leaf (biases and norms too)."""
    del path
    return _is_float(leaf)


def _is_float(leaf: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def resolve_filter(where: Filter) -> Callable[[str, Any], bool]:
    """Turns a ``where=`` argument into a ``(path, leaf) -> bool`` predicate."""
    if where is None:
        return kernels
    if isinstance(where, str):
        pattern = re.compile(where)
        return lambda path, leaf: _is_float(leaf) and pattern.search(path) is not None
    if callable(where):
        return where
    raise TypeError(
        f"where= must be None, a regex string or a callable (path, leaf) -> bool; "
        f"got {type(where).__name__}"
    )


def prunable(tree: chex.ArrayTree, where: Filter = None) -> chex.ArrayTree:
    """A pytree of Python bools mirroring ``tree``: ``True`` where a leaf is prunable.

    Example:
        >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
        >>> prunable(params)
        {'b': False, 'w': True}
    """
    pred = resolve_filter(where)
    return jax.tree_util.tree_map_with_path(lambda p, x: bool(pred(path_str(p), x)), tree)


def mask_like(params: chex.ArrayTree, where: Filter = None) -> chex.ArrayTree:
    """An all-``True`` boolean mask mirroring ``params``.

    ``where`` is accepted for symmetry with the rest of the API and validated, but every
    leaf (prunable or not) starts fully alive.

    Args:
      params: any pytree of arrays.
      where: the prunable-leaf filter (see the module docstring).

    Returns:
      A pytree of ``bool`` arrays, each with its param's shape, all ``True``.

    Example:
        >>> mask = mask_like({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)})
        >>> mask["w"].dtype, mask["w"].shape
        (dtype('bool'), (3, 2))

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    resolve_filter(where)
    return jax.tree.map(lambda x: jnp.ones(jnp.shape(x), dtype=bool), params)


def check_structure(
    tree: chex.ArrayTree, like: chex.ArrayTree, *, name: str, like_name: str = "params"
) -> None:
    """Raises ``ValueError`` if ``tree`` differs from ``like`` in structure or leaf shapes.

    The message names ``name`` and the first differing pytree paths. Shapes only: free
    under ``jit``.
    """
    t_paths, l_paths = _paths(tree), _paths(like)
    if t_paths != l_paths:
        missing = sorted(set(l_paths) - set(t_paths))
        extra = sorted(set(t_paths) - set(l_paths))
        raise ValueError(
            f"{name} does not mirror {like_name}: missing paths {missing[:5]}, "
            f"unexpected paths {extra[:5]}"
        )
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(like), strict=True
    ):
        if jnp.shape(x) != jnp.shape(y):
            raise ValueError(
                f"{name} leaf '{path_str(path)}' has shape {jnp.shape(x)}, "
                f"{like_name} have {jnp.shape(y)}"
            )


def check_mask(mask: chex.ArrayTree, params: chex.ArrayTree, *, name: str = "mask") -> None:
    """Raises if ``mask`` does not mirror ``params``, naming the first wrong path.

    Checks structure, then each leaf's shape and ``bool`` dtype. Runs on shapes only,
    so it is free under ``jit``.

    Raises:
      ValueError: structure or shape mismatch, naming the pytree path.
      TypeError: a mask leaf that is not ``bool``.

    Example:
        >>> check_mask({"w": jnp.ones(3, bool)}, {"w": jnp.ones(4)})
        Traceback (most recent call last):
        ...
        ValueError: mask leaf 'w' has shape (3,), params have (4,)
    """
    check_structure(mask, params, name=name)
    for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
        if jnp.result_type(m) != jnp.bool_:
            raise TypeError(
                f"{name} leaf '{path_str(path)}' has dtype {jnp.result_type(m)}, expected bool"
            )


def _paths(tree: chex.ArrayTree) -> list[str]:
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def apply_mask(params: chex.ArrayTree, mask: chex.ArrayTree) -> chex.ArrayTree:
    """Zeroes the pruned weights: ``where(mask, params, 0)`` leaf by leaf.

    Example:
        >>> apply_mask({"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([True, False])})
        {'w': Array([1., 0.], dtype=float32)}
    """
    check_mask(mask, params)
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, mask)


def _selected(mask: chex.ArrayTree, where: Filter) -> list[tuple[str, jax.Array]]:
    pred = resolve_filter(where)
    out = []
    for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
        # The filter sees the mask leaf; a bool leaf is not "floating", so filters get a
        # float stand-in with the same shape.
        stand_in = jax.ShapeDtypeStruct(jnp.shape(m), jnp.float32)
        if pred(path_str(path), stand_in):
            out.append((path_str(path), m))
    return out


def counts(mask: chex.ArrayTree, where: Filter = None) -> tuple[jax.Array, int]:
    """``(alive, total)`` over the prunable leaves of ``mask``."""
    leaves = _selected(mask, where)
    total = sum(int(np.prod(jnp.shape(m))) for _, m in leaves)
    alive = sum((jnp.sum(m, dtype=jnp.int32) for _, m in leaves), jnp.int32(0))
    return alive, total


def sparsity(mask: chex.ArrayTree, where: Filter = None) -> jax.Array:
    """Global fraction of pruned weights over the prunable leaves.

    Example:
        >>> sparsity({"w": jnp.array([[True, False], [False, False]])})
        Array(0.75, dtype=float32)
    """
    alive, total = counts(mask, where)
    if total == 0:
        raise ValueError("sparsity: no leaf of the mask is selected by where=")
    return 1.0 - alive / total


def density(mask: chex.ArrayTree, where: Filter = None) -> jax.Array:
    """Global fraction of alive weights over the prunable leaves (``1 - sparsity``)."""
    return 1.0 - sparsity(mask, where)


def leaf_sparsity(mask: chex.ArrayTree) -> chex.ArrayTree:
    """Per-leaf sparsity: a pytree of scalars mirroring ``mask``."""
    return jax.tree.map(lambda m: 1.0 - jnp.mean(m.astype(jnp.float32)), mask)


def report(mask: chex.ArrayTree, where: Filter = None) -> str:
    """A readable per-path table: shape, alive, total, sparsity, and a global line.

    Example:
        >>> print(report({"w": jnp.array([[True, False], [True, True]])}))
        path   shape    alive   total  sparsity
        w      (2, 2)       3       4    25.00%
        total               3       4    25.00%
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

    Example:
        >>> hamming({"w": jnp.array([[1, 1], [0, 0]], bool)},
        ...         {"w": jnp.array([[1, 0], [0, 0]], bool)})
        Array(0.25, dtype=float32)

    References:
      You et al., "Drawing Early-Bird Tickets", ICLR 2020 (mask distance).
    """
    check_mask(m2, m1, name="m2")
    a, b = _selected(m1, where), _selected(m2, where)
    total = sum(int(np.prod(jnp.shape(x))) for _, x in a)
    diff = sum((jnp.sum(x != y, dtype=jnp.int32) for (_, x), (_, y) in zip(a, b)), jnp.int32(0))
    return diff / total


def overlap(m1: chex.ArrayTree, m2: chex.ArrayTree, where: Filter = None) -> jax.Array:
    """Intersection over union of the alive weights of two masks (1.0 for two empty masks).

    Example:
        >>> overlap({"w": jnp.array([[1, 1], [0, 0]], bool)},
        ...         {"w": jnp.array([[1, 0], [1, 0]], bool)})
        Array(0.33333334, dtype=float32)
    """
    check_mask(m2, m1, name="m2")
    a, b = _selected(m1, where), _selected(m2, where)
    inter = sum((jnp.sum(x & y, dtype=jnp.int32) for (_, x), (_, y) in zip(a, b)), jnp.int32(0))
    union = sum((jnp.sum(x | y, dtype=jnp.int32) for (_, x), (_, y) in zip(a, b)), jnp.int32(0))
    return jnp.where(union == 0, 1.0, inter / jnp.maximum(union, 1))


def pack(mask: chex.ArrayTree) -> chex.ArrayTree:
    """Bit-packs a mask for storage: one ``uint8`` vector per leaf, 1 bit a weight.

    Example:
        >>> pack({"w": jnp.ones((3, 3), bool)})["w"].shape
        (2,)
    """
    return jax.tree.map(lambda m: jnp.packbits(jnp.ravel(m)), mask)


def unpack(packed: chex.ArrayTree, like: chex.ArrayTree) -> chex.ArrayTree:
    """Inverse of :func:`pack`; ``like`` (params or a mask) gives the leaf shapes.

    Raises:
      ValueError: a packed leaf whose length does not fit its shape, naming the path.
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
