"""Where a call's time goes, by XLA operation: the per-op profile of a model tree's
prune, ``imp_round`` and optimizer steps, steadier than whole-call timings.

On a shared VM one call of the same program can take 240 ms and the next 350 (page
faults, the host's memory compaction): whole-call medians cannot resolve a 10% change.
This section records every call with ``jax.profiler.trace`` and keeps, for every XLA
operation (fusions, copies, loops, by name with XLA's ``.N`` suffixes dropped), its
*fastest* per-call time over the repeats; a program's **op time** is the sum of those
minima. An operation split over the CPU's threads counts each thread's part, so op time
is CPU time spent in XLA's operations, not wall time; a ratio of op times compares
programs by the work their operations do, with the stalls that hit one call and not the
next left out.

Rows per tree (``JAXSPARSE_BENCH_TREES``, default ``bert_base,resnet50``; ``--quick``:
the tiny tree): the global prune of scores (undonated, as the ``models`` section times
it), a state pass (one donated read and write of a ``SparseTrainState``'s params and
optimizer state), ``imp_round`` donated with ``keep_unused=True``, ``imp_round``'s own
prune alone (the same magnitude prune and ``set_mask``, no rewind), and a donated Adam
step beside ``masked(adam)`` with its mask held as bools and as bits. The two donated
``imp_round`` rows thread their states from call to call, so each call prunes 20% of
what the last left and both go through the same densities (the ``models`` section
compares its round, at those falling densities, with a prune at 50%). Ratios:
``imp_round`` as (its op time - its own prune's) / the state pass's, issue 17's goal
being <= 1; each masked step / the Adam step.
"""

from __future__ import annotations

import bisect
import collections
import gzip
import json
import os
import re
import tempfile
from pathlib import Path

from experiments.bench import timing

# names of profiler events that are not XLA operations: the runtime's own spans
_NOT_OPS = (
    "$",
    "Thunk",
    "Pjit",
    "end:",
    "CALL:",
    "Common",
    "Handle",
    "Parse",
    "Allocate",
    "Wait",
    "Python",
    "Threadpool",
    "Execute",
)


def op_times(calls: dict, repeats: int) -> dict[str, dict]:
    """Traces ``repeats`` rounds of every call (rotating order, two warm-up calls each)
    and returns, per call, ``{"ops": {op: fastest ms}, "op_ms": sum of those, "calls_ms":
    [each call's own op sum]}``.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.ones(1000)
        >>> t = op_times({"sum": lambda: jnp.sum(x * 2.0)}, 2)
        >>> t["sum"]["op_ms"] > 0 and len(t["sum"]["calls_ms"]) == 2
        True
    """
    import jax

    for fn in calls.values():
        for _ in range(2):
            timing.block(fn())
    names = list(calls)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for r in range(repeats):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    with jax.profiler.TraceAnnotation(f"CALL:{names.index(name)}:{r}"):
                        timing.block(calls[name]())
        found = sorted(Path(d).rglob("*perfetto_trace.json.gz"))
        if not found:
            raise RuntimeError(f"op_times: jax.profiler wrote no perfetto trace under {d}")
        with gzip.open(found[-1]) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    windows = sorted(
        (
            e["ts"],
            e["ts"] + e["dur"],
            names[int(e["name"].split(":")[1])],
            int(e["name"].split(":")[2]),
        )
        for e in spans
        if e["name"].startswith("CALL:")
    )
    per: dict = collections.defaultdict(lambda: collections.defaultdict(float))
    starts = [w[0] for w in windows]
    for e in spans:
        if e["name"].startswith(_NOT_OPS):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i >= 0 and e["ts"] <= windows[i][1]:
            _, _, name, r = windows[i]
            per[(name, r)][re.sub(r"\.\d+$", "", e["name"])] += e["dur"] / 1e3
    out = {}
    for name in names:
        ops = collections.defaultdict(list)
        for r in range(repeats):
            for op, ms in per[(name, r)].items():
                ops[op].append(ms)
        fastest = {op: min(v) for op, v in ops.items()}
        out[name] = {
            "ops": dict(sorted(fastest.items(), key=lambda kv: -kv[1])),
            "op_ms": sum(fastest.values()),
            "calls_ms": [sum(per[(name, r)].values()) for r in range(repeats)],
        }
    return out


