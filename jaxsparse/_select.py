"""The exact selection on a mesh: the k lowest keys of each group of leaves, counted
where the leaves lie.

Nothing is sorted or concatenated but a small strided sample. Scores become
order-preserving keys (:mod:`jaxsparse._keys`), and a threshold with exactly k alive
keys below it is found by counting passes (:func:`jaxsparse._search._search`), each a
sum that XLA reduces across shards, so global pruning of sharded params never gathers
them onto one device. Where the k-th key is tied, a second search over positions ranks
the ties (earlier position first). On one device the leaves are packed first
(:mod:`jaxsparse._packed`), which shares this module's helpers for hiding offsets
from XLA.

Private to the package: :mod:`jaxsparse.pruning`, :mod:`jaxsparse.dst` and the
schedules build on it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxsparse._keys import _key_dtype, _keys, _top
from jaxsparse._search import _bracket_from_sample, _search
from jaxsparse.masks import explicit_spec


def _positions(x: jax.Array, offset: int | jax.Array, pdtype: type) -> jax.Array:
    """Each entry's place in the documented order: ``offset`` + its row-major index.

    Built from one iota per axis, never a reshape, so a sharded leaf stays sharded;
    under Explicit axes each iota is laid out like ``x`` (left unsaid, it would be a
    whole replicated copy on every device: 10x a device's params for a 1.3B tree's
    global prune).
    """
    pos, stride = jnp.full((), offset, pdtype), 1
    spec = explicit_spec(x)
    for axis in reversed(range(x.ndim)):
        iota = jax.lax.broadcasted_iota(pdtype, x.shape, axis, out_sharding=spec)
        pos = pos + iota * pdtype(stride)
        stride *= x.shape[axis]
    return pos


# Leaves that repeat an earlier leaf's shape, at least, for their offsets to be hidden
# from XLA (:func:`_opaque`): each repeat saves a kernel (about 9 ms of compiling on a
# CPU), the conditional costs about 0.15 s (LeNet-300-100: 0.86 -> 1.17 CPU-s for a
# global prune of 6 leaves, all of distinct shapes).
_SHARED_MIN = 16


def _shares_kernels(leaves: list) -> bool:
    """Whether enough leaves repeat a shape for :func:`_opaque` offsets to pay."""
    shapes = [jnp.shape(x) for x in leaves]
    return len(shapes) - len(set(shapes)) >= _SHARED_MIN


def _opaque(values: list, probe: jax.Array, dtype: DTypeLike) -> tuple[jax.Array, ...]:
    """``values`` as scalars of ``dtype`` that XLA's CPU compiler cannot fold into the
    operations that use them (each leaf's offset into the packed marks, or of its
    positions).

    XLA:CPU compiles one kernel per distinct fused computation and reuses a kernel for
    identical ones. A slice at a constant offset is distinct for every leaf (about 9 ms
    of compiling a leaf here: 4.1 s for 400 leaves); with the offset an operand, leaves
    of one shape share one kernel (0.8 s for the same 400 leaves, 4 shapes). So on the
    CPU the values come out of a ``lax.cond`` whose predicate is never true but is data
    to XLA: ``probe``'s first entry, a count or a ``bool`` (never negative), compared
    with 0. On a GPU a conditional's predicate is read by the host (a wait), so there,
    and on TPUs, the values stay constants."""
    consts = tuple(jnp.asarray(v, dtype) for v in values)

    def on_cpu():
        never = jnp.sum(jnp.ravel(probe)[:1], dtype=jnp.int32) < 0
        # the branches differ (a reversal, no operation), so XLA keeps the cond
        return jax.lax.cond(never, lambda *c: c[::-1], lambda *c: c, *consts)

    return jax.lax.platform_dependent(cpu=on_cpu, default=lambda: consts)


_SAMPLE = 2048  # keys sampled per group for its first bracket


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


def _sample_brackets(
    groups: list[list[jax.Array]], k: jax.Array, alive: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per group, two guesses around its k-th alive key from a strided sample of its
    keys: the sample's quantile minus and plus ``_SPREAD`` standard deviations (the
    upper one plus one, so that a run of ties at the quantile is bracketed exactly).

    A group of fewer than ``2 * _SAMPLE`` keys gets no guesses (its passes are cheap),
    and a leaf is left out of the sample when it would be taken whole: an unstrided
    copy would tie the sample's layout to the leaf's and steer how XLA shards it. The
    groups' samples are padded with the top key (never counted) and sorted together,
    one sort for every group.
    """
    udtype = groups[0][0].dtype
    top = _top(udtype)
    rows = []
    for leaves in groups:
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
        rows.append(pieces)
    sizes = [sum(p.size for p in pieces) for pieces in rows]
    width = max(sizes, default=0)
    if width == 0:
        return jnp.zeros((len(groups), 2), udtype), jnp.zeros(len(groups), jnp.int32)
    padded = [
        jnp.concatenate([*pieces, jnp.full(width - size, top, udtype)])
        for pieces, size in zip(rows, sizes)
    ]
    return _bracket_from_sample(jnp.sort(jnp.stack(padded), axis=1), k, alive, top)


