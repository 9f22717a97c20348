"""``round(a * n)`` exactly as Python computes it, inside a jitted program.

``torch.nn.utils.prune`` and jaxsparse prune ``round(amount * n_alive)`` weights, where
Python multiplies in float64 and rounds half to even. Under ``jit`` (without x64) ``n`` is
an int32 tracer and float32 arithmetic would be off by one for ``n`` in the millions, or
whenever ``amount * n`` lands near ``k + 0.5`` (``0.1 * 5`` is ``0.5`` in float64 but
slightly above it in exact arithmetic). So the product is carried out exactly in 16-bit
limbs of ``uint32``, and float64's rounding of it is reproduced: ``fl64(x)`` equals
``h = q + 0.5`` exactly when ``x`` lies within half an ulp of ``h``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

_F = 96  # fractional bits of the fixed-point amount
_NFRAC = _F // 16  # fractional limbs


def _static_limbs(a: float) -> list[jax.Array]:
    big = int(Fraction(a) * 2**_F)  # exact for a >= 2**-43; smaller a never rounds up
    return [jnp.uint32((big >> (16 * i)) & 0xFFFF) for i in range(_NFRAC + 1)]


def _traced_limbs(a: jax.Array) -> list[jax.Array]:
    """Limbs of ``a * 2**96`` for a float32 ``a`` in [0, 1]: exact for a >= 2**-72."""
    bits = jax.lax.bitcast_convert_type(jnp.asarray(a, jnp.float32), jnp.uint32)
    exp = ((bits >> 23) & 0xFF).astype(jnp.int32)
    mant = jnp.where(exp == 0, bits & 0x7FFFFF, (bits & 0x7FFFFF) | 0x800000)
    exp = jnp.maximum(exp, 1)
    shift = _F + exp - 127 - 23  # a * 2**96 = mant << shift
    limbs = []
    for i in range(_NFRAC + 1):
        right = 16 * i - shift
        down = jnp.where(right >= 0, mant >> jnp.clip(right, 0, 31).astype(jnp.uint32), 0)
        up = jnp.where(right < 0, mant << jnp.clip(-right, 0, 31).astype(jnp.uint32), 0)
        limb = jnp.where((right >= 32) | (right <= -32), 0, jnp.where(right >= 0, down, up))
        limbs.append(limb.astype(jnp.uint32) & 0xFFFF)
    return limbs


def _bit_limbs(pos: jax.Array) -> list[jax.Array]:
    """Limbs of ``2**pos`` for a traced ``0 <= pos < 96``."""
    return [
        jnp.where(pos // 16 == i, jnp.uint32(1) << (pos % 16).astype(jnp.uint32), jnp.uint32(0))
        for i in range(_NFRAC)
    ]


def _less(x: list[jax.Array], y: list[jax.Array]) -> jax.Array:
    """``x < y`` for equal-length little-endian limb vectors."""
    less, decided = jnp.bool_(False), jnp.bool_(False)
    for xi, yi in zip(reversed(x), reversed(y)):
        less = jnp.where(decided, less, xi < yi)
        decided = decided | (xi != yi)
    return less


def round_mul(a: float | jax.Array, n: int | jax.Array) -> jax.Array | int:
    """``round(a * n)`` with Python semantics (float64 product, half to even).

    Args:
      a: a fraction in ``[0, 1]``: a Python float (exact) or a float32 scalar (its exact
        value is used, as Python would after ``float(a)``).
      n: a non-negative count below ``2**31``, a Python int or an int32 scalar.

    Returns:
      A Python int when both are static, else an int32 scalar.

    Examples:
        >>> round_mul(0.1, 5), int(jax.jit(lambda n: round_mul(0.1, n))(5))
        (0, 0)

    References:
      PyTorch, ``torch.nn.utils.prune`` (prunes ``round(amount * n)`` weights).
    """
    if isinstance(n, (int, np.integer)) and isinstance(a, (float, int, np.floating)):
        return round(float(a) * int(n))
    if isinstance(a, (float, int, np.floating)):
        return _round_mul_limbs(_static_limbs(float(a)), n)
    return _round_mul_limbs(_traced_limbs(a), n)


def _static(a: object) -> bool:
    return isinstance(a, (float, int, np.floating))


def round_mul_each(amounts: list[float | jax.Array], n: jax.Array) -> jax.Array:
    """``[round(a_g * n_g)]`` for a list of fractions (each static or traced, as
    :func:`round_mul` takes them) and an int32 vector ``n``: one vectorised rounding, its
    ops counted once however many fractions there are."""
    if all(a is amounts[0] for a in amounts):
        a = amounts[0]
        return _round_mul_limbs(
            _static_limbs(float(a)) if _static(a) else _traced_limbs(cast(jax.Array, a)), n
        )
    rows: list[list[int]] = []
    for a in amounts:
        big = int(Fraction(float(a)) * 2**_F) if _static(a) else 0
        rows.append([(big >> (16 * i)) & 0xFFFF for i in range(_NFRAC + 1)])
    limbs = [jnp.asarray(np.array(col, np.uint32)) for col in zip(*rows)]
    traced = [not _static(a) for a in amounts]
    if any(traced):
        vec = jnp.stack(
            [jnp.float32(0) if _static(a) else jnp.asarray(a, jnp.float32) for a in amounts]
        )
        where = np.array(traced)
        limbs = [jnp.where(where, t, s) for t, s in zip(_traced_limbs(vec), limbs)]
    return _round_mul_limbs(limbs, n)


def _round_mul_limbs(a_limbs: list[jax.Array], n: int | jax.Array) -> jax.Array:
    n = jnp.asarray(n).astype(jnp.uint32)
    n_limbs = [n & 0xFFFF, n >> 16]
    acc = [jnp.uint32(0)] * (len(a_limbs) + 3)
    for i, ai in enumerate(a_limbs):
        for j, nj in enumerate(n_limbs):
            p = ai * nj  # < 2**32: no overflow
            acc[i + j] = acc[i + j] + (p & 0xFFFF)
            acc[i + j + 1] = acc[i + j + 1] + (p >> 16)
    for t in range(len(acc) - 1):
        acc[t + 1] = acc[t + 1] + (acc[t] >> 16)
        acc[t] = acc[t] & 0xFFFF
    frac = acc[:_NFRAC]
    q = acc[_NFRAC] | (acc[_NFRAC + 1] << 16)  # a <= 1 and n < 2**31: fits
    # fl64(x) == q + 0.5 iff x is within half an ulp of h = q + 0.5; ulp(h) = 2**(b - 52)
    # with b = floor(log2(h)), i.e. a bit at fractional position 96 + b - 53.
    b = 31 - jax.lax.clz(q).astype(jnp.int32)  # -1 for q == 0
    pos = _F + b - 53
    half = [jnp.uint32(0)] * (_NFRAC - 1) + [jnp.uint32(0x8000)]
    step_up = _bit_limbs(pos)
    # below h = 0.5 (a power of two) the ulp halves
    step_down = _bit_limbs(jnp.where(q == 0, pos - 1, pos))
    upper = [h + s for h, s in zip(half, step_up)]  # no carries: pos < 95
    lower = _sub(half, step_down)
    above = _less(upper, frac)
    below = _less(frac, lower)
    at_half = ~above & ~below
    rounded = jnp.where(above, q + 1, jnp.where(at_half, q + (q & 1), q))
    return rounded.astype(jnp.int32)


def _sub(x: list[jax.Array], y: list[jax.Array]) -> list[jax.Array]:
    out, borrow = [], jnp.uint32(0)
    for xi, yi in zip(x, y):
        d = (xi + jnp.uint32(0x10000)) - yi - borrow
        out.append(d & 0xFFFF)
        borrow = jnp.where(d >= 0x10000, jnp.uint32(0), jnp.uint32(1))
    return out
