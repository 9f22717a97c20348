"""Model-shaped trees (:mod:`experiments.bench.model_trees`): what each mask operation
costs to compile and to run on a ResNet-50, ViT-B/16, BERT-base or GPT-2-small tree,
counted in *passes* measured in the same run.

One *pass* is one jitted reduction over all the tree's prunable scores (``sum(s)``
over every kernel, the unit of issue 17); each prune's run time is also given in
passes. A *count pass*, ``sum(s < t)``, the search's own step, is timed beside it: XLA's
CPU backend writes the comparison out as an int32 array before reducing it, so a count
pass costs several float passes there.
Per tree, rows for: ``js.prune`` global and layerwise (20% of the alive kernels'
weights, after a first 50% prune so a mask is in place), the same by a full
``jnp.argsort`` (the sort baseline; optional, it takes tens of seconds on 10^8
weights), ``imp_round``, ``gradual_prune`` and ``dst.rigl`` inside one jitted step
(their pruning step, and their non-pruning step against the ``SparseTrainState`` step
they add to; and ``gradual_prune`` alone as its own jitted call, the split form whose
other steps are the bare step) and ``masked(adam)`` (its mask held as bools, and as
bits with ``packed=True``) against ``adam``: the whole
optimizer step as a user runs it (``state.apply_gradients`` in one jitted call with the
state donated, both in a plain Flax ``TrainState``), the ``SparseTrainState`` step (the
same plus its rewind snapshot) and the bare ``update`` beside it; and each state's
*dispatch floor*, a jitted call of the same arguments that does no work: what the host
spends a call on the state's and the gradients' leaves. Compile: seconds of wall time
for ``jit(f).lower(...).compile()``; peak: XLA's memory analysis of the compiled program
(arguments + outputs + temporaries). Run: the process's CPU time on the CPU backend
(:func:`timing.interleaved`), medians of interleaved repeats.

Flags through the environment, so a quick test can pick a tiny tree:
``JAXSPARSE_BENCH_TREES=resnet50,bert_base`` (default: resnet50, vit_b16, bert_base,
gpt2_small; ``--quick``: tiny), ``JAXSPARSE_BENCH_SORT=0`` to skip the sort baseline,
``JAXSPARSE_BENCH_SKIP=rigl,...`` to skip the rows whose names start so.
"""

from __future__ import annotations

import os
import sys
import time

from experiments.bench import timing

FULL = ("resnet50", "vit_b16", "bert_base", "gpt2_small")