class _Block:
    """Leaves counted together: one leaf as it is, or leaves of one shape, dtype and
    layout from several groups stacked on a new leading axis."""

    def __init__(self, members: list[tuple[int, int, jax.Array]]):
        self.members = [(g, i) for g, i, _ in members]
        self.gid = np.array([g for g, _, _ in members])
        self.stacked = len(members) > 1
        self.array = jnp.stack([x for _, _, x in members]) if self.stacked else members[0][2]

    def per_entry(self, per_group: jax.Array) -> jax.Array:
        """A per-group vector's values, broadcastable over the block's entries."""
        if not self.stacked:
            return per_group[self.gid[0]]
        v = per_group[self.gid]
        return v.reshape(v.shape + (1,) * (self.array.ndim - 1))

    def leaves(self, block_values: jax.Array, index: list | None = None) -> list[jax.Array]:
        """Each member's slice of ``block_values``; at ``index[s]`` (scalars, e.g.
        from :func:`_opaque`) where given, else at ``s``."""
        if not self.stacked:
            return [block_values]
        if index is None:
            return [block_values[s] for s in range(len(self.members))]
        return [jax.lax.dynamic_index_in_dim(block_values, i, keepdims=False) for i in index]


def _blocks(groups: list[list[jax.Array]]) -> list[_Block]:
    """The groups' leaves as blocks: leaves of one shape, dtype and layout that belong
    to several groups are stacked, so a layerwise prune's pass counts them in one
    reduction and its compiled search grows with the number of distinct leaf shapes
    more than with the number of leaves (a ResNet's or a transformer's many equal
    layers). One group's leaves (a global pool) count fastest leaf by leaf, each in one
    full reduction, and compile no slower: they stay apart."""
    by_kind: dict = {}
    for g, leaves in enumerate(groups):
        for i, x in enumerate(leaves):
            kind = (x.shape, jnp.result_type(x), explicit_spec(x))
            by_kind.setdefault(kind, []).append((g, i, x))
    out = []
    for members in by_kind.values():
        if len({g for g, _, _ in members}) > 1:
            out.append(_Block(members))
        else:
            out += [_Block([m]) for m in members]
    return out