def measure_tree(name: str, repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    import jaxsparse as js
    from experiments.bench.models import state_pass, tree_setup

    params, info, scores, mask, grads = tree_setup(name)

    def sparse():
        st = js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3))
        return st.replace(opt_state=js.set_mask(st.opt_state, mask))

    def plain(tx):
        return lambda: train_state.TrainState.create(apply_fn=None, params=params, tx=tx)

    def step(st):
        return st.apply_gradients(grads=grads)

    def own_prune(st):
        # imp_round's own prune and nothing else (its defaults): threaded like the
        # round, it prunes at the same densities call after call
        kw = {"scope": "global", "rates": None, "score_fn": js.scores.magnitude}
        mask = js.lottery._round_mask(st, 0.2, **kw)
        return st.replace(opt_state=js.set_mask(st.opt_state, mask))

    # Two groups, each traced on its own and its states freed after: the pruning rows
    # (imp_round, its own prune, the state pass threading the prune's state, which it
    # does not change) and the optimizer steps. Within a group the calls interleave.
    # All at once, BERT-base's rows peaked at 21.6 GB of this machine's 24.
    # (program, a function making its state or None to share the slot above, keep_unused)
    groups = [
        {
            "imp_round's prune, donated": (own_prune, sparse, False),
            "state pass": (state_pass, None, False),
            "imp_round, donated": (lambda s: js.imp_round(s, fraction=0.2), sparse, True),
        },
        {
            "adam step": (step, plain(optax.adam(1e-3)), False),
            "masked(adam) step": (step, plain(js.masked(optax.adam(1e-3), mask)), False),
            "masked(adam, packed) step": (
                step,
                plain(js.masked(optax.adam(1e-3), mask, packed=True)),
                False,
            ),
        },
    ]
    prune = jax.jit(lambda s, m: js.prune(s, m, 0.2, scope="global"))
    t = {}
    for i, group in enumerate(groups):
        calls, held = ({"prune global": lambda: prune(scores, mask)} if i == 0 else {}), {}
        slot = ""
        for what, (fn, make, keep) in group.items():
            jitted = jax.jit(fn, donate_argnums=0, keep_unused=keep)
            if make is not None:
                slot = what
                held[slot] = jax.tree.map(jnp.copy, make())  # params stay the caller's

            def call(jitted=jitted, slot=slot, held=held):
                held[slot] = jitted(held[slot])
                return held[slot]

            calls[what] = call
        t.update(op_times(calls, repeats))  # the group's states go with its calls
    base = {"masked(adam) step": "adam step", "masked(adam, packed) step": "adam step"}
    rows = []
    for what, r in t.items():
        if what == "imp_round, donated":
            prune_ms = t["imp_round's prune, donated"]["op_ms"]
            ratio = (r["op_ms"] - prune_ms) / t["state pass"]["op_ms"]
        else:
            ratio = r["op_ms"] / t[base[what]]["op_ms"] if what in base else None
        top = list(r["ops"].items())[:3]
        rows.append(
            {
                "tree": name,
                "what": what,
                "op_ms": r["op_ms"],
                "call_min_ms": min(r["calls_ms"]),
                "call_median_ms": timing.median(r["calls_ms"]),
                "ratio": ratio,
                "top_ops": ", ".join(f"{op} {timing.fmt(ms)}" for op, ms in top),
                "ops": r["ops"],
                **info,
            }
        )
    return rows


COLUMNS = [
    ("tree", "tree"),
    ("what", "what"),
    ("op_ms", "op time, ms"),
    ("call_min_ms", "calls' op sums: min ms"),
    ("call_median_ms", "median ms"),
    ("ratio", "ratio"),
    ("top_ops", "largest ops, ms"),
]


def measure(quick: bool) -> dict:
    chosen = os.environ.get("JAXSPARSE_BENCH_TREES")
    trees = chosen.split(",") if chosen else (["tiny"] if quick else ["bert_base", "resnet50"])
    rows = []
    for name in trees:
        rows += measure_tree(name, 3 if quick else 8)
    note = (
        "Op time: for every XLA operation, its fastest per-call time over the repeats, "
        "summed (CPU time in XLA's operations: a loop split over threads counts each "
        "part). The calls' own op sums, min and median, show the spread that the minima "
        "leave out. The two donated imp_round rows thread their states, so they prune at "
        "the same falling densities. Ratios: imp_round as (its op time - its own "
        "prune's, the row above it) / the state pass's, issue 17's goal being <= 1; a "
        "masked step / the Adam step."
    )
    return timing.section("Operation profile (XLA trace)", rows, note, COLUMNS)
