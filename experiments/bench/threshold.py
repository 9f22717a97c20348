"""Mask-update rows: ``js.prune`` (global and layerwise) against sort-based JAX
baselines (``jnp.argsort`` and ``lax.top_k``), and the exact threshold alone as a
multiple of one counting pass, at 1e5 to 1e8 parameters.

The problem: four leaves of unequal size (40/30/20/10% of n, 100 columns), scores the
magnitudes of normal weights (distinct almost surely), ~20% already dead, prune 20% of
the alive ones. The baselines concatenate (or go leaf by leaf), select the k lowest and
scatter back; they are checked to give jaxsparse's mask first.

One *counting pass* is ``jnp.sum(scores < t)`` over the same scores, timed two ways:
as one jitted call ("standalone"), and per pass inside a jitted ``fori_loop`` of 8
("in loop"), the form the search runs in; the two differ by ~2x on this CPU.
"""

from __future__ import annotations

import numpy as np

from experiments.bench import timing

FRACTIONS = (0.4, 0.3, 0.2, 0.1)
COLS = 100
AMOUNT = 0.2


def problem(n: int, seed: int = 0):
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    shapes = [(max(1, round(n * f / COLS)), COLS) for f in FRACTIONS]
    scores = {
        f"leaf{i}": jnp.asarray(np.abs(rng.standard_normal(s, np.float32)) * 0.05)
        for i, s in enumerate(shapes)
    }
    mask = {k: jnp.asarray(rng.random(v.shape) < 0.8) for k, v in scores.items()}
    return scores, mask


def _sort_prune(select, scope: str):
    """Concatenate (global) or go leaf by leaf, take the k lowest by ``select``, scatter."""
    import functools

    import jax
    import jax.numpy as jnp

    def lowest(s, m, k):
        flat = jnp.where(m, s, jnp.inf).ravel()
        return jnp.zeros(flat.shape, bool).at[select(flat, k)].set(True)

    @functools.partial(jax.jit, static_argnums=2)
    def prune(scores, mask, ks):
        s, (m, treedef) = jax.tree.leaves(scores), jax.tree.flatten(mask)
        if scope == "layerwise":
            out = [mi & ~lowest(si, mi, k).reshape(mi.shape) for si, mi, k in zip(s, m, ks)]
        else:
            gone = lowest(
                jnp.concatenate([x.ravel() for x in s]),
                jnp.concatenate([x.ravel() for x in m]),
                ks[0],
            )
            out, at = [], 0
            for mi in m:
                out.append(mi & ~gone[at : at + mi.size].reshape(mi.shape))
                at += mi.size
        return jax.tree.unflatten(treedef, out)

    return prune


def _argsort(flat, k):
    import jax.numpy as jnp

    return jnp.argsort(flat, stable=True)[:k]  # stable: ties go to the earlier position


def _top_k(flat, k):
    import jax

    return jax.lax.top_k(-flat, k)[1]  # top_k breaks ties by lower index


def _ks(mask, scope):
    alive = [int(np.asarray(m).sum()) for m in mask.values()]
    return (
        tuple(round(AMOUNT * a) for a in alive)
        if scope == "layerwise"
        else (round(AMOUNT * sum(alive)),)
    )


