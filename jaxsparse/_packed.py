"""The selection under :func:`jaxsparse.prune`, batched across leaves.

Every caller (a prune, a schedule's prune, a RigL update, a mask shuffle) asks the
same question of groups of leaves: which ``k[g]`` candidates of group ``g`` score
lowest (ties: first in order). :func:`select` answers it with one program whose size
does not grow with the number of leaves: the groups' scores and candidates are packed
into one ``(rows, _ROW)`` buffer, each group starting on a fresh row (padding is never a
candidate), and a loop over the buffer's chunks counts every group in a pass (on a CPU,
a loop over the groups, each over its own chunks, which skips the groups whose search
has ended); the threshold search (:func:`jaxsparse._search._search`), its sampled
bracket and the ranking of ties then run once for all groups. The keys,
the search and the tie rule are those of the mesh path (:mod:`jaxsparse._keys`,
:mod:`jaxsparse._search`, :mod:`jaxsparse._select`), so the masks are the
same bit for bit.

How the threshold is found depends on the backend, never the result. On the CPU (and
TPU) the counting search does it in a few passes over memory. On a GPU each step of the
search is a loop iteration whose predicate the host reads back (a wait on the device), so
up to :data:`_SORT_MAX` packed entries the GPU sorts instead: two stable radix sorts
put the entries in order of (group, key, place), the first ``k[g]`` of each group are
marked and the marks scattered back. The same keys and the same tie rule give the same masks bit for
bit (``tests/test_packed.py``); ``jax.lax.platform_dependent`` lowers only the branch of
the platform compiled for.

Packing concatenates the leaves, which would move shards between devices; on a mesh
(Explicit axes, or any mesh set with ``jax.set_mesh``) and past ``2**31`` entries the
leaves stay apart and :func:`jaxsparse._select._select_groups` counts them where they
lie.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse._keys import _key_dtype, _keys, _top
from jaxsparse._rounding import round_mul_each
from jaxsparse._search import _bracket_from_sample, _search
from jaxsparse._select import _opaque, _select_groups, _shares_kernels
from jaxsparse.masks import explicit_spec

_ROW = 1024  # entries a packed row; each group starts on a new row
_CHUNK = 256  # rows counted at a time (a 1 MiB block of keys)
_SAMPLE_TOTAL = 2**17  # keys sampled over all groups at most
_SAMPLE_MAX = 2**14  # keys sampled a group at most (2048 took BERT-base 2 more passes)
# Where a sort replaces the counting search, up to how many packed entries. Measured on
# an H200 (docs/bench/h200.md, models): a stable argsort of 25-124M keys took 3.3-12 ms
# where the search took 13-89 ms; over the 1.3B tree's 1.31e9 keys it took 1.26 s
# against 0.76 s, and 17.5 GB. A sort's temporaries are about 34 B an entry (3.8 GB for
# BERT-base) against the search's 5, so past 2**27 entries (4.5 GB) the search stays.
_SORT_PLATFORMS: tuple[str, ...] = ("cuda", "rocm")
# Where many groups are counted group by group (each over its own chunks, finished ones
# skipped) rather than by row sums over the whole buffer: a GPU would wait on the host
# for each group's loop bounds and branch.
_GROUP_PLATFORMS: tuple[str, ...] = ("cpu",)
_SORT_MAX = 2**27


def _unsharded(leaves: list[jax.Array]) -> bool:
    if any(explicit_spec(x) is not None for x in leaves):
        return False
    mesh = jax.sharding.get_abstract_mesh()
    return mesh.empty or mesh.size == 1


def _ks(spec, dyn, alive, n):
    """Per group ``k`` from its alive count, ``spec[g] = (mode, static, index)``:
    ``"alive"`` -> ``round(a * alive)``, ``"target"`` -> ``max(round(a * n) - (n - alive),
    0)`` (``n`` the group's size), ``"given"`` -> ``a``; ``a`` the static float or
    ``dyn[index]``. Never more than ``alive``: the rest of a group is not a candidate."""
    if spec == "given":  # one vector of counts
        return jnp.minimum(jnp.asarray(dyn[0], jnp.int32), alive)
    amounts = [dyn[i] if i is not None else a for _, a, i in spec]
    modes = np.array([mode for mode, _, _ in spec])
    k = jnp.zeros(len(spec), jnp.int32)
    if (modes == "alive").any():
        a = [x if m == "alive" else 0.0 for x, m in zip(amounts, modes)]
        k = jnp.where(modes == "alive", round_mul_each(a, alive), k)
    if (modes == "target").any():
        a = [x if m == "target" else 0.0 for x, m in zip(amounts, modes)]
        n = jnp.asarray(n, jnp.int32)
        k = jnp.where(modes == "target", jnp.maximum(round_mul_each(a, n) - (n - alive), 0), k)
    if (modes == "given").any():
        given = jnp.stack(
            [jnp.asarray(x if m == "given" else 0, jnp.int32) for x, m in zip(amounts, modes)]
        )
        k = jnp.where(modes == "given", given, k)
    return jnp.minimum(k, alive)


def _static(a: object) -> bool:
    return isinstance(a, (float, int, np.floating, np.integer)) and not isinstance(a, bool)


def select(scores, candidates, modes, amounts, *, largest=False, absolute=False):
    """For each group ``g`` (a list of leaves), marks the ``k[g]`` candidates with the
    lowest scores (``largest``: highest), ties first in order (leaves in list order,
    entries row-major). ``k[g]`` from the group's alive (candidate) count by
    ``modes[g]`` and ``amounts[g]``: ``"alive"``: ``round(a * alive)``; ``"target"``:
    ``max(round(a * n) - (n - alive), 0)``, ``n`` the group's size; ``"given"``: ``a``
    itself. A static fraction is Python's float64 product, a traced one its float32
    value (:func:`jaxsparse._rounding.round_mul`). Returns a list of lists of ``bool``
    leaves. ``modes="given"`` takes a vector of counts as ``amounts``. ``absolute``
    ranks ``|scores|``, taken after packing: given the params, a magnitude prune never
    writes ``|w|`` out leaf by leaf (XLA:CPU does not fuse it into the packing's copy)."""
    flat = [x for group in scores for x in group]
    dtypes = _key_dtype(flat)
    n = sum(int(np.prod(x.shape)) for x in flat) + _ROW * len(scores)
    entries: list[tuple[str, float | None, int | None]] = []
    dyn: list[Any] = []
    if isinstance(modes, str):  # "given", with a vector of counts
        dyn = [amounts]
    else:
        for mode, a in zip(modes, amounts, strict=True):
            if mode != "given" and _static(a):
                entries.append((mode, float(a), None))
            else:
                entries.append((mode, None, len(dyn)))
                dyn.append(a)
    spec: tuple[tuple[str, float | None, int | None], ...] | str = (
        "given" if isinstance(modes, str) else tuple(entries)
    )
    orient = (bool(absolute), bool(largest))
    if _unsharded(flat + [c for g in candidates for c in g]) and n < 2**31:
        sort_on = _SORT_PLATFORMS if n <= _SORT_MAX else ()
        return _select_packed(
            scores, candidates, dyn, spec, dtypes, orient, sort_on, _GROUP_PLATFORMS
        )
    return _select_apart(scores, candidates, dyn, spec, dtypes, orient)


def _oriented(s, orient):
    """``s``, or ``|s|`` for ``orient[0]`` (absolute), negated for ``orient[1]`` (largest
    first)."""
    absolute, largest = orient
    s = jnp.abs(s) if absolute else s
    return -s if largest else s


def _select_apart(scores, candidates, dyn, spec, dtypes, orient):
    keys = [
        [_keys(_oriented(jnp.asarray(s), orient), c, *dtypes) for s, c in zip(gs, gc)]
        for gs, gc in zip(scores, candidates)
    ]
    alive = jnp.stack(
        [sum((jnp.sum(c, dtype=jnp.int32) for c in gc), jnp.int32(0)) for gc in candidates]
    )
    n = [sum(int(np.prod(c.shape)) for c in gc) for gc in candidates]
    ks = _ks(spec, dyn, alive, n)
    return _select_groups(keys, [ks[g] for g in range(len(keys))])


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _select_packed(scores, candidates, dyn, spec, dtypes, orient, sort_on=(), groups_on=()):
    fdtype, udtype = dtypes
    top = _top(udtype)
    n_groups = len(scores)
    sizes = [[int(np.prod(x.shape)) for x in group] for group in scores]
    n = np.array([sum(s) for s in sizes], np.int64)
    rows = -(-n // _ROW)
    row_start = np.concatenate([[0], np.cumsum(rows)])
    used = max(int(row_start[-1]), 1)
    chunk = min(_CHUNK, used)
    n_rows = -(-used // chunk) * chunk  # whole chunks; the extra rows are padding
    n_chunks = n_rows // chunk
    base = row_start[:-1] * _ROW

    s_parts, c_parts = [], []
    pads: dict = {}  # one padding constant per size: groups of one shape share it
    for g, (gs, gc) in enumerate(zip(scores, candidates)):
        for s, c in zip(gs, gc):
            s_parts.append(jnp.asarray(s).astype(fdtype).ravel())
            c_parts.append(jnp.asarray(c, bool).ravel())
        pad = int(rows[g] * _ROW - n[g])
        if pad:
            if pad not in pads:
                pads[pad] = (jnp.zeros(pad, fdtype), jnp.zeros(pad, bool))
            s_parts.append(pads[pad][0])
            c_parts.append(pads[pad][1])
    if n.sum() == 0:
        s_parts, c_parts = [], []
    tail = (n_rows - int(row_start[-1])) * _ROW
    if tail:
        s_parts.append(jnp.zeros(tail, fdtype))
        c_parts.append(jnp.zeros(tail, bool))
    cands = jnp.concatenate(c_parts).reshape(n_rows, _ROW)
    # |s| and -s after packing, so that they fuse into the keys (the packing is a copy)
    packed = _oriented(jnp.concatenate(s_parts), orient).reshape(n_rows, _ROW)
    keys = _keys(packed, cands, fdtype, udtype)

    if n_groups == 1:
        row_gid = None
    else:
        # static: a constant (a searchsorted would be a loop, the host waiting on a GPU)
        gids = np.repeat(np.arange(n_groups, dtype=np.int32), rows)
        row_gid = jnp.asarray(np.pad(gids, (0, n_rows - gids.size), mode="edge"))

    def per_row(v):
        """A per-group vector as a column over the rows."""
        return v.reshape(1, 1) if row_gid is None else v[row_gid][:, None]

    block_gid = None if row_gid is None else row_gid.reshape(n_chunks, chunk)

    def column(v, i):
        """A per-group vector as a column over the rows of chunk ``i``."""
        return v.reshape(1, 1) if block_gid is None else v[block_gid[i]][:, None]

    def add_up(hits, lo, hi, lead=()):
        """``hits(i)`` of chunks ``lo <= i < hi`` added up entry by entry: an int32
        ``(*lead, chunk, _ROW)`` array that stays in cache, which a CPU vectorises
        (about half a row sum's time)."""
        return jax.lax.fori_loop(
            lo,
            hi,
            lambda i, acc: acc + hits(i).astype(jnp.int32),
            jnp.zeros((*lead, chunk, _ROW), jnp.int32),
        )

    def per_group_rows(v):
        """Per group, the sum of a per-row vector."""
        if row_gid is None:
            return jnp.sum(v)[None]
        return jax.ops.segment_sum(v, row_gid, n_groups, indices_are_sorted=True)

    def per_group(hits, live=None):
        """Per group, the count of ``hits(i)``, a bool ``(chunk, _ROW)`` array over
        chunk ``i``; right for the groups where ``live`` (all when it is ``None``).
        Chunk by chunk in a loop: XLA's CPU backend writes a comparison out in full
        before it reduces it, and a chunk's stays in cache (a whole buffer's made a
        count take ten times a float sum's time, and memory)."""
        if block_gid is None:
            return jnp.sum(add_up(hits, 0, n_chunks), dtype=jnp.int32)[None]

        def by_rows():
            rows = jax.lax.fori_loop(
                0,
                n_chunks,
                lambda i, acc: acc.at[i].set(jnp.sum(hits(i), axis=1, dtype=jnp.int32)),
                jnp.zeros((n_chunks, chunk), jnp.int32),
            )
            return per_group_rows(rows.reshape(-1))

        def by_groups():
            # group by group over its own chunks (the rows of other groups in a chunk
            # it shares masked off); a finished group is skipped, so the search's
            # last steps count only the groups still searching. Group g's chunks are
            # [chunk_lo[g], chunk_hi[g]); a chunk may hold the rows of several groups.
            chunk_lo = jnp.asarray(row_start[:-1] // chunk, jnp.int32)
            chunk_hi = jnp.asarray(-(-row_start[1:] // chunk), jnp.int32)

            def count(g):
                def mine(i):
                    return hits(i) & (block_gid[i] == g)[:, None]

                return jnp.sum(add_up(mine, chunk_lo[g], chunk_hi[g]), dtype=jnp.int32)

            def one(g, totals):
                if live is None:
                    return totals.at[g].set(count(g))
                return totals.at[g].set(jax.lax.cond(live[g], count, lambda g: jnp.int32(0), g))

            return jax.lax.fori_loop(0, n_groups, one, jnp.zeros(n_groups, jnp.int32))

        if not groups_on:
            return by_rows()
        return jax.lax.platform_dependent(**dict.fromkeys(groups_on, by_groups), default=by_rows)

    def by_count(keys):
        """The counting search (module docstring): the CPU's and TPU's way."""
        blocks = keys.reshape(n_chunks, chunk, _ROW)
        # counted on the packed candidates, a byte an entry, not on the keys (a quarter
        # of the memory read; both say alive: no alive entry holds the top key)
        cand_blocks = cands.reshape(n_chunks, chunk, _ROW)
        alive = per_group(lambda i: cand_blocks[i])
        count_guesses = None
        if block_gid is None:
            # one group (a global prune): the sampled bracket's two ends in one read of
            # the keys, not a step each. Many groups keep a step each: a second loop
            # over the groups cost 0.25 s more compile (layerwise, 388 leaves)
            def count_guesses(t, live):
                at = t.reshape(-1, 1, 1)
                hits = add_up(lambda i: blocks[i][None] < at, 0, n_chunks, at.shape[:1])
                return jnp.sum(hits, axis=(-2, -1), dtype=jnp.int32)[None]

        k = _ks(spec, dyn, alive, n)
        bits = np.iinfo(udtype).bits
        t, below, upto = _search(
            lambda t, live: per_group(lambda i: blocks[i] < column(t, i), live),
            k,
            jnp.full(n_groups, top, udtype),
            alive,
            udtype,
            bits,
            guesses=_packed_brackets(keys, n, base, k, alive),
            by_value=True,
            count_guesses=count_guesses,
        )
        remaining = k - below

        def without_ties():
            return keys < per_row(t)

        def with_ties():
            # the first `remaining` ties of a group in order are those placed before the P
            # with #(ties placed before P) == remaining: the same search, over places
            pos = jax.lax.broadcasted_iota(jnp.uint32, keys.shape, 0) * jnp.uint32(_ROW)
            pos = pos + jax.lax.broadcasted_iota(jnp.uint32, keys.shape, 1)
            first = jnp.asarray(base, jnp.uint32)
            eq = keys == per_row(t)
            rows_c = jax.lax.broadcasted_iota(jnp.uint32, (chunk, _ROW), 0)
            cols_c = jax.lax.broadcasted_iota(jnp.uint32, (chunk, _ROW), 1)

            def ties_before(p, live):
                def hits(i):
                    at = (rows_c + (i * chunk).astype(jnp.uint32)) * jnp.uint32(_ROW) + cols_c
                    return (blocks[i] == column(t, i)) & (at < column(first + p, i))

                return per_group(hits, live)

            bits_p = np.array([max(int(m).bit_length(), 1) for m in n], np.int32)
            cut, _, _ = _search(
                ties_before, remaining, jnp.asarray(n, jnp.uint32), upto - below, jnp.uint32, bits_p
            )
            # a group that needs no tie takes none: its search may stop anywhere before
            # its first tie, or past all of them when the tie is the dead entries' key
            cut = jnp.where(remaining == 0, jnp.uint32(0), cut)
            return (keys < per_row(t)) | (eq & (pos < per_row(first + cut)))

        # Without ties at the threshold (the usual case) no ranking pass is needed.
        return jax.lax.cond(jnp.all(remaining == 0), without_ties, with_ties).reshape(-1)

    def by_sort(keys):
        """Stable sorts of (key, place) and then of the group: a GPU's way (module
        docstring). Each sort has one key and one payload, which XLA hands to a radix
        sort (CUB); one sort by (group, key) would take a comparison sort instead."""
        flat = keys.reshape(-1)
        place = jnp.arange(flat.shape[0], dtype=jnp.int32)
        alive = per_group_rows(jnp.sum(keys < top, axis=1, dtype=jnp.int32))
        k = _ks(spec, dyn, alive, n)
        _, order = jax.lax.sort((flat, place), num_keys=1, is_stable=True)
        if row_gid is not None:
            # least significant first: sorted by key, then (stably) by group. The group
            # is the row's, gathered by the sorted places, never an entry-sized constant
            # (XLA would fold one at compile time: minutes for ResNet-50 on a GPU).
            _, order = jax.lax.sort((row_gid[order // _ROW], order), num_keys=1, is_stable=True)
        # Group g's sorted entries fill its packed range from base[g], alive ones first
        # (dead entries and padding hold the top key): its first k <= alive are marked.
        rank = place.reshape(n_rows, _ROW) - per_row(jnp.asarray(base, jnp.int32))
        marks = rank < per_row(k)
        return jnp.zeros(flat.shape, bool).at[order].set(marks.reshape(-1), unique_indices=True)

    if sort_on:
        gone = jax.lax.platform_dependent(keys, **dict.fromkeys(sort_on, by_sort), default=by_count)
    else:
        gone = by_count(keys)
    # Each leaf's marks are a slice of the packed marks; everything before this is one
    # program whatever the number of leaves.
    starts = [
        int(base[g]) + int(a) for g in range(n_groups) for a in np.cumsum([0, *sizes[g]])[:-1]
    ]
    offsets: tuple[int | jax.Array, ...] = tuple(starts)
    if _shares_kernels([x for group in scores for x in group]):
        offsets = _opaque(starts, gone, jnp.int32)  # then equal leaves share a kernel
    at = iter(offsets)

    def cut(size):
        a = next(at)
        if isinstance(a, int):
            return gone[a : a + size]
        return jax.lax.dynamic_slice_in_dim(gone, a, size, allow_negative_indices=False)

    return [
        [cut(size).reshape(x.shape) for x, size in zip(group, sizes[g])]
        for g, group in enumerate(scores)
    ]


def _packed_brackets(keys, n, base, k, alive):
    """Per group, two guesses around its k-th alive key from an evenly strided sample
    of its keys (the whole group when it is small): the sample's quantile minus and
    plus ``_SPREAD`` standard deviations, the upper one plus one (a run of ties at the
    quantile is then bracketed exactly). One gather, one sort for all groups."""
    udtype = keys.dtype
    top = _top(udtype)
    n_groups = len(n)
    width = int(np.clip(_SAMPLE_TOTAL // n_groups, 256, _SAMPLE_MAX))
    count = np.minimum(n, width)
    stride = np.maximum(n // width, 1)
    j = jnp.arange(width, dtype=jnp.int32)[None]
    last = jnp.asarray(np.maximum(count - 1, 0), jnp.int32)[:, None]
    idx = (
        jnp.asarray(base, jnp.int32)[:, None]
        + jnp.minimum(j, last) * jnp.asarray(stride, jnp.int32)[:, None]
    )
    flat = keys.reshape(-1)
    idx = jnp.minimum(idx, flat.shape[0] - 1)
    sample = jnp.where(j < jnp.asarray(count, jnp.int32)[:, None], flat[idx], top)
    return _bracket_from_sample(jnp.sort(sample, axis=1), k, alive, top)