def _compiled(fn, *args, donate=False, keep_unused=False):
    import jax

    t0 = time.perf_counter()
    jitted = jax.jit(fn, donate_argnums=(0,) if donate else (), keep_unused=keep_unused)
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak = None
    if mem is not None:
        peak = (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
    return compiled, seconds, (None if mem is None else mem.temp_size_in_bytes), peak


def hlo_ops(fn, *args) -> int:
    """Instructions in the optimised HLO of ``jit(fn)`` (all computations)."""
    import jax

    text = jax.jit(fn).lower(*args).compile().as_text()
    return sum(1 for line in text.splitlines() if " = " in line and not line.startswith("//"))


def tree_setup(name: str):
    """A model tree's params, its summary, magnitude scores, a 50% global mask (so a
    prune starts from a mask in place) and random gradients (RigL grows by |gradient|,
    and a constant one would make its pruning step rank nothing but ties)."""
    import jax

    import jaxsparse as js
    from experiments.bench import model_trees

    params = model_trees.build(name)
    scores = js.scores.magnitude(params)
    mask = jax.jit(lambda s: js.prune(s, js.mask_like(s), 0.5, scope="global"))(scores)
    leaves, treedef = jax.tree.flatten(params)
    grads = jax.tree.unflatten(
        treedef,
        [
            1e-3 * jax.random.normal(jax.random.key(i), p.shape, p.dtype)
            for i, p in enumerate(leaves)
        ],
    )
    return params, model_trees.summary(params), scores, mask, grads


def state_pass(st):
    """Reads and writes every float leaf of a train state's params and optimizer state
    once (a multiply by a factor that is 1.0 but not known to XLA): the unit of
    ``imp_round``'s cost over its prune."""
    import jax
    import jax.numpy as jnp

    one = jnp.where(st.step < 0, 2.0, 1.0)

    def scale(x):
        return x * one.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return st.replace(
        params=jax.tree.map(scale, st.params), opt_state=jax.tree.map(scale, st.opt_state)
    )


def _sort_prune(scope):
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    def prune(scores, mask):
        sel = jax.tree.leaves(js.filters.prunable(scores, None))
        s, (m, treedef) = jax.tree.leaves(scores), jax.tree.flatten(mask)
        idx = [i for i, keep in enumerate(sel) if keep]
        out = list(m)
        if scope == "layerwise":
            for i in idx:
                k = jnp.round(0.2 * jnp.sum(m[i])).astype(jnp.int32)
                flat = jnp.where(m[i], s[i], jnp.inf).ravel()
                order = jnp.argsort(flat, stable=True)
                gone = jnp.arange(flat.size) < k
                out[i] = m[i] & ~jnp.zeros(flat.size, bool).at[order].set(gone).reshape(m[i].shape)
            return jax.tree.unflatten(treedef, out)
        alive = sum(jnp.sum(m[i], dtype=jnp.int32) for i in idx)
        k = jnp.round(0.2 * alive).astype(jnp.int32)
        flat = jnp.concatenate([jnp.where(m[i], s[i], jnp.inf).ravel() for i in idx])
        order = jnp.argsort(flat, stable=True)
        gone = jnp.zeros(flat.size, bool).at[order].set(jnp.arange(flat.size) < k)
        at = 0
        for i in idx:
            out[i] = m[i] & ~gone[at : at + m[i].size].reshape(m[i].shape)
            at += m[i].size
        return jax.tree.unflatten(treedef, out)

    return prune


def measure_tree(name: str, repeats: int, sort: bool, quick: bool = False) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxsparse as js

    params, info, scores, mask, grads = tree_setup(name)
    kernels = [
        x
        for x, k in zip(jax.tree.leaves(scores), jax.tree.leaves(js.filters.prunable(scores)))
        if k
    ]
    t_mid = jnp.float32(0.01)

    def one_pass(ks, t):
        return sum(jnp.sum(x < t, dtype=jnp.int32) for x in ks)

    adam = optax.adam(1e-3)
    madam = js.masked(optax.adam(1e-3), mask)
    padam = js.masked(optax.adam(1e-3), mask, packed=True)
    skip = [w for w in os.environ.get("JAXSPARSE_BENCH_SKIP", "").split(",") if w]

    def wanted(what):
        return not any(what.startswith(x) for x in skip)

    from flax.training import train_state

    # Each state is built only if a row that is run reads it, so a prune-only run of a
    # large tree (JAXSPARSE_BENCH_SKIP=adam,masked,SparseTrainState,gradual,rigl) holds
    # params, scores, masks and one SparseTrainState.
    def make(kind):
        if kind == "adam":
            return train_state.TrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3))
        if kind == "masked":
            return train_state.TrainState.create(apply_fn=None, params=params, tx=madam)
        if kind == "packed":
            return train_state.TrainState.create(apply_fn=None, params=params, tx=padam)
        st = js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3))
        return st.replace(opt_state=js.set_mask(st.opt_state, mask))

    # A step is timed as users run it: one jitted call with the state donated, threaded
    # from call to call. The SparseTrainState rows share one threaded copy (a copy each
    # would not fit BERT's in 24 GB); each sets ``step`` to the value it needs (10 prunes,
    # 11 does not) and puts it back, so a pruning step stays one (the mask is at the
    # schedule's target after the first, and the search still runs).
    sched = js.schedules.polynomial(0.8, begin=0, end=1000)

    def at(k, fn=None):
        def program(st, g):
            s = st.replace(step=jnp.full_like(st.step, k))
            s = s.apply_gradients(grads=g)
            return (s if fn is None else fn(s, g)).replace(step=st.step)

        return program

    def own(fn):  # the prune alone, as its own jitted call on the steps that prune
        def program(st, g):
            return fn(st.replace(step=jnp.full_like(st.step, 10)), g).replace(step=st.step)

        return program

    def gradual(st, g):
        return js.schedules.gradual_prune(st, sched, every=10)

    def rigl(st, g):
        return js.dst.rigl(st, g, every=10, end=1000)

    def dispatch(st, g):
        # no work but reading one entry of each gradient: what one jitted call costs the
        # host for the state's and the gradients' leaves (flattened, passed, donated and
        # returned), the floor under the steps of that state
        touch = sum(jnp.ravel(x)[0] for x in jax.tree.leaves(g))
        return st.replace(step=st.step + (touch == jnp.inf).astype(st.step.dtype))

    def imp(st, g):
        return js.imp_round(st, fraction=0.2)

    steps = {
        "dispatch floor, masked(adam) TrainState": (dispatch, "masked"),
        "dispatch floor, SparseTrainState": (dispatch, "sparse"),
        "adam step": (at(11), "adam"),
        "masked(adam) step": (at(11), "masked"),
        "masked(adam, packed) step": (at(11), "packed"),
        "SparseTrainState step": (at(11), "sparse"),
        "gradual_prune, pruning step": (at(9, gradual), "sparse"),
        "gradual_prune, other step": (at(10, gradual), "sparse"),
        "gradual_prune, own call": (own(gradual), "sparse"),
        "rigl, pruning step": (at(9, rigl), "sparse"),
        "rigl, other step": (at(10, rigl), "sparse"),
        "state pass, SparseTrainState": (lambda st, g: state_pass(st), "sparse"),
        # as the docs advise running it: donated, and with keep_unused=True, so that the
        # moments it resets (which it never reads) still pass their buffers on
        "imp_round, donated": (imp, "imp"),
    }
    steps = {w: v for w, v in steps.items() if wanted(w)}
    kinds = {k: make(k) for k in {kind for _, kind in steps.values()} - {"imp"} | {"sparse"}}
    # the donated imp_round row starts from the same SparseTrainState and threads a copy
    # of its own (``held["imp"]``), so it needs no second state built
    kinds["imp"] = kinds["sparse"]
    progs = {
        "pass": (lambda ks: sum(jnp.sum(x) for x in ks), (kernels,)),
        "count pass": (one_pass, (kernels, t_mid)),
        "prune global": (lambda s, m: js.prune(s, m, 0.2, scope="global"), (scores, mask)),
        "prune layerwise": (lambda s, m: js.prune(s, m, 0.2, scope="layerwise"), (scores, mask)),
        "imp_round": (lambda st: js.imp_round(st, fraction=0.2), (kinds["sparse"],)),
        **{w: (fn, (kinds[kind], grads)) for w, (fn, kind) in steps.items()},
    }
    if wanted("adam update"):
        progs["adam update"] = (adam.update, (grads, adam.init(params), params))
    if wanted("masked(adam) update"):
        progs["masked(adam) update"] = (madam.update, (grads, madam.init(params), params))
    if wanted("masked(adam, packed) update"):
        progs["masked(adam, packed) update"] = (padam.update, (grads, padam.init(params), params))
    progs = {w: v for w, v in progs.items() if wanted(w)}
    if sort:
        progs["argsort global"] = (_sort_prune("global"), (scores, mask))
        progs["argsort layerwise"] = (_sort_prune("layerwise"), (scores, mask))
    compiled, comp, calls, held = {}, {}, {}, {}
    for what, (fn, args) in progs.items():
        donate = what in steps
        keep = what == "imp_round, donated"
        c, secs, temp, peak = _compiled(fn, *args, donate=donate, keep_unused=keep)
        print(f"  {name}: {what} compiled in {secs:.2f} s", file=sys.stderr, flush=True)
        compiled[what] = (c, args)
        comp[what] = (secs, temp, peak)
        if what.startswith("argsort"):
            continue
        if donate:  # thread a private copy of the state through the calls
            kind = steps[what][1]
            if kind not in held:
                held[kind] = jax.tree.map(jnp.copy, kinds[kind])

            def call(c=c, kind=kind, rest=args[1:]):
                held[kind] = c(held[kind], *rest)
                return held[kind]

            calls[what] = call
        else:
            calls[what] = lambda c=c, a=args: c(*a)
    samples = timing.interleaved(calls, repeats, min_seconds=0.0 if quick else 0.25).wall
    t = {w: timing.median(v) for w, v in samples.items()}
    for w in compiled:
        if w.startswith("argsort"):
            c, a = compiled[w]
            t[w] = timing.median(
                timing.interleaved({w: lambda c=c, a=a: c(*a)}, 1, warmup=1).wall[w]
            )
    unit = t["pass"]
    base = {
        "dispatch floor, masked(adam) TrainState": "masked(adam) step",
        "dispatch floor, SparseTrainState": "SparseTrainState step",
        "gradual_prune, other step": "SparseTrainState step",
        "rigl, other step": "SparseTrainState step",
        "SparseTrainState step": "masked(adam) step",
        "masked(adam) step": "adam step",
        "masked(adam) update": "adam update",
        "masked(adam, packed) step": "adam step",
        "masked(adam, packed) update": "adam update",
    }

    def ratio(what):
        if what.startswith("imp_round"):  # its cost over the prune, in state passes
            if "prune global" in t and "state pass, SparseTrainState" in t:
                return (t[what] - t["prune global"]) / t["state pass, SparseTrainState"]
            return None
        return t[what] / t[base[what]] if base.get(what) in t else None

    rows = []
    for what in progs:
        if what not in comp:
            continue
        secs, temp, peak = comp[what]
        row = {
            "tree": name,
            "what": what,
            "compile_s": secs,
            "run_ms": t[what] * 1e3,
            "passes": t[what] / unit,
            "temp_mb": None if temp is None else temp / 2**20,
            "peak_mb": None if peak is None else peak / 2**20,
            "ratio": ratio(what),
            **info,
        }
        rows.append(row)
    return rows


