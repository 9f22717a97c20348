"""The exact selection under :func:`jaxsparse.prune`: the k lowest keys, by counting.

Nothing is sorted or concatenated but a small strided sample. Scores become
order-preserving unsigned keys (NaN lowest, dead entries the top key), and a threshold
``t`` with exactly k alive keys below it is found by counting passes (an exact search,
:func:`_search`): a bracket from the sorted sample first, then interpolation between the
counts at the bracket's ends, safeguarded to never take more than about 32 passes. Smooth
score distributions need a handful; each pass is a sum that XLA reduces across shards, so
global pruning of sharded params never gathers them onto one device. Where the k-th key
is tied, a second search over positions ranks the ties (earlier position first).

Private to the package: :mod:`jaxsparse.pruning`, :mod:`jaxsparse.dst` and the
schedules build on it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.masks import align, explicit_spec


def _key_dtype(scores: list) -> tuple[type, type]:
    """(float, uint) of the keys: 64-bit if any score is float64 (x64 on), else 32-bit."""
    if any(jnp.result_type(s) == jnp.float64 for s in scores):
        return jnp.float64, jnp.uint64
    return jnp.float32, jnp.uint32


def _top(udtype) -> np.integer:
    return np.dtype(udtype).type(np.iinfo(udtype).max)


def _keys(score: jax.Array, alive: jax.Array, fdtype=jnp.float32, udtype=jnp.uint32):
    """Order-preserving unsigned keys; NaN lowest; dead entries get the top key.

    Scores narrower than ``fdtype`` (bf16, f16) widen exactly; float64 scores get 64-bit
    keys, so no two distinct scores ever share a key.
    """
    s = jnp.asarray(score).astype(fdtype) + 0.0  # -0.0 -> 0.0
    s = jnp.where(jnp.isnan(s), -jnp.inf, s)
    bits = jax.lax.bitcast_convert_type(s, udtype)
    width = np.iinfo(udtype).bits
    neg = (bits >> (width - 1)) == 1
    sign = np.array(1 << (width - 1), dtype=udtype)
    keys = jnp.where(neg, ~bits, bits | sign)
    return jnp.where(align(alive, keys), keys, _top(udtype))


def _key_value(t: jax.Array, fdtype) -> jax.Array:
    """The score a key stands for (inverse of :func:`_keys` on finite scores; the top
    key maps to NaN), in ``fdtype``: interpolating between scores, not between their
    bit patterns, keeps the counts linear where scores are spread evenly (a bit
    pattern's scale doubles at every power of two)."""
    udtype = t.dtype
    sign = np.array(1 << (np.iinfo(udtype).bits - 1), dtype=udtype)
    bits = jnp.where((t & sign) != 0, t ^ sign, ~t)
    return jax.lax.bitcast_convert_type(bits, fdtype)


def _value_key(v: jax.Array, udtype) -> jax.Array:
    """The key of score ``v`` (as :func:`_keys`, without the NaN and dead rules)."""
    bits = jax.lax.bitcast_convert_type(v + 0.0, udtype)
    sign = np.array(1 << (np.iinfo(udtype).bits - 1), dtype=udtype)
    return jnp.where((bits >> (np.iinfo(udtype).bits - 1)) == 1, ~bits, bits | sign)


def _positions(x: jax.Array, offset: int, pdtype) -> jax.Array:
    """Each entry's place in the documented order: ``offset`` + its row-major index.

    Built from one iota per axis, never a reshape, so a sharded leaf stays sharded.
    """
    pos, stride = jnp.full((), offset, pdtype), 1
    for axis in reversed(range(x.ndim)):
        pos = pos + jax.lax.broadcasted_iota(pdtype, x.shape, axis) * pdtype(stride)
        stride *= x.shape[axis]
    return pos


def _search(count_below, k, hi, c_hi, dtype, bits, guesses=None, by_value=False):
    """Per group ``g``: a ``t[g]`` in ``[0, hi[g]]`` with ``count_below(t)[g] == k[g]``,
    or, where none exists (ties at the k-th key), the largest ``t[g]`` with a count below
    ``k[g]``; with that count and the count at the bracket's upper end (``t + 1``'s in
    the second case).

    ``count_below`` maps thresholds of shape ``(G,)`` to counts of shape ``(G,)``, each
    non-decreasing in its own threshold, ``0`` at ``0`` and ``c_hi`` at ``hi``. An exact
    search, one counting pass over all groups a step: the first steps try ``guesses``
    (``(values (G, m), how_many (G,))``, e.g. a bracket from a sample), the rest
    interpolate between the counts at the bracket's ends and are kept within bisection's
    step count by projection onto a shrinking interval around the midpoint (the ITP
    method of Oliveira & Takahashi, 2020). So a few steps on smooth score
    distributions, at most about ``bits`` on any. With ``by_value`` the thresholds are
    score keys (:func:`_keys`) and the interpolation runs between the scores they stand
    for; the safeguard still works on the keys.
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

    def step(carry):
        a, b, c_a, c_b, j = carry
        width = b - a
        w = width.astype(fdtype)
        half = w / 2
        # regula falsi, aiming between the counts k - 1 and k
        frac = (k.astype(fdtype) - 0.5 - c_a.astype(fdtype)) / (c_b - c_a).astype(fdtype)
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
        c = count_below(t)
        live = _more(a, b, c_a, c_b)
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

    init = (jnp.zeros_like(hi), hi, jnp.zeros_like(k), jnp.asarray(c_hi, jnp.int32), jnp.int32(0))
    a, b, c_a, c_b, _ = jax.lax.while_loop(lambda carry: jnp.any(_more(*carry[:4])), step, init)
    done_high = c_b <= k  # k >= count_below(hi): everything below hi
    return jnp.where(done_high, b, a), jnp.where(done_high, c_b, c_a), c_b


_SAMPLE = 2048  # keys sampled per group for its first bracket
_SPREAD = 2.5  # the bracket's half-width, in binomial standard deviations of the sample


def _strides(x: jax.Array, want: float) -> tuple[int, ...]:
    """Per-axis strides taking about ``want`` entries of ``x`` on a grid, the largest
    axes strided first. Where an axis is sharded on a mesh with Explicit axes, its
    stride divides the per-shard length, so that the strided slice keeps whole shards
    (an Explicit-axis requirement)."""
    spec = explicit_spec(x)
    mesh = jax.typeof(x).sharding.mesh
    factor = int(np.prod(x.shape)) / max(want, 1.0)
    out = [1] * x.ndim
    for axis in sorted(range(x.ndim), key=lambda a: -x.shape[a]):
        d = x.shape[axis]
        s = max(1, min(d, int(factor)))
        names = spec[axis] if spec is not None else None
        if names is not None:
            shards = int(np.prod([mesh.shape[n] for n in np.atleast_1d(names)]))
            local = d // shards if d % shards == 0 else 1
            s = max(i for i in range(1, min(s, local) + 1) if local % i == 0)
        out[axis] = s
        factor /= s
    return tuple(out)


def _sample_brackets(groups: list[list[jax.Array]], k, alive):
    """Per group, two guesses around its k-th alive key from a strided sample of its
    keys: the sample's quantile minus and plus ``_SPREAD`` standard deviations (the
    upper one plus one, so that a run of ties at the quantile is bracketed exactly).

    A group of fewer than ``2 * _SAMPLE`` keys gets no guesses (its passes are cheap),
    and a leaf is left out of the sample when it would be taken whole: an unstrided
    copy would tie the sample's layout to the leaf's and steer how XLA shards it.
    """
    lo, hi, n_s = [], [], []
    for g, leaves in enumerate(groups):
        n = sum(int(np.prod(x.shape)) for x in leaves)
        pieces = []
        for x in leaves if n >= 2 * _SAMPLE else []:
            st = _strides(x, int(np.prod(x.shape)) * _SAMPLE / n)
            if max(st, default=1) == 1:
                continue
            s = x[tuple(slice(None, None, i) for i in st)]
            if explicit_spec(s) is not None:
                s = jax.sharding.reshard(s, jax.sharding.PartitionSpec())
            pieces.append(s.ravel())
        if not pieces:
            lo.append(jnp.zeros((), groups[0][0].dtype))
            hi.append(jnp.zeros((), groups[0][0].dtype))
            n_s.append(jnp.int32(0))
            continue
        sample = jnp.sort(jnp.concatenate(pieces))
        top = _top(sample.dtype)
        alive_s = jnp.sum(sample < top, dtype=jnp.int32)
        p = k[g].astype(jnp.float32) / jnp.maximum(alive[g], 1).astype(jnp.float32)
        r = p * alive_s.astype(jnp.float32)
        sd = jnp.sqrt(r * (1 - p)) + 1
        last = jnp.maximum(alive_s - 1, 0)
        lo.append(sample[jnp.clip(jnp.floor(r - _SPREAD * sd).astype(jnp.int32), 0, last)])
        up = sample[jnp.clip(jnp.ceil(r + _SPREAD * sd).astype(jnp.int32), 0, last)]
        hi.append(jnp.minimum(up, top - 1) + 1)
        n_s.append(alive_s)
    guesses = jnp.stack([jnp.stack(lo), jnp.stack(hi)], axis=1)
    return guesses, jnp.where(jnp.stack(n_s) > 0, 2, 0)


@jax.jit  # called eagerly (a concrete prune), it compiles once per shapes, not per op
def _select_groups(groups: list[list[jax.Array]], ks: list) -> list[list[jax.Array]]:
    """For each group of leaves, marks its ``ks[g]`` lowest keys (ties: first in order).

    All groups are searched together, one loop whose every pass counts every group (a
    layerwise prune is one search, not one per leaf). No alive key equals the top key
    (that is ``-NaN``'s key, and NaNs were mapped to ``-inf``), so dead entries, keyed
    top, are never counted or selected. Every pass is a count, so the keys may be
    sharded any way (Auto or Explicit mesh axes): nothing is reshaped, scanned or
    gathered but a small strided sample.
    """
    k = jnp.stack([jnp.asarray(x, jnp.int32) for x in ks])
    udtype = groups[0][0].dtype
    top = _top(udtype)

    def count_below(t):
        return jnp.stack(
            [
                sum((jnp.sum(x < t[g], dtype=jnp.int32) for x in leaves), jnp.int32(0))
                for g, leaves in enumerate(groups)
            ]
        )

    alive = count_below(jnp.full(len(groups), top, udtype))
    bits = np.iinfo(udtype).bits
    # t with #(key < t) == k or, where the k-th key is tied, that key (#(key < t) < k)
    t, below, upto = _search(
        count_below,
        k,
        jnp.full(len(groups), top, udtype),
        alive,
        udtype,
        bits,
        guesses=_sample_brackets(groups, k, alive),
        by_value=True,
    )
    remaining = k - below

    def without_ties():
        return [[x < t[g] for x in leaves] for g, leaves in enumerate(groups)]

    def with_ties():
        # The first `remaining` ties in order are those placed before a P with
        # #(tie placed before P) == remaining: the same search, over places.
        sizes = [[int(np.prod(x.shape)) for x in leaves] for leaves in groups]
        n = [sum(s) for s in sizes]
        pdtype = jnp.uint32 if max(n) < 2**32 else jnp.uint64
        pos = [
            [_positions(x, int(o), pdtype) for x, o in zip(leaves, np.cumsum([0, *s]))]
            for leaves, s in zip(groups, sizes)
        ]
        eq = [[x == t[g] for x in leaves] for g, leaves in enumerate(groups)]

        def ties_before(p):
            return jnp.stack(
                [
                    sum((jnp.sum(e & (q < p[g]), dtype=jnp.int32) for e, q in zip(es, qs)), 0)
                    for g, (es, qs) in enumerate(zip(eq, pos))
                ]
            )

        bits_p = np.array([max(m.bit_length(), 1) for m in n], np.int32)
        hi = jnp.asarray(np.array(n, np.uint64), pdtype)
        cut, _, _ = _search(ties_before, remaining, hi, upto - below, pdtype, bits_p)
        return [
            [(x < t[g]) | (e & (q < cut[g])) for x, e, q in zip(leaves, es, qs)]
            for g, (leaves, es, qs) in enumerate(zip(groups, eq, pos))
        ]

    # Without ties at the threshold (the usual case) no ranking pass is needed.
    return jax.lax.cond(jnp.all(remaining == 0), without_ties, with_ties)


def _select_lowest(keys: list[jax.Array], k: jax.Array) -> list[jax.Array]:
    """Marks the k lowest keys (ties: first in order) across a list of leaves."""
    return _select_groups([keys], [k])[0]


def _select(score: jax.Array, candidates: jax.Array, k, *, largest: bool = False) -> jax.Array:
    """Marks ``min(k, #candidates)`` candidates of one leaf with the lowest (``largest``:
    highest) scores, by the rule of :func:`prune` (ties: first in row-major order)."""
    s = -jnp.asarray(score) if largest else score
    return _select_lowest([_keys(s, candidates, *_key_dtype([s]))], k)[0]