def measure_size(n: int, repeats: int, baselines: bool = True) -> list[dict]:
    import jax
    import jax.numpy as jnp

    import jaxsparse as js
    from jaxsparse import _keys, _select

    scores, mask = problem(n)
    leaves = list(scores.values())
    t0 = jnp.float32(0.01)
    one_pass = jax.jit(lambda s, t: jnp.sum(s < t))
    loop_pass = jax.jit(
        lambda s, t: jax.lax.fori_loop(
            0, 8, lambda j, c: c + jnp.sum(s < t + j.astype(jnp.float32)), 0
        )
    )
    # the threshold alone: the search and the selection over precomputed keys
    keys = jax.jit(lambda s, m: [_keys._keys(s[k], m[k]) for k in s])(scores, mask)
    k_global = _ks(mask, "global")[0]
    threshold = jax.jit(lambda keys, k: _select._select_lowest(keys, k))
    big = max(leaves, key=lambda x: x.size)
    calls = {
        "pass": lambda: one_pass(big, t0),
        "loop pass": lambda: loop_pass(big, t0),
        "threshold": lambda: threshold(keys, k_global),
    }
    prunes = {}
    for scope in ("global", "layerwise"):
        ours = jax.jit(lambda s, m, scope=scope: js.prune(s, m, AMOUNT, scope=scope))
        want = ours(scores, mask)
        prunes[scope] = ours
        calls[f"{scope} jaxsparse"] = lambda ours=ours: ours(scores, mask)
        ks = _ks(mask, scope)
        for name, sel in (("argsort", _argsort), ("top_k", _top_k)):
            if not baselines:
                continue
            base = _sort_prune(sel, scope)
            got = base(scores, mask, ks)
            for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
                assert np.array_equal(np.asarray(a), np.asarray(b)), f"{name} differs at {n}"
            calls[f"{scope} {name}"] = lambda base=base, ks=ks: base(scores, mask, ks)
    times = timing.interleaved(calls, repeats)
    t = {name: timing.median(v) for name, v in times.wall.items()}
    cpu = {name: timing.median(v) for name, v in times.cpu.items()}
    # one pass over all n keys: the timed pass covers the largest leaf (40% of n)
    scale = sum(x.size for x in leaves) / big.size
    per_pass, per_loop_pass = t["pass"] * scale, t["loop pass"] / 8 * scale
    rows = []
    for scope in ("global", "layerwise"):
        r = {
            "n": int(sum(x.size for x in leaves)),
            "scope": scope,
            "jaxsparse_ms": t[f"{scope} jaxsparse"] * 1e3,
            "pass_ms": per_pass * 1e3,
            "loop_pass_ms": per_loop_pass * 1e3,
            "prune_in_passes": t[f"{scope} jaxsparse"] / per_pass,
            "prune_in_loop_passes": t[f"{scope} jaxsparse"] / per_loop_pass,
        }
        if scope == "global":
            r["threshold_ms"] = t["threshold"] * 1e3
            r["threshold_in_passes"] = t["threshold"] / per_pass
            r["threshold_in_loop_passes"] = t["threshold"] / per_loop_pass
        for name in ("argsort", "top_k"):
            if f"{scope} {name}" in t:
                r[f"{name}_ms"] = t[f"{scope} {name}"] * 1e3
                r[f"speedup_vs_{name}_ratio"] = t[f"{scope} {name}"] / t[f"{scope} jaxsparse"]
                if timing.on_cpu():
                    r[f"cpu_speedup_vs_{name}"] = cpu[f"{scope} {name}"] / cpu[f"{scope} jaxsparse"]
        rows.append(r)
    return rows


COLUMNS = [
    ("n", "n params"),
    ("scope", "scope"),
    ("jaxsparse_ms", "js.prune ms"),
    ("argsort_ms", "argsort ms"),
    ("top_k_ms", "top_k ms"),
    ("speedup_vs_argsort_ratio", "x faster than argsort"),
    ("speedup_vs_top_k_ratio", "x faster than top_k"),
    ("threshold_in_passes", "threshold alone, standalone passes"),
    ("threshold_in_loop_passes", "threshold alone, in-loop passes"),
    ("prune_in_passes", "js.prune, standalone passes"),
]


def measure(quick: bool) -> dict:
    sizes = [10**4] if quick else [10**5, 10**6, 10**7, 10**8]
    rows = []
    for n in sizes:
        # sorting 1e8 keys takes minutes here: no sort baselines at 1e8
        rows += measure_size(n, 3 if quick or n >= 10**7 else 7, baselines=n < 10**8)
    for r in rows:
        r["n"] = f"{r['n']:.0e}".replace("e+0", "e")
    note = (
        f"Prune {AMOUNT:.0%} of the alive weights (~20% already dead) of 4 leaves; "
        "baselines give the identical mask. The threshold alone (`_select_lowest` over "
        "precomputed keys, global) and the whole `js.prune` are given in counting "
        "passes, `jnp.sum(scores < t)` over the same n: *standalone* = one jitted call, "
        "*in-loop* = one pass of a jitted `fori_loop` of 8. Goal: threshold <= 6 passes. "
        f"{timing.clock_words().capitalize()}, median of interleaved repeats (3 at >= 1e7); "
        "the speed-ups on the CPU clock are in the JSON (`cpu_speedup_vs_*`)."
    )
    return timing.section("Mask update", rows, note, COLUMNS)