@jax.jit  # called eagerly (a concrete prune), it compiles once per shapes, not per op
def _select_groups(groups: list[list[jax.Array]], ks: list) -> list[list[jax.Array]]:
    """For each group of leaves, marks its ``ks[g]`` lowest keys (ties: first in order).

    All groups are searched together, one loop whose every pass counts every group (a
    layerwise prune is one search, not one per leaf), equal leaves of several groups
    as one stacked block (:func:`_blocks`). No alive key equals the top key (that is
    ``-NaN``'s key, and NaNs were mapped to ``-inf``), so dead entries, keyed top, are
    never counted or selected. Every pass is a count, so the keys may be sharded any
    way (Auto or Explicit mesh axes): nothing is reshaped, scanned or gathered but a
    small strided sample.
    """
    k = jnp.stack([jnp.asarray(x, jnp.int32) for x in ks])
    n_groups = len(groups)
    udtype = groups[0][0].dtype
    top = _top(udtype)
    blocks = _blocks(groups)
    one_hot = np.eye(n_groups, dtype=np.int32)

    def by_group(hits):
        """Per group, the count of ``hits(j, block)``, a bool array over block j."""
        scalars: list[list[jax.Array]] = [[] for _ in range(n_groups)]
        vectors = []
        for j, blk in enumerate(blocks):
            h = hits(j, blk)
            if blk.stacked:
                per_slice = jnp.sum(h, axis=tuple(range(1, h.ndim)), dtype=jnp.int32)
                vectors.append(jnp.sum(per_slice[:, None] * one_hot[blk.gid], axis=0))
            else:
                scalars[blk.gid[0]].append(jnp.sum(h, dtype=jnp.int32))
        total = jnp.stack([sum(c, jnp.int32(0)) for c in scalars])
        return sum(vectors, total)

    def count_below(t, live=None):
        return by_group(lambda j, blk: blk.array < blk.per_entry(t))

    alive = count_below(jnp.full(n_groups, top, udtype))
    bits = np.iinfo(udtype).bits
    # t with #(key < t) == k or, where the k-th key is tied, that key (#(key < t) < k)
    t, below, upto = _search(
        count_below,
        k,
        jnp.full(n_groups, top, udtype),
        alive,
        udtype,
        bits,
        guesses=_sample_brackets(groups, k, alive),
        by_value=True,
    )
    remaining = k - below

    # Where many leaves repeat a shape, each offset or index that tells equal leaves
    # apart is hidden from XLA, so that they share their kernels (see _opaque).
    share = _shares_kernels([x for leaves in groups for x in leaves])
    indices: list[list | None] = [None] * len(blocks)  # a stacked block's members
    stacked = [j for j, blk in enumerate(blocks) if blk.stacked]
    if share and stacked:
        flat = [s for j in stacked for s in range(len(blocks[j].members))]
        hidden = iter(_opaque(flat, remaining, jnp.int32))
        for j in stacked:
            indices[j] = [next(hidden) for _ in blocks[j].members]

    def unstack(masks):
        out: list[list[Any]] = [[None] * len(leaves) for leaves in groups]
        for m, blk, ix in zip(masks, blocks, indices):
            for (g, i), leaf in zip(blk.members, blk.leaves(m, ix)):
                out[g][i] = leaf
        return out

    def without_ties():
        return unstack([blk.array < blk.per_entry(t) for blk in blocks])

    def with_ties():
        # The first `remaining` ties in order are those placed before a P with
        # #(tie placed before P) == remaining: the same search, over places.
        sizes = [[int(np.prod(x.shape)) for x in leaves] for leaves in groups]
        n = [sum(s) for s in sizes]
        pdtype = jnp.uint32 if max(n) < 2**32 else jnp.uint64
        offsets = [np.cumsum([0, *s])[:-1] for s in sizes]
        alone = [blk.members[0] for blk in blocks if not blk.stacked]
        starts: list[int | jax.Array] = [int(offsets[g][i]) for g, i in alone]
        if share:
            starts = list(_opaque(starts, remaining, pdtype))
        start_of = dict(zip(alone, starts))

        def places(blk):
            if not blk.stacked:
                return _positions(blk.array, start_of[blk.members[0]], pdtype)
            first = jnp.asarray(np.array([offsets[g][i] for g, i in blk.members]), pdtype)
            local = _positions(blk.array[0], 0, pdtype)[None]
            return first.reshape(first.shape + (1,) * (blk.array.ndim - 1)) + local

        pos = [places(blk) for blk in blocks]
        eq = [blk.array == blk.per_entry(t) for blk in blocks]

        def ties_before(p, live=None):
            return by_group(lambda j, blk: eq[j] & (pos[j] < blk.per_entry(p)))

        bits_p = np.array([max(m.bit_length(), 1) for m in n], np.int32)
        hi = jnp.asarray(np.array(n, np.uint64), pdtype)
        cut, _, _ = _search(ties_before, remaining, hi, upto - below, pdtype, bits_p)
        # a group that needs no tie takes none (see jaxsparse._packed)
        cut = jnp.where(remaining == 0, jnp.zeros_like(cut), cut)
        return unstack(
            [
                (blk.array < blk.per_entry(t)) | (e & (q < blk.per_entry(cut)))
                for blk, e, q in zip(blocks, eq, pos)
            ]
        )

    # Without ties at the threshold (the usual case) no ranking pass is needed.
    return jax.lax.cond(jnp.all(remaining == 0), without_ties, with_ties)


def _select_lowest(keys: list[jax.Array], k: int | jax.Array) -> list[jax.Array]:
    """Marks the k lowest keys (ties: first in order) across a list of leaves."""
    return _select_groups([keys], [k])[0]


def _select(
    score: jax.Array, candidates: jax.Array, k: int | jax.Array, *, largest: bool = False
) -> jax.Array:
    """Marks ``min(k, #candidates)`` candidates of one leaf with the lowest (``largest``:
    highest) scores, by the rule of :func:`prune` (ties: first in row-major order)."""
    s = -jnp.asarray(score) if largest else score
    return _select_lowest([_keys(s, candidates, *_key_dtype([s]))], k)[0]
