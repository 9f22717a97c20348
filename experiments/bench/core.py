"""Benchmarks of the two core costs: the masked optimizer step, and global pruning.

1. A full jitted training step (forward, loss, grad, ``tx.update``, ``apply_updates``)
   with ``jaxsparse.masked(optax.adam)`` against plain ``optax.adam``, for LeNet-300-100
   and a small CNN (flax.linen). The headline is the steady-state training cost: the
   MLP's steps inside one jitted ``lax.scan`` (no per-step dispatch), the CNN's one
   jitted call a step (XLA:CPU is very slow on convolutions inside a loop; see
   ``ModelCase``); the MLP per call is shown too. Dense and masked repeats are
   interleaved (``bench.timing``), so drift in machine load hits both; each figure is
   the median over repeats.
2. ``jaxsparse.prune(..., scope="global")`` (jitted) against two sort-based JAX baselines
   that concatenate all scores and use ``jnp.argsort`` or ``jax.lax.top_k``, then
   scatter back. The baselines are checked to give exactly jaxsparse's mask first.

Every ratio is measured in the same run; nothing is hard-coded.

Run::

    python -m experiments.bench.core           # full, a few minutes on 2 CPU cores
    python -m experiments.bench.core --quick   # smoke test, < 30 s
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsparse
from experiments.bench import threshold, timing
from experiments.models import LeNet300  # the study's LeNet-300-100

BATCH = 60
SPARSITY = 0.8
PRUNE_AMOUNT = 0.2
LEAF_FRACTIONS = (0.4, 0.3, 0.2, 0.1)  # four leaves of unequal size
LEAF_COLS = 100


class SmallCNN(nn.Module):
    """Two 3x3 convs (32, 64 channels), each followed by 2x2 average pooling, and a
    dense head (128, 10)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)


class ModelCase(NamedTuple):
    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    steps: int  # steps per timed repeat
    # How the step runs: "scan" (all steps in one jitted lax.scan) and/or "per-call" (one
    # jitted call a step). The CNN skips "scan": XLA:CPU runs convolutions inside a loop
    # body tens of times slower than the same step jitted alone (seen with jax 0.10 on
    # CPU), so a scanned CNN measures that, not training; per call, dispatch is <1% of
    # its step.
    modes: tuple[str, ...]


