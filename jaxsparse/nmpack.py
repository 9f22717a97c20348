"""N:M sparse kernels in compressed form: the ``n`` alive values of every group of ``m``.

A mask is *N:M along an axis* when every run of ``m`` consecutive weights along that axis
(groups ``0..m-1``, ``m..2m-1``, ...) holds exactly ``n`` alive weights, the pattern of
NVIDIA's 2:4 sparse tensor cores. :class:`NMPacked` stores, per group, the ``n`` alive
values and their offsets in the group (``uint8``, ascending): ``n/m`` of the values plus
one byte an alive weight, e.g. 2.5 bytes a float32 weight at 2:4 instead of 4.

For a Dense kernel ``(in, out)`` the groups run along the contracted axis ``0``, as the
hardware wants them. This CPU has no N:M units: :func:`nm_matmul` rebuilds the kernel
inside the program and runs one dense matmul, so the packed form saves memory, not time
(see ``experiments/bench/export.py``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class NMPacked:
    """An N:M sparse kernel: per group of ``m`` weights, ``n`` values and their offsets.

    Attributes:
      values: ``(shape[axis] // m, n, *other dims)``, the alive values of each group in
        ascending offset order (``axis`` moved to the front).
      indices: ``uint8``, same shape: each value's offset ``0..m-1`` in its group.
      n, m, axis: the pattern (static).
      shape: the kernel's shape (static).

    Examples:
        >>> p = js.export.nm_compress(jnp.ones((4, 3)), jnp.ones((4, 3), bool), n=2, m=2)
        >>> p.values.shape, p.indices.dtype, (p.n, p.m, p.axis, p.shape)
        ((2, 2, 3), dtype('uint8'), (2, 2, 0, (4, 3)))

    References:
      Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021 (2:4 sparsity).
    """

    values: jax.Array
    indices: jax.Array
    n: int
    m: int
    axis: int
    shape: tuple[int, ...]


jax.tree_util.register_dataclass(
    NMPacked, data_fields=["values", "indices"], meta_fields=["n", "m", "axis", "shape"]
)


def _check_pattern(shape: tuple[int, ...], n: int, m: int, axis: int, name: str) -> int:
    if not (isinstance(n, int) and isinstance(m, int) and 1 <= n <= m <= 256):
        raise ValueError(f"{name}: need integers 1 <= n <= m <= 256, got n={n!r}, m={m!r}")
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"{name}: axis {axis} is out of range for shape {tuple(shape)}")
    axis %= len(shape)
    if shape[axis] % m:
        raise ValueError(
            f"{name}: m={m} does not divide axis {axis} of shape {tuple(shape)} "
            f"(length {shape[axis]})"
        )
    return axis


def nm_compress(
    kernel: jax.Array, mask: jax.Array, n: int, m: int, axis: int = 0, *, name: str = "kernel"
) -> NMPacked:
    """Packs ``kernel * mask`` for an N:M ``mask``: ``n`` values and offsets a group.

    Args:
      kernel: the weights, any rank (a Dense kernel is ``(in, out)``).
      mask: ``bool``, ``kernel``'s shape, exactly ``n`` alive in every group of ``m``
        consecutive entries along ``axis``.
      n: alive weights a group.
      m: group length; must divide ``kernel.shape[axis]``.
      axis: the axis the groups run along (``0``, the contracted axis of a Dense kernel).
      name: what error messages call the kernel (its pytree path).

    Returns:
      The :class:`NMPacked` kernel; ``nm_decompress`` gives back ``kernel * mask``.

    Raises:
      ValueError: shapes differ, ``m`` does not divide the axis, a bad ``n``/``m``/``axis``,
        or (with a concrete mask) a group whose alive count is not ``n``, naming ``name``,
        the axis and the group. A traced mask cannot be checked: it must be N:M.
      TypeError: ``mask`` is not ``bool``.

    Examples:
        >>> kernel = jnp.arange(8.0).reshape(4, 2)
        >>> mask = jnp.array([[1, 0], [0, 1], [1, 1], [0, 0]], bool)
        >>> p = js.export.nm_compress(kernel, mask, n=1, m=2)
        >>> p.values[:, 0], p.indices[:, 0]
        (Array([[0., 3.], [4., 5.]], dtype=float32), Array([[0, 1], [0, 0]], dtype=uint8))

    References:
      Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021 (2:4 sparsity);
      Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks", ICLR 2021.
    """
    shape = tuple(jnp.shape(kernel))
    if tuple(jnp.shape(mask)) != shape:
        raise ValueError(f"{name}: mask has shape {tuple(jnp.shape(mask))}, kernel has {shape}")
    if jnp.result_type(mask) != jnp.bool_:
        raise TypeError(f"{name}: mask has dtype {jnp.result_type(mask)}, expected bool")
    axis = _check_pattern(shape, n, m, axis, name)
    groups = shape[axis] // m
    rest = shape[:axis] + shape[axis + 1 :]
    mg = jnp.moveaxis(mask, axis, 0).reshape(groups, m, *rest)
    if not isinstance(mg, jax.core.Tracer):
        alive = np.asarray(mg).sum(axis=1)
        bad = np.argwhere(alive != n)
        if bad.size:
            g, *where = bad[0]
            raise ValueError(
                f"{name}: mask is not {n}:{m} along axis {axis}: group {int(g)} "
                f"(entries {int(g) * m}..{int(g) * m + m - 1}) at other indices "
                f"{tuple(int(i) for i in where)} has {int(alive[tuple(bad[0])])} alive; "
                f"{len(bad)} groups are wrong"
            )
    kg = jnp.moveaxis(jnp.asarray(kernel), axis, 0).reshape(groups, m, *rest)
    # a stable sort of "dead" puts the n alive offsets first, in ascending order
    offsets = jnp.argsort(~mg, axis=1, stable=True)[:, :n]
    values = jnp.take_along_axis(kg, offsets, axis=1)
    return NMPacked(values, offsets.astype(jnp.uint8), n, m, axis, shape)


def nm_decompress(packed: NMPacked) -> jax.Array:
    """The dense kernel ``kernel * mask`` back from its :class:`NMPacked` form (exact).

    Args:
      packed: from :func:`nm_compress`.

    Returns:
      An array of ``packed.shape`` and the values' dtype, zero at pruned weights.

    Examples:
        >>> kernel = jnp.array([[1.0, 2.0], [3.0, 4.0]])
        >>> mask = jnp.array([[True, False], [False, True]])
        >>> js.export.nm_decompress(js.export.nm_compress(kernel, mask, n=1, m=2))
        Array([[1., 0.],
               [0., 4.]], dtype=float32)

    References:
      Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021.
    """
    v, idx = packed.values, packed.indices
    # one-hot over the m offsets instead of a scatter: n*m compares a group, no scatter
    slots = jnp.arange(packed.m, dtype=jnp.uint8).reshape(1, 1, packed.m, *([1] * (v.ndim - 2)))
    hit = idx[:, :, None] == slots
    dense = jnp.sum(jnp.where(hit, v[:, :, None], jnp.zeros((), v.dtype)), axis=1)
    axis = packed.axis
    moved = packed.shape[axis : axis + 1] + packed.shape[:axis] + packed.shape[axis + 1 :]
    return jnp.moveaxis(dense.reshape(moved), 0, axis)


def nm_matmul(x: jax.Array, packed: NMPacked) -> jax.Array:
    """``x @ (kernel * mask)`` for a packed 2-D kernel ``(in, out)``, any N:M axis.

    Rebuilds the kernel inside the program (``O(nnz * m)`` compares) and runs one dense
    matmul: on a CPU this costs a little more than the dense layer; the gain is memory.

    Args:
      x: ``(..., in)`` activations.
      packed: an :class:`NMPacked` 2-D kernel.

    Returns:
      ``(..., out)``.

    Raises:
      ValueError: the kernel is not 2-D, or ``x``'s last axis is not ``in``.

    Examples:
        >>> kernel = jnp.array([[1.0, 2.0], [3.0, 4.0]])
        >>> p = js.export.nm_compress(kernel, jnp.array([[1, 0], [0, 1]], bool), n=1, m=2)
        >>> js.export.nm_matmul(jnp.array([[1.0, 1.0]]), p)
        Array([[1., 4.]], dtype=float32)

    References:
      Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021.
    """
    if len(packed.shape) != 2:
        raise ValueError(f"nm_matmul: the packed kernel has shape {packed.shape}, not 2-D")
    if jnp.shape(x)[-1:] != packed.shape[:1]:
        raise ValueError(
            f"nm_matmul: x has shape {jnp.shape(x)}, the kernel takes {packed.shape[0]} inputs"
        )
    return x @ nm_decompress(packed)
