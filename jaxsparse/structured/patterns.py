"""Fine-grained structured patterns: N:M sparsity and whole blocks.

Both take scores (higher = keep) and work leaf by leaf on the leaves a ``where=`` filter
picks (default: kernels, ``ndim >= 2``); other leaves get all-``True`` masks or pass
through. A single array instead of a pytree is always used as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.filters import Filter, check_structure, path_str, resolve_filter
from jaxsparse.masks import check_mask


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _map_selected(
    fn: Callable[[str, Any], Any], other: Callable[[Any], Any], tree: chex.ArrayTree, where: Filter
) -> chex.ArrayTree:
    """``fn(path, leaf)`` on the leaves ``where`` picks (a bare array always), else ``other``."""
    if isinstance(tree, (jax.Array, np.ndarray)):
        return fn("", tree)
    pred = resolve_filter(where)
    return jax.tree_util.tree_map_with_path(
        lambda p, x: fn(path_str(p), x) if pred(path_str(p), x) else other(x), tree
    )


def _nm_leaf(path: str, x: jax.Array, n: int, m: int, axis: int) -> jax.Array:
    ndim = jnp.ndim(x)
    if not -ndim <= axis < ndim:
        raise ValueError(f"nm: axis {axis} is out of range for '{path}' of shape {jnp.shape(x)}")
    length = jnp.shape(x)[axis]
    if length % m:
        raise ValueError(
            f"nm: '{path}' has {length} entries along axis {axis}, not a multiple of m={m}"
        )
    s = jnp.moveaxis(jnp.asarray(x), axis, -1)
    s = s.reshape((*s.shape[:-1], length // m, m))
    s = jnp.where(jnp.isnan(s), -jnp.inf, s)
    # rank = how many in the group beat an entry; equal scores: the later one wins, so the
    # earlier is pruned first, as in jaxsparse.prune
    pos = jnp.arange(m)
    beats = (s[..., None, :] > s[..., :, None]) | (
        (s[..., None, :] == s[..., :, None]) & (pos[None, :] > pos[:, None])
    )
    keep = jnp.sum(beats, axis=-1) < n
    return jnp.moveaxis(keep.reshape(jnp.moveaxis(x, axis, -1).shape), -1, axis)


def nm(
    scores: chex.ArrayTree, n: int, m: int, *, axis: int = -1, where: Filter = None
) -> chex.ArrayTree:
    """An N:M mask: exactly ``n`` alive in every ``m`` consecutive entries along ``axis``.

    In each group of ``m`` the ``n`` highest scores stay; among equal scores the entry
    that comes first is pruned first (as in :func:`jaxsparse.prune`); NaN counts lowest.
    Each group ranks its ``m`` entries against each other (``O(m)`` work an entry, no
    sort), which suits the usual ``m`` of 4 to 16. For the sparse tensor cores of
    NVIDIA Ampere, 2:4 along a Dense kernel's input axis (``axis=0``, the reduction).

    Args:
      scores: a float array, or a pytree of them (e.g. ``js.scores.magnitude(params)``).
      n: alive entries per group, ``0 <= n <= m``.
      m: group length, ``>= 1``.
      axis: the axis the groups run along, in every selected leaf.
      where: in a pytree, which leaves get the pattern (default: kernels); the others
        get all-``True`` masks.

    Returns:
      A ``bool`` mask with ``scores``' structure and shapes.

    Raises:
      ValueError: ``n`` or ``m`` out of range, ``axis`` out of range for a leaf, or an
        axis length that ``m`` does not divide, naming the leaf's path.

    Examples:
        >>> w = jnp.array([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, 1.0, 0.0]])
        >>> js.structured.nm(jnp.abs(w), 2, 4)
        Array([[False,  True,  True, False, False,  True,  True, False]], dtype=bool)

    References:
      Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021 (2:4 sparsity);
      Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks", ICLR 2021.
    """
    if not (_is_int(n) and _is_int(m)) or m < 1 or not 0 <= n <= m:
        raise ValueError(f"nm: need integers 0 <= n <= m and m >= 1, got n={n!r}, m={m!r}")
    if not _is_int(axis):
        raise ValueError(f"nm: axis must be an int, got {axis!r}")
    return _map_selected(
        lambda p, x: _nm_leaf(p, x, int(n), int(m), int(axis)),
        lambda x: jnp.ones_like(x, dtype=bool),
        scores,
        where,
    )


def _check_block(block: Any, who: str) -> tuple[int, ...]:
    if (
        not isinstance(block, Sequence)
        or not block
        or not all(_is_int(b) and b >= 1 for b in block)
    ):
        raise ValueError(f"{who}: block must be a non-empty tuple of ints >= 1, got {block!r}")
    return tuple(int(b) for b in block)


def _pool_leaf(path: str, x: jax.Array, block: tuple[int, ...]) -> jax.Array:
    shape, k = jnp.shape(x), len(block)
    if len(shape) < k:
        raise ValueError(f"blocks: '{path}' of shape {shape} has fewer axes than block {block}")
    lead, tail = shape[: len(shape) - k], shape[len(shape) - k :]
    for size, b in zip(tail, block):
        if size % b:
            raise ValueError(
                f"blocks: '{path}' of shape {shape}: {size} is not a multiple of block {block}"
            )
    split = [d for size, b in zip(tail, block) for d in (size // b, b)]
    inner = tuple(len(lead) + 2 * i + 1 for i in range(k))
    return jnp.mean(jnp.asarray(x, jnp.float32).reshape((*lead, *split)), axis=inner)


def blocks(scores: chex.ArrayTree, block: Sequence[int], *, where: Filter = None) -> chex.ArrayTree:
    """Block scores: the mean score of each block over the trailing axes.

    With ``block = (bh, bw)`` a ``[..., H, W]`` score leaf becomes ``[..., H/bh, W/bw]``
    (a conv kernel ``[kh, kw, in, out]`` gets ``in x out`` blocks at every position).
    Prune the result like any scores, with the same ``where`` (every block has the same
    number of weights, so fractions of blocks are fractions of weights), then turn the
    block mask back into a param mask with :func:`unblock`::

        bs = js.structured.blocks(js.scores.magnitude(params), (4, 4))
        bmask = js.prune(bs, js.mask_like(bs), 0.5, scope="global")
        mask = js.structured.unblock(bmask, (4, 4), params)

    Keep ``bmask`` for later rounds: pruning it again keeps the masks nested.

    Args:
      scores: a float array or a pytree of them.
      block: block size along each of the trailing ``len(block)`` axes.
      where: in a pytree, which leaves are pooled (default: kernels); the others pass
        through unchanged.

    Returns:
      ``scores``' structure; pooled leaves are float32 and ``block`` times smaller.

    Raises:
      ValueError: a bad ``block``; a leaf with too few axes or sizes ``block`` does not
        divide, naming its path.

    Examples:
        >>> js.structured.blocks(jnp.arange(8.0).reshape(2, 4), (2, 2))
        Array([[2.5, 4.5]], dtype=float32)

    References:
      Lee et al., "JaxPruner", 2023 (block sparsity by pooled scores); Gray et al.,
      "GPU Kernels for Block-Sparse Weights", 2017.
    """
    block = _check_block(block, "blocks")
    return _map_selected(lambda p, x: _pool_leaf(p, x, block), lambda x: x, scores, where)


def unblock(
    block_mask: chex.ArrayTree,
    block: Sequence[int],
    params: chex.ArrayTree,
    *,
    where: Filter = None,
) -> chex.ArrayTree:
    """The param mask of a block mask: each block entry repeated over its block.

    Args:
      block_mask: a ``bool`` pytree with the structure of :func:`blocks`' output.
      block: the block size given to :func:`blocks`.
      params: the params (or scores) the mask must mirror.
      where: the filter given to :func:`blocks`; unselected leaves are taken as they are.

    Returns:
      A ``bool`` pytree mirroring ``params``.

    Raises:
      ValueError: a structure that differs from ``params``', or a leaf whose expanded
        shape is not its param's, naming the path.

    Examples:
        >>> js.structured.unblock(jnp.array([[True, False]]), (2, 2), jnp.ones((2, 4)))
        Array([[ True,  True, False, False],
               [ True,  True, False, False]], dtype=bool)

    References:
      Lee et al., "JaxPruner", 2023 (block sparsity).
    """
    block = _check_block(block, "unblock")

    def grow(path: str, bm: jax.Array | np.ndarray, like: Any) -> jax.Array:
        out = jnp.asarray(bm)
        nd = out.ndim
        if nd < len(block):
            raise ValueError(f"unblock: '{path}' of shape {out.shape} has fewer axes than block")
        for i, b in enumerate(block):
            out = jnp.repeat(out, b, axis=nd - len(block) + i)
        if out.shape != jnp.shape(like):
            raise ValueError(
                f"unblock: '{path}' expands to {out.shape}, params have {jnp.shape(like)}"
            )
        return out

    if isinstance(block_mask, (jax.Array, np.ndarray)):
        return grow("", block_mask, params)
    check_structure(block_mask, params, name="unblock: block_mask", shapes=False)
    pred = resolve_filter(where)
    out = jax.tree_util.tree_map_with_path(
        lambda p, bm, x: grow(path_str(p), bm, x) if pred(path_str(p), x) else bm,
        block_mask,
        params,
    )
    check_mask(out, params, name="unblock: mask")
    return out
