"""Does a physically shrunk network train faster? Dense vs shrunk training steps.

Structured pruning only pays if the smaller network runs faster. This takes the two
networks of the early-bird studies, prunes whole groups with ``jaxsparse.prune`` on group
scores (layerwise, so every seed of the benchmark shrinks to the same widths) and cuts
them out with ``jaxsparse.structured.shrink``, then times a training step (forward, loss,
gradient, optimizer update; batch 64) of the dense and the shrunk networks:

* the early-bird VGG-style net (4 conv + BatchNorm, 14x14 MNIST-sized input, SGD with
  momentum): dense, 50% and 70% of the channels of every layer pruned;
* the EarlyBERT encoder (4 layers, 4 heads, width 64, FFN 256, 16 tokens, Adam): dense
  and the EarlyBERT shape (1 of 4 heads and 40% of FFN units of every layer pruned).

Each run is ``STEPS`` steps in one ``lax.scan``, compiled ahead of time; the networks
run in a rotating order within each repeat, and the table gives the
median time per step and the shrunk / dense ratio of the medians (the package's one
definition), next to the FLOPs ratio.

Run::

    python -m experiments.bench.shrink [--quick]
    jaxsparse bench --sections shrink
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from experiments.bench import timing

BATCH, STEPS = 64, 20


def _vgg_cases():
    import jax
    import optax

    import jaxsparse as js
    from experiments.models import VGGBN

    model = VGGBN()
    x = jax.random.uniform(jax.random.key(1), (STEPS, BATCH, 14 * 14))
    variables = model.init(jax.random.key(0), x[0, :1])
    spec = js.structured.channels(variables)
    rng = jax.random.key(2)
    gs = {
        n: jax.random.uniform(jax.random.fold_in(rng, i), (s,))
        for i, (n, s) in enumerate(js.structured.check_spec(spec, variables).items())
    }
    cases = {"VGG dense": (model, variables)}
    for frac in (0.5, 0.7):
        gmask = js.prune(gs, js.mask_like(gs), frac, scope="layerwise", where=js.all_leaves)
        small, widths = js.structured.shrink(variables, gmask, spec)
        cases[f"VGG {frac:.0%} channels pruned"] = (VGGBN(widths=tuple(widths.values())), small)
    tx = optax.sgd(0.05, momentum=0.9)

    def make_train(model):
        def loss_fn(params, stats, xb, yb):
            logits, upd = model.apply(
                {"params": params, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, upd["batch_stats"]

        def train(variables, opt, xs, ys):
            def body(c, batch):
                params, stats, opt = c
                (_, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, *batch)
                upd, opt = tx.update(g, opt, params)
                return (optax.apply_updates(params, upd), stats, opt), None

            c = (variables["params"], variables["batch_stats"], opt)
            return jax.lax.scan(body, c, (xs, ys))[0]

        return jax.jit(train)

    ys = jax.random.randint(jax.random.key(3), (STEPS, BATCH), 0, 10)
    return {
        name: (make_train(m), (v, tx.init(v["params"]), x, ys), m.flops(), v["params"])
        for name, (m, v) in cases.items()
    }


def _encoder_cases():
    import jax
    import optax

    import jaxsparse as js
    from experiments.models import SlimEncoder, slim_encoder_spec

    model = SlimEncoder()
    x = jax.random.uniform(jax.random.key(1), (STEPS, BATCH, 28 * 28))
    params = model.init(jax.random.key(0), x[0, :1])["params"]
    spec = slim_encoder_spec(params, 4)
    sizes = js.structured.check_spec(spec, params)
    gs = {
        n: jax.random.uniform(jax.random.fold_in(jax.random.key(2), i), (s,))
        for i, (n, s) in enumerate(sizes.items())
    }
    gmask = js.prune(
        gs, js.mask_like(gs), 0.4, scope="layerwise", where=js.all_leaves, rates={r"/attn$": 0.25}
    )
    small, widths = js.structured.shrink(params, gmask, spec)
    shrunk = SlimEncoder(
        heads=tuple(widths[f"block_{i}/attn"] for i in range(4)),
        ffn=tuple(widths[f"block_{i}/ffn_in"] for i in range(4)),
    )
    tx = optax.adam(1e-3)

    def make_train(model):
        def loss_fn(params, xb, yb):
            logits = model.apply({"params": params}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        def train(params, opt, xs, ys):
            def body(c, batch):
                params, opt = c
                g = jax.grad(loss_fn)(params, *batch)
                upd, opt = tx.update(g, opt, params)
                return (optax.apply_updates(params, upd), opt), None

            return jax.lax.scan(body, (params, opt), (xs, ys))[0]

        return jax.jit(train)

    ys = jax.random.randint(jax.random.key(3), (STEPS, BATCH), 0, 10)
    return {
        name: (make_train(m), (p, tx.init(p), x, ys), m.flops(), p)
        for name, (m, p) in {
            "encoder dense": (model, params),
            "encoder EarlyBERT shape (3/4 heads, 60% FFN)": (shrunk, small),
        }.items()
    }


def measure(quick: bool = False) -> dict:
    """Times dense and shrunk training steps; returns ``{"title", "rows", "markdown"}``."""
    import jax

    repeats = 3 if quick else 11
    groups = {"VGG dense": _vgg_cases(), "encoder dense": _encoder_cases()}
    compiled, info = {}, {}
    for cases in groups.values():
        for name, (fn, args, flops, params) in cases.items():
            compiled[name] = (fn.lower(*args).compile(), args)
            info[name] = (flops, sum(int(v.size) for v in jax.tree.leaves(params)))
    calls = {
        name: (lambda exe=exe, args=args: exe(*args)) for name, (exe, args) in compiled.items()
    }
    t = timing.interleaved(calls, repeats, warmup=1)
    rows = []
    for dense, cases in groups.items():
        for name in cases:
            row = timing.compare(name, t, name, dense, dense, per=STEPS)
            rows.append(
                {
                    "network": name,
                    "params": info[name][1],
                    "flops": info[name][0],
                    "flops_ratio": info[name][0] / info[dense][0],
                    "ms_per_step": row["ours_ms"],
                    "time_ratio": row["ratio"],
                    **({"cpu_time_ratio": row["cpu_ratio"]} if "cpu_ratio" in row else {}),
                }
            )
    title = (
        f"Training step, dense vs physically shrunk (jaxsparse.structured.shrink): "
        f"batch {BATCH}, {STEPS} steps in one lax.scan, {timing.clock_words()}, median of "
        f"{repeats} interleaved repeats, jax {jax.__version__} ({jax.default_backend()})"
    )
    lines = [
        "| network | params | MFLOPs/example | FLOPs / dense | ms/step | time / dense |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = timing.ratio_text(
            {"ratio": row["time_ratio"], "cpu_ratio": row.get("cpu_time_ratio")}
        )
        lines.append(
            f"| {row['network']} | {row['params']:,} | {row['flops'] / 1e6:.2f} | "
            f"{row['flops_ratio']:.2f} | {row['ms_per_step']:.2f} | {ratio} |"
        )
    return {"title": title, "rows": rows, "markdown": "\n".join(lines)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    out = measure(args.quick)
    print(out["title"] + "\n\n" + out["markdown"])


if __name__ == "__main__":
    main()
