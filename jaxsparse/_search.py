"""The exact threshold search under every selection: a ``t`` with exactly ``k`` keys
below it, found by counting passes.

A bracket from a sorted sample first (:func:`_bracket_from_sample`), then interpolation
between the counts at the bracket's ends, safeguarded to never take more than about 32
passes. Smooth score distributions need a handful; each pass is a count the caller
supplies (over a packed buffer, or a sum XLA reduces across shards).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._keys import _key_value, _value_key

_SPREAD = 3.5  # the bracket's half-width, in binomial standard deviations of the sample


def _search(
    count_below, k, hi, c_hi, dtype, bits, guesses=None, by_value=False, count_guesses=None
):
    """Per group ``g``: a ``t[g]`` in ``[0, hi[g]]`` with ``count_below(t)[g] == k[g]``,
    or, where none exists (ties at the k-th key), the largest ``t[g]`` with a count below
    ``k[g]``; with that count and the count at the bracket's upper end (``t + 1``'s in
    the second case).

    ``count_below(t, live)`` maps thresholds of shape ``(G,)`` to counts of shape
    ``(G,)``, each non-decreasing in its own threshold, ``0`` at ``0`` and ``c_hi`` at
    ``hi``; only the groups where ``live`` (still searching) need a right count. An exact
    search, one counting pass over all groups a step: the first steps try ``guesses``
    (``(values (G, m), how_many (G,))``, e.g. a bracket from a sample), the rest
    interpolate between the counts at the bracket's ends and are kept within bisection's
    step count by projection onto a shrinking interval around the midpoint (the ITP
    method of Oliveira & Takahashi, 2020). So a few steps on smooth score
    distributions, at most about ``bits`` on any. With ``by_value`` the thresholds are
    score keys (:func:`jaxsparse._keys._keys`) and the interpolation runs between the
    scores they stand for; the safeguard still works on the keys. With
    ``count_guesses`` (thresholds ``(G, m)`` and ``live`` to counts ``(G, m)``) every
    guess is counted in one pass before the loop, in place of a step each: a bracket's
    two ends cost one read of the keys, not two.
    """
    k = jnp.asarray(k, jnp.int32)
    fdtype = jnp.float64 if np.dtype(dtype).itemsize == 8 else jnp.float32
    hi = jnp.asarray(hi, dtype)
    bits = jnp.asarray(bits, jnp.int32)
    # the largest float below 2**width, so that a float offset converts without overflow
    width_bits = np.iinfo(dtype).bits
    fmax = float(np.nextafter(np.asarray(2.0**width_bits, fdtype), 0, dtype=fdtype))
    w0 = jnp.maximum(hi.astype(fdtype), 1)
    if guesses is None:
        guesses = (jnp.zeros((*k.shape, 1), dtype), jnp.zeros(k.shape, jnp.int32))
    values, n_guess = guesses
    init = (jnp.zeros_like(hi), hi, jnp.zeros_like(k), jnp.asarray(c_hi, jnp.int32), jnp.int32(0))
    if count_guesses is not None:
        # inside (0, hi), as a step would take them; counts grow with the threshold, so
        # the highest guess counting <= k and the lowest counting > k bound the k-th key
        one = jnp.ones_like(hi)
        t = jnp.clip(values, one[:, None], jnp.maximum(hi - one, one)[:, None])
        used = (jnp.arange(values.shape[1]) < n_guess[:, None]) & (hi > one)[:, None]
        c = count_guesses(t, jnp.any(used, axis=1))
        low, high = used & (c <= k[:, None]), used & (c > k[:, None])
        a = jnp.max(jnp.where(low, t, 0), axis=1).astype(dtype)
        c_a = jnp.max(jnp.where(low, c, 0), axis=1)
        b = jnp.min(jnp.where(high, t, hi[:, None]), axis=1).astype(dtype)
        c_b = jnp.min(jnp.where(high, c, init[3][:, None]), axis=1)
        init = (a, b, c_a, c_b, jnp.int32(0))
        n_guess = jnp.zeros_like(n_guess)

    def step(carry):
        a, b, c_a, c_b, j = carry
        width = b - a
        w = width.astype(fdtype)
        half = w / 2
        # regula falsi, aiming where the bracket's (k - c_a)-th of its c_b - c_a entries
        # most likely lies if they were spread evenly (a binomial's mode): the same as
        # aiming at k for many entries, and the midpoint for the last two
        frac = (k - c_a).astype(fdtype) / (c_b - c_a).astype(fdtype)
        x_f = w * frac
        if by_value:
            v_a, v_b = _key_value(a, fdtype), _key_value(b, fdtype)
            t_v = _value_key(v_a + frac * (v_b - v_a), dtype)
            x_v = (jnp.clip(t_v, a, b) - a).astype(fdtype)
            # where a bracket end is infinite or the top key (NaN), keep the key space
            x_f = jnp.where(jnp.isfinite(v_a) & jnp.isfinite(v_b), x_v, x_f)
        delta = 0.2 * w * (w / w0)  # truncation: kappa1 (b - a)^2 with kappa1 = 0.2 / w0
        sigma = jnp.sign(half - x_f)
        x_t = jnp.where(delta <= jnp.abs(half - x_f), x_f + sigma * delta, half)
        r = jnp.maximum(0.5 * jnp.exp2((bits + 1 - j).astype(fdtype)) - half, 0)
        x = jnp.where(jnp.abs(x_t - half) <= r, x_t, half - sigma * r)
        off = jnp.clip(jnp.floor(x), 1, fmax).astype(dtype)
        guess = values[:, jnp.minimum(j, values.shape[1] - 1)]
        off = jnp.where(j < n_guess, jnp.maximum(guess, a) - a, off)
        t = a + jnp.clip(off, 1, width - 1)
        live = _more(a, b, c_a, c_b)
        c = count_below(t, live)
        low = c <= k
        return (
            jnp.where(live & low, t, a),
            jnp.where(live & ~low, t, b),
            jnp.where(live & low, c, c_a),
            jnp.where(live & ~low, c, c_b),
            j + 1,
        )

    def _more(a, b, c_a, c_b):
        return (c_a < k) & (c_b > k) & (b - a > 1)

    a, b, c_a, c_b, _ = jax.lax.while_loop(lambda carry: jnp.any(_more(*carry[:4])), step, init)
    done_high = c_b <= k  # k >= count_below(hi): everything below hi
    return jnp.where(done_high, b, a), jnp.where(done_high, c_b, c_a), c_b


def _bracket_from_sample(sample, k, alive, top):
    """Per row of ``sample`` (a group's sorted sample of keys, padded with ``top``),
    two keys around the group's k-th alive key: the sample's quantile ``k / alive``
    minus and plus ``_SPREAD`` standard deviations of a binomial draw, the upper one
    plus one (a run of ties at the quantile is then bracketed exactly); and the passes
    that cost (2, or 0 for a group with nothing alive in its sample)."""
    alive_s = jnp.sum(sample < top, axis=1, dtype=jnp.int32)
    p = k.astype(jnp.float32) / jnp.maximum(alive, 1).astype(jnp.float32)
    r = p * alive_s.astype(jnp.float32)
    sd = jnp.sqrt(r * (1 - p)) + 1
    last = jnp.maximum(alive_s - 1, 0)

    def at(i):
        i = jnp.clip(i.astype(jnp.int32), 0, last)
        return jnp.take_along_axis(sample, i[:, None], axis=1)[:, 0]

    lo = at(jnp.floor(r - _SPREAD * sd))
    hi = jnp.minimum(at(jnp.ceil(r + _SPREAD * sd)), top - 1) + 1
    return jnp.stack([lo, hi], axis=1), jnp.where(alive_s > 0, 2, 0)
