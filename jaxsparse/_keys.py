"""Order-preserving unsigned keys of scores, the selection's currency.

A score's key sorts as the score does (``-0.0`` as ``0.0``, NaN lowest as ``-inf``), and
a dead entry's key is the top key, above every alive one. The counting search
(:mod:`jaxsparse._search`) runs on keys; the packed and the mesh selections
(:mod:`jaxsparse._packed`, :mod:`jaxsparse._select`) make them.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxsparse.masks import align


def _key_dtype(scores: list) -> tuple[type, type]:
    """(float, uint) of the keys: 64-bit if any score is float64 (x64 on), else 32-bit."""
    if any(jnp.result_type(s) == jnp.float64 for s in scores):
        return jnp.float64, jnp.uint64
    return jnp.float32, jnp.uint32


def _top(udtype: DTypeLike) -> np.unsignedinteger:
    # numpy's stubs type dtype(...).type(x) loosely; it is the unsigned scalar here
    return cast(np.unsignedinteger, np.dtype(udtype).type(np.iinfo(udtype).max))


def _keys(
    score: jax.Array,
    alive: jax.Array,
    fdtype: DTypeLike = jnp.float32,
    udtype: DTypeLike = jnp.uint32,
) -> jax.Array:
    """Order-preserving unsigned keys; NaN lowest; dead entries get the top key.

    Scores narrower than ``fdtype`` (bf16, f16) widen exactly; float64 scores get 64-bit
    keys, so no two distinct scores ever share a key.
    """
    s = jnp.asarray(score).astype(fdtype)
    keys = _value_key(jnp.where(jnp.isnan(s), -jnp.inf, s), udtype)
    return jnp.where(align(alive, keys), keys, _top(udtype))


def _sign_bit(udtype: DTypeLike) -> np.ndarray:
    return np.array(1 << (np.iinfo(udtype).bits - 1), dtype=udtype)


def _value_key(v: jax.Array, udtype: DTypeLike) -> jax.Array:
    """The order-preserving key of score ``v`` (``-0.0`` keyed as ``0.0``): negative
    scores' bits flipped, non-negative ones' sign bit set."""
    bits = jax.lax.bitcast_convert_type(v, udtype)
    sign = _sign_bit(udtype)
    # -0.0's bits (the sign bit alone) as 0.0's; not ``v + 0.0``, which XLA folds to ``v``
    bits = jnp.where(bits == sign, jnp.zeros_like(bits), bits)
    return jnp.where((bits & sign) != 0, ~bits, bits | sign)


def _key_value(t: jax.Array, fdtype: DTypeLike) -> jax.Array:
    """The score a key stands for (inverse of :func:`_value_key`; the top key maps to
    NaN), in ``fdtype``: interpolating between scores, not between their bit patterns,
    keeps the counts linear where scores are spread evenly (a bit pattern's scale
    doubles at every power of two)."""
    sign = _sign_bit(t.dtype)
    return jax.lax.bitcast_convert_type(jnp.where((t & sign) != 0, t ^ sign, ~t), fdtype)
