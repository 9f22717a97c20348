"""The early-bird detector: has the mask stopped changing?

You et al. draw the ticket as soon as the mask is stable: after each epoch a mask is
computed (e.g. a channel mask from ``|BN gamma|``) and pushed into a FIFO of the last
``window`` masks (5); the early bird is found when the normalised Hamming distance of the
newest mask to every older one in the FIFO is at most ``eps`` (0.1).

The detector is a pure state machine, as an optax transform is: :func:`init` builds an
:class:`EarlyBirdState` from a first mask (for its structure only; nothing is pushed),
:func:`update` pushes a mask, :func:`distances` and :func:`found` read the state. Masks are
stored bit-packed (:func:`jaxsparse.pack`, one bit a weight) and the state's shapes never
change, so a jitted ``update`` compiles once and the detector can ride in a ``lax.scan``
carry. Any mask pytree works: a param mask or a group mask
(:mod:`jaxsparse.structured`).

The distance counts every entry of the leaves selected by ``where`` (default: all
leaves, as for a group mask), i.e. :func:`jaxsparse.hamming` with that filter. For a
param mask, ``where=js.kernels`` leaves the all-``True`` biases out of the count.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.filters import Filter, all_leaves, check_structure, path_str
from jaxsparse.masks import mask_prunable, pack


class EarlyBirdState(NamedTuple):
    """State of the early-bird detector (a pytree: jit, scan and vmap it freely).

    Attributes:
      masks: the FIFO, one ``uint8`` array of shape ``(window, ceil(size / 8))`` per
        mask leaf (bit-packed rows, oldest first, newest last); leaves left out by
        ``where`` have shape ``(window, 0)``.
      count: int32 scalar, how many masks have been pushed.
      size: int32 scalar, how many mask entries a distance is normalised by.

    Examples:
        >>> eb = js.early_bird.init({"w": jnp.ones((3, 4), bool)}, window=5)
        >>> eb.masks["w"].shape, int(eb.count), int(eb.size)
        ((5, 2), 0, 12)

    References:
      You et al., "Drawing Early-Bird Tickets", ICLR 2020.
    """

    masks: chex.ArrayTree
    # a field named like tuple.count, which it shadows; never called as a method
    count: jax.Array  # type: ignore[assignment]
    size: jax.Array


def _check_bool(mask: chex.ArrayTree, name: str) -> None:
    for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
        if jnp.result_type(m) != jnp.bool_:
            raise TypeError(
                f"{name} leaf '{path_str(path)}' has dtype {jnp.result_type(m)}, expected bool"
            )


def init(mask: chex.ArrayTree, window: int = 5, *, where: Filter = all_leaves) -> EarlyBirdState:
    """An empty detector for masks shaped like ``mask`` (which is not pushed).

    Args:
      mask: a ``bool`` pytree; later masks must have its structure and leaf sizes.
      window: FIFO length (the paper's 5): the newest mask is compared with the
        ``window - 1`` before it.
      where: which mask leaves count in the distance (default: every leaf).

    Returns:
      An :class:`EarlyBirdState` with ``count == 0``.

    Raises:
      ValueError: ``window`` is not an int >= 2, or ``where`` selects no entry.
      TypeError: a mask leaf that is not ``bool``, naming its path.

    Examples:
        >>> eb = js.early_bird.init({"g": jnp.ones(8, bool)}, window=3)
        >>> js.early_bird.distances(eb)
        Array([inf, inf], dtype=float32)

    References:
      You et al., "Drawing Early-Bird Tickets", ICLR 2020 (FIFO of 5 masks).
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f"early_bird.init: window must be an int >= 2, got {window!r}")
    _check_bool(mask, "early_bird.init: mask")
    sel = mask_prunable(mask, where)
    leaves, treedef = jax.tree.flatten(mask)
    size = sum(int(np.prod(jnp.shape(m))) for m, s in zip(leaves, sel) if s)
    if size == 0:
        raise ValueError("early_bird.init: where= selects no mask entry to compare")
    fifo = [
        jnp.zeros((int(window), (int(np.prod(jnp.shape(m))) + 7) // 8 if s else 0), jnp.uint8)
        for m, s in zip(leaves, sel)
    ]
    return EarlyBirdState(
        masks=jax.tree.unflatten(treedef, fifo), count=jnp.int32(0), size=jnp.int32(size)
    )


def update(eb: EarlyBirdState, mask: chex.ArrayTree) -> EarlyBirdState:
    """Pushes ``mask`` into the FIFO (the oldest mask drops out once it is full).

    Pure and shape-static: under ``jit`` it compiles once, whatever the masks.

    Args:
      eb: the detector.
      mask: a ``bool`` pytree with the structure of the mask given to :func:`init`.

    Returns:
      The new state, ``count`` one higher.

    Raises:
      ValueError: a structure or leaf size different from the first mask's, naming the
        path.
      TypeError: a mask leaf that is not ``bool``, naming its path.

    Examples:
        >>> m = {"g": jnp.array([True, False, True])}
        >>> eb = js.early_bird.update(js.early_bird.init(m), m)
        >>> int(eb.count)
        1

    References:
      You et al., "Drawing Early-Bird Tickets", ICLR 2020.
    """
    check_structure(
        mask, eb.masks, name="early_bird.update: mask", like_name="the first mask", shapes=False
    )
    _check_bool(mask, "early_bird.update: mask")
    fifo_leaves, treedef = jax.tree.flatten(eb.masks)
    out = []
    for (path, m), fifo in zip(jax.tree_util.tree_flatten_with_path(mask)[0], fifo_leaves):
        nbytes = fifo.shape[1]
        if nbytes == 0:  # a leaf the distance leaves out
            out.append(fifo)
            continue
        packed = jnp.asarray(pack(m))
        if packed.shape != (nbytes,):
            raise ValueError(
                f"early_bird.update: mask leaf '{path_str(path)}' has shape {jnp.shape(m)}, "
                f"which does not fit the first mask's ({8 * nbytes - 7} to {8 * nbytes} entries)"
            )
        out.append(jnp.concatenate([fifo[1:], packed[None]], axis=0))
    return eb._replace(masks=jax.tree.unflatten(treedef, out), count=eb.count + 1)


def distances(eb: EarlyBirdState) -> jax.Array:
    """Normalised Hamming distances of the newest mask to each older one, oldest first.

    Args:
      eb: the detector.

    Returns:
      A float32 vector of shape ``(window - 1,)``: entry ``i`` is the fraction of
      entries where the newest mask differs from the one pushed ``window - 1 - i``
      pushes before it; ``inf`` where that slot has not been filled yet.

    Examples:
        >>> eb = js.early_bird.init({"g": jnp.ones(4, bool)}, window=3)
        >>> for m in ([1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]):
        ...     eb = js.early_bird.update(eb, {"g": jnp.array(m, bool)})
        >>> js.early_bird.distances(eb)
        Array([0.25, 0.25], dtype=float32)

    References:
      You et al., "Drawing Early-Bird Tickets", ICLR 2020 (mask distance).
    """
    fifo_leaves = jax.tree.leaves(eb.masks)
    window = fifo_leaves[0].shape[0]
    diff = jnp.zeros((window - 1,), jnp.int32)
    for fifo in fifo_leaves:
        if fifo.shape[1]:
            bits = jax.lax.population_count(fifo[:-1] ^ fifo[-1:])
            diff = diff + jnp.sum(bits, axis=1, dtype=jnp.int32)
    filled = eb.count >= window - jnp.arange(window - 1)
    return jnp.where(filled, diff / eb.size, jnp.inf).astype(jnp.float32)


def found(eb: EarlyBirdState, eps: float | jax.Array = 0.1) -> jax.Array:
    """Whether the early bird is found: the FIFO is full and every distance is <= ``eps``.

    It reads the FIFO as it is now, so it can turn false again after a push; a training
    loop that draws the ticket once keeps ``done = done | found(eb)``.

    Args:
      eb: the detector.
      eps: the distance threshold in ``[0, 1]`` (the paper's 0.1); may be traced.

    Returns:
      A bool scalar.

    Raises:
      ValueError: a concrete ``eps`` outside ``[0, 1]``.

    Examples:
        >>> m = {"g": jnp.array([True, False])}
        >>> eb = js.early_bird.init(m, window=2)
        >>> bool(js.early_bird.found(js.early_bird.update(eb, m)))
        False
        >>> bool(js.early_bird.found(js.early_bird.update(js.early_bird.update(eb, m), m)))
        True

    References:
      You et al., "Drawing Early-Bird Tickets", ICLR 2020 (eps = 0.1).
    """
    if not isinstance(eps, jax.core.Tracer):
        if np.ndim(eps) != 0:
            raise ValueError(f"early_bird.found: eps must be a scalar, got shape {np.shape(eps)}")
        if not 0.0 <= float(eps) <= 1.0:
            raise ValueError(f"early_bird.found: eps must be in [0, 1], got {float(eps)}")
    window = jax.tree.leaves(eb.masks)[0].shape[0]
    return (eb.count >= window) & jnp.all(distances(eb) <= eps)