COLUMNS = [
    ("tree", "tree"),
    ("what", "what"),
    ("compile_s", "compile s"),
    ("run_ms", "run ms"),
    ("passes", "run, passes"),
    ("ratio", "ratio"),
    ("peak_mb", "peak MB (XLA)"),
    ("temp_mb", "temp MB (XLA)"),
]


def _pages() -> str:
    """Which pages glibc's malloc asks for: XLA's CPU backend takes a call's buffers
    from it, and those past 32 MB are mapped fresh on every call, so a prune's passes
    include the page faults of its temporaries (docs/bench/models.md)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=1" in tunables or "glibc.malloc.hugetlb=2" in tunables:
        return f"Huge pages for malloc (GLIBC_TUNABLES={tunables})."
    return f"4 KiB pages for malloc (GLIBC_TUNABLES={tunables or 'unset'})."


def measure(quick: bool) -> dict:
    chosen = os.environ.get("JAXSPARSE_BENCH_TREES")
    trees = chosen.split(",") if chosen else (["tiny"] if quick else list(FULL))
    sort = os.environ.get("JAXSPARSE_BENCH_SORT", "1") != "0"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for name in trees:
        rows += measure_tree(name, 3 if quick else 5, sort, quick)
    sizes = {
        r["tree"]: f"{r['params'] / 1e6:.1f}M params, {r['leaves']} leaves, {r['kernels']} kernels"
        for r in rows
    }
    note = (
        "Trees: "
        + "; ".join(f"{k}: {v}" for k, v in sizes.items())
        + f". One pass = one jitted `sum(s)` over all kernels' scores; a count pass = "
        "`sum(s < t)`, the search's step. Load average at "
        f"start {load}. {_pages()} Compile in wall seconds; run in {timing.clock_words()}, "
        "the median of interleaved samples, each of back-to-back calls lasting at least "
        "0.25 s (one call with --quick). Ratios: "
        "masked(adam) against adam, both in a Flax `TrainState`, as a step (`apply_gradients` "
        "in one jitted call, the state donated) and as the bare `update`, with the mask held "
        "as bools and as bits (`packed=True`); a "
        "`SparseTrainState` step (the same plus its rewind snapshot) against the masked(adam) "
        "step; a non-pruning `gradual_prune` or `rigl` step against the SparseTrainState step; "
        "a dispatch floor (a jitted call of the same arguments that does no work) against "
        "the step of its state: the share of the step the host's per-leaf cost sets. "
        "imp_round rows: (its time - the global prune's) / the state pass (one donated "
        "call that reads and writes the SparseTrainState's params and optimizer state "
        "once), issue 17's goal being <= 1; undonated as `jax.jit(imp_round)`, and "
        "donated with `keep_unused=True`, its state threaded from call to call (each call "
        "prunes 20% of what the last left)."
    )
    return timing.section("Model-shaped trees", rows, note, COLUMNS)