def _make_step(model: nn.Module, tx: optax.GradientTransformation) -> Callable:
    def loss_fn(params, x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _make_runner(step: Callable, mode: str) -> Callable:
    """``run(params, opt_state, xs, ys)`` over all batches, in the given mode."""
    if mode == "scan":

        @jax.jit(donate_argnums=(0, 1))
        def scan_run(params, opt_state, xs, ys):
            def body(carry, batch):
                p, s, loss = step(*carry, *batch)
                return (p, s), loss

            (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
            return params, opt_state, losses[-1]

        return scan_run

    jit_step = jax.jit(step, donate_argnums=(0, 1))

    def per_call_run(params, opt_state, xs, ys):
        loss = None
        for x, y in zip(xs, ys):  # lists of per-step batches, sliced before timing
            params, opt_state, loss = jit_step(params, opt_state, x, y)
        return params, opt_state, loss

    return per_call_run


def bench_training(case: ModelCase, repeats: int) -> tuple[int, float, dict[str, dict]]:
    """Returns (number of params, mask sparsity, {mode: ratio row}) for one model."""
    key_init, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    params = case.model.init(key_init, jnp.zeros((1, *case.input_shape)))["params"]
    n_params = sum(x.size for x in jax.tree.leaves(params))
    # jitted: eager prune dispatches (and compiles) its many small ops one by one
    global_prune = jax.jit(lambda s, m: jaxsparse.prune(s, m, SPARSITY, scope="global"))
    mask = global_prune(jaxsparse.scores.magnitude(params), jaxsparse.mask_like(params))
    sparsity = float(jaxsparse.sparsity(mask))
    xs = jax.random.normal(key_x, (case.steps, BATCH, *case.input_shape))
    ys = jax.random.randint(key_y, (case.steps, BATCH), 0, 10)
    batches = {
        "scan": (xs, ys),
        "per-call": ([xs[i] for i in range(case.steps)], [ys[i] for i in range(case.steps)]),
    }
    txs = {"dense": optax.adam(1e-3), "masked": jaxsparse.masked(optax.adam(1e-3), mask)}
    start = {"dense": params, "masked": jaxsparse.apply_mask(params, mask)}

    results = {}
    for mode in case.modes:
        runners, states = {}, {}
        for name, tx in txs.items():
            runners[name] = _make_runner(_make_step(case.model, tx), mode)
            # copies: the runners donate params and state, and the state holds the mask
            states[name] = jax.tree.map(jnp.copy, (start[name], tx.init(start[name])))

        def run(name, runners=runners, states=states, mode=mode):
            p, s, loss = runners[name](*states[name], *batches[mode])
            states[name] = (p, s)
            return p, s, loss

        calls = {name: (lambda name=name, run=run: run(name)) for name in txs}
        t = timing.interleaved(calls, repeats)
        results[mode] = timing.compare(
            f"{case.name}, {mode}", t, "masked", "dense", "optax.adam", per=case.steps
        )
        # the mask held and pruned weights are exactly zero after training
        p_masked, s_masked = states["masked"]
        same = jax.tree.map(jnp.array_equal, jaxsparse.get_mask(s_masked), mask)
        assert all(jax.tree.leaves(same)), "the mask changed during training"
        leaked = jax.tree.map(lambda w, m: jnp.any(jnp.where(m, 0.0, w) != 0), p_masked, mask)
        assert not any(jax.tree.leaves(leaked)), "masked training revived a pruned weight"
    return n_params, sparsity, results


def _leaf_shapes(n: int) -> list[tuple[int, int]]:
    return [(max(1, round(n * f / LEAF_COLS)), LEAF_COLS) for f in LEAF_FRACTIONS]


def _prune_problem(n: int, seed: int = 0):
    """Tie-free scores (a permutation of distinct integers, exact in float32 below 2**24)
    and a mask with ~20% already dead, so every method must skip dead entries."""
    rng = np.random.default_rng(seed)
    shapes = _leaf_shapes(n)
    total = sum(r * c for r, c in shapes)
    assert total < 2**24, "scores would not be distinct in float32"
    flat_scores = rng.permutation(total).astype(np.float32)
    flat_mask = rng.random(total) < 0.8
    scores, mask, offset = {}, {}, 0
    for i, (r, c) in enumerate(shapes):
        size = r * c
        scores[f"leaf{i}"] = jnp.asarray(flat_scores[offset : offset + size].reshape(r, c))
        mask[f"leaf{i}"] = jnp.asarray(flat_mask[offset : offset + size].reshape(r, c))
        offset += size
    alive = int(flat_mask.sum())
    k = round(PRUNE_AMOUNT * alive)  # the rule jaxsparse follows: Python float64, half-even
    return scores, mask, total, k


def bench_prune(n: int, repeats: int) -> dict:
    scores, mask, total, k = _prune_problem(n)
    ours = jax.jit(lambda s, m: jaxsparse.prune(s, m, PRUNE_AMOUNT, scope="global"))
    by_argsort = threshold._sort_prune(threshold._argsort, "global")
    by_top_k = threshold._sort_prune(threshold._top_k, "global")

    want = ours(scores, mask)
    pruned = sum(int(jnp.sum(m) - jnp.sum(w)) for m, w in zip(*map(jax.tree.leaves, (mask, want))))
    assert pruned == k, f"jaxsparse pruned {pruned}, expected {k}"
    for name, fn in (("argsort", by_argsort), ("top_k", by_top_k)):
        got = fn(scores, mask, (k,))
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"{name} mask differs at n={n}"

    t = timing.interleaved(
        {
            "ours": lambda: ours(scores, mask),
            "argsort": lambda: by_argsort(scores, mask, (k,)),
            "top_k": lambda: by_top_k(scores, mask, (k,)),
        },
        repeats,
    )
    rows = {
        name: timing.compare(name, t, name, "ours", "jaxsparse.prune")
        for name in ("argsort", "top_k")
    }
    return {"n": total, "ours": rows["argsort"]["baseline_ms"], "rows": rows}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    args = parser.parse_args(argv)
    quick = args.quick
    t_start = time.perf_counter()
    print(", ".join(f"{k} {v}" for k, v in timing.machine().items()) + "\n")

    cases = [
        ModelCase("LeNet-300-100", LeNet300(), (784,), 30 if quick else 200, ("scan", "per-call")),
        ModelCase("CNN 32/64 + 128", SmallCNN(), (28, 28, 1), 3 if quick else 40, ("per-call",)),
    ]
    repeats = 3 if quick else 9
    steady_rows, dispatch_rows = [], []
    for case in cases:
        n_params, sparsity, timings = bench_training(case, repeats)
        for mode, row in timings.items():
            # steady state: scan where it runs well, else per call (see ModelCase.modes)
            steady = mode == "scan" or "scan" not in timings
            row["what"] = f"{case.name} ({n_params:,} params), {mode}, {case.steps} steps"
            (steady_rows if steady else dispatch_rows).append(row)
        print(f"  [{case.name}: {sparsity:.1%} sparse mask, pruned weights stayed 0]", flush=True)
    columns = [
        ("what", "model, step runs"),
        ("baseline_ms", "dense ms/step"),
        ("ours_ms", "masked ms/step"),
        ("ratio", "ratio"),
    ]
    print(
        "\n**masked(adam) vs adam, steady-state training cost**: a full step (forward, "
        f"loss, grad, update, apply) on batches of {BATCH}, jitted with donated buffers; "
        f"mask {SPARSITY:.0%} sparse (global magnitude). The MLP's steps run inside one "
        "`lax.scan` (its step is too short for per-call dispatch not to count); the CNN's "
        "run one jitted call a step (dispatch is <1% of its step, and XLA:CPU is "
        f"pathologically slow on convolutions inside a scan). {timing.clock_words()}, "
        f"median of {repeats} interleaved repeats. Goal: ratio <= 1.03x.\n"
    )
    print(timing.table(steady_rows, columns))
    print("\n**Same, the MLP with one jitted call per step** (Python dispatch included):\n")
    print(timing.table(dispatch_rows, columns), flush=True)

    sizes = [10**4, 10**5] if quick else [10**5, 10**6, 10**7]
    prune_rows = []
    for n in sizes:
        big = n >= 10**7
        reps = 2 if quick else (3 if big else 5)  # sorting 1e7 takes seconds: fewer repeats
        r = bench_prune(n, reps)
        for name, row in r["rows"].items():
            row["what"] = f"{r['n']:.0e}".replace("e+0", "e") + f", {name}"
            row["ns_per_param"] = r["ours"] * 1e6 / r["n"]
            prune_rows.append(row)
        print(f"  [prune n={n:.0e}: masks equal across all three methods]", flush=True)
    print(
        f"\n**global prune, {PRUNE_AMOUNT:.0%} of alive weights, {len(LEAF_FRACTIONS)} "
        "leaves** (jitted; tie-free scores, ~20% already dead; baselines concatenate, "
        "select the k lowest by `jnp.argsort` or `lax.top_k`, and scatter back, and give "
        f"the identical mask). {timing.clock_words()}, median of the same number of "
        "interleaved repeats for all three; ratio = baseline / jaxsparse (speed-up). "
        "Goal: >= 5x faster than sort at 1e7, ns/param flat.\n"
    )
    columns = [
        ("what", "n params, baseline"),
        ("baseline_ms", "jaxsparse ms"),
        ("ours_ms", "baseline ms"),
        ("ratio", "speed-up"),
        ("ns_per_param", "jaxsparse ns/param"),
    ]
    print(timing.table(prune_rows, columns))
    print(f"\ntotal benchmark time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
