"""The random-pruning study's work: one compiled training program per width, every arm
(dense, each ratio rule x sparsity x init, the small dense nets), learning rate and seed
vmapped together, with initial weights, masks and learning rates as data."""

from __future__ import annotations

import time
from typing import Any

import optax
from flax import struct

from experiments import harness
from experiments.random_pruning import nets
from experiments.random_pruning.config import RandomPruningConfig, floats, names
from experiments.random_pruning.report import outputs

STREAM_INIT, STREAM_DATA, STREAM_MASK, STREAM_SMALL = range(4)
TRAIN_EVAL = 5000  # training accuracy is measured on the first 5,000 training examples


class ArmState(struct.PyTreeNode):
    """Adam with the peak learning rate as data (``lr``), so that every (arm, learning
    rate) shares one program, decayed to 0 over ``total`` steps on a cosine; ``tx`` is
    ``jaxsparse.masked(scale_by_adam())``, whose mask keeps the pruned weights exactly
    zero. ``step`` counts the updates applied."""

    step: Any
    params: Any
    opt_state: Any
    lr: Any
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    total: int = struct.field(pytree_node=False, default=1)

    def apply_gradients(self, *, grads):
        import jax
        import jax.numpy as jnp

        updates, opt_state = self.tx.update(grads, self.opt_state)
        lr = self.lr * 0.5 * (1 + jnp.cos(jnp.pi * self.step / self.total))
        params = jax.tree.map(lambda p, u: p - lr * u, self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


def hidden(cfg: RandomPruningConfig, width: float) -> int:
    return max(1, round(cfg.base * width))


def cell_name(cfg: RandomPruningConfig, width: float) -> str:
    return f"mlp-d{cfg.depth}-h{hidden(cfg, width)}"


def plan(cfg: RandomPruningConfig, width: float) -> dict:
    """The width's network and arms, from shapes only (no training).

    ``arms`` is a list of ``(rule, sparsity, init)``: ``("dense", 0, "-")`` first, then
    every ratio rule x init at each sparsity, then ``("small", s, "-")``. A sparsity
    whose sparse nets would keep fewer than ``--min-alive`` weights, and a rule that
    cannot reach a sparsity on this network, are listed in ``skipped`` with the reason.
    """
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    h = hidden(cfg, width)
    model = nets.build(cfg.depth, h)
    dummy = jnp.zeros((1, nets.IN_FEATURES), jnp.float32)
    shapes = jax.eval_shape(lambda k: model.init(k, dummy)["params"], jax.random.key(0))
    n_kernel = nets.kernel_count(cfg.depth, h)
    arms, targets, skipped, small = [("dense", 0.0, "-")], {}, [], {}
    for s in floats(cfg.sparsities):
        if (1 - s) * n_kernel < cfg.min_alive:
            why = f"{(1 - s) * n_kernel:.0f} alive weights < --min-alive {cfg.min_alive}"
            skipped.append({"rule": "all", "sparsity": s, "reason": why})
            continue
        for rule in names(cfg.ratios):
            if rule != "snip":
                try:
                    targets[rule, s] = getattr(js.distributions, rule)(shapes, s)
                except ValueError as err:  # uniform+ keeps a first layer too big to keep
                    skipped.append({"rule": rule, "sparsity": s, "reason": str(err)})
                    continue
            arms += [(rule, s, init) for init in names(cfg.inits)]
        small[s] = nets.small_width(cfg.depth, h, (1 - s) * n_kernel)
    arms += [("small", s, "-") for s in small]
    return {
        "model": model,
        "dummy": dummy,
        "h": h,
        "n_kernel": n_kernel,
        "arms": arms,
        "targets": targets,
        "skipped": skipped,
        "small": small,
    }


def initial_arms(cfg, p, params, snip) -> tuple[Any, Any]:
    """Every arm's initial weights and mask for every seed, stacked ``(arms, seeds, ...)``
    (NumPy). A seed's random mask of a (rule, sparsity) is shared by its inits, and
    every sparse arm starts from that seed's dense init (:func:`nets.initial_params`)."""
    import jax
    import numpy as np

    S = cfg.seeds
    seed_params = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), params) for i in range(S)]
    params0 = seed_params[0]
    treedef = jax.tree.structure(params0)
    shapes = [x.shape for x in jax.tree.leaves(params0)]
    kernel = [len(s) >= 2 for s in shapes]
    rng = np.random.default_rng([cfg.seed, STREAM_MASK, p["h"]])
    inits, masks, drawn = [], [], {}
    for rule, s, init in p["arms"]:
        row_p, row_m = [], []
        for i in range(S):
            if rule == "dense":
                m = jax.tree.map(lambda x: np.ones(x.shape, bool), params0)
                q = seed_params[i]
            elif rule == "small":
                small_rng = np.random.default_rng([cfg.seed, STREAM_SMALL, i, p["small"][s]])
                small = nets.glorot_params(small_rng, cfg.depth, p["small"][s])
                q = nets.embed(small, params0)
                m = nets.embed(jax.tree.map(lambda x: np.ones(x.shape, bool), small), params0)
            else:
                if (rule, s, i) not in drawn:
                    if rule == "snip":
                        dens = nets.global_top_densities([x[i] for x in snip], shapes, kernel, s)
                        t = jax.tree.unflatten(treedef, dens)
                    else:
                        t = p["targets"][rule, s]
                    drawn[rule, s, i] = nets.random_mask(rng, params0, t)
                m = drawn[rule, s, i]
                q = nets.initial_params(seed_params[i], m, init)
            row_p.append(q)
            row_m.append(m)
        inits.append(row_p)
        masks.append(row_m)

    def stack(rows):
        flat = [t for row in rows for t in row]
        return jax.tree.map(lambda *xs: np.stack(xs).reshape(len(rows), S, *xs[0].shape), *flat)

    return stack(inits), stack(masks)


def run_cell(cfg, p, arrays, log, name) -> tuple[dict, dict]:
    """Builds every arm's initial weights and mask, and trains (arms x learning rates x
    seeds) networks in one program: the same ``--steps`` for each, the same data order
    for every arm and learning rate of a seed. Returns accuracies on the training,
    validation and test sets, the steps taken and the final training loss, each shaped
    ``(arms, lrs, seeds)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxsparse as js

    model, arms, S = p["model"], p["arms"], cfg.seeds
    lrs = np.asarray(floats(cfg.lrs), np.float32)
    A, L = len(arms), len(lrs)
    tx = js.masked(optax.scale_by_adam())

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    # each seed's dense init (host-side, as flax draws it): the start of every arm
    seeds = [
        nets.glorot_params(np.random.default_rng([cfg.seed, STREAM_INIT, i]), cfg.depth, p["h"])
        for i in range(S)
    ]
    params = jax.tree.map(lambda *xs: np.stack(xs), *seeds)
    snip = None
    if any(r == "snip" for r, _, _ in arms):
        n = cfg.snip_batch
        batch = {"x": arrays["x_train"][:n], "y": arrays["y_train"][:n]}
        snip = jax.jit(jax.vmap(lambda q: js.scores.snip(loss_fn, q, batch)))(params)
        snip = [np.asarray(x) for x in jax.tree.leaves(snip)]
    init_params, masks = initial_arms(cfg, p, params, snip)

    train_fn = js.make_train_fn(
        loss_fn,
        {"x": arrays["x_train"], "y": arrays["y_train"]},
        batch_size=cfg.batch_size,
        steps=cfg.steps,
    )

    def accuracy(q, x, y):
        return jnp.mean(jnp.argmax(model.apply({"params": q}, x), -1) == y)

    def evaluate(q):
        n = TRAIN_EVAL
        return {
            "train": accuracy(q, arrays["x_train"][:n], arrays["y_train"][:n]),
            "val": accuracy(q, arrays["x_val"], arrays["y_val"]),
            "test": accuracy(q, arrays["x_test"], arrays["y_test"]),
        }

    def program(init_params, masks, lrs, data_keys):
        def spread(x):  # (A, S, ...) -> (A * L * S, ...), learning rates in the middle
            return jnp.broadcast_to(x[:, None], (A, L, *x.shape[1:])).reshape(-1, *x.shape[2:])

        lr = jnp.broadcast_to(lrs[None, :, None], (A, L, S)).reshape(-1)
        keys = data_keys[jnp.tile(jnp.arange(S), A * L)]  # one data order a seed

        def make(q, m, lr):
            return ArmState(
                step=jnp.zeros((), jnp.int32),
                params=q,
                opt_state=js.set_mask(tx.init(q), m),
                lr=lr,
                tx=tx,
                total=cfg.steps,
            )

        states = jax.vmap(make)(jax.tree.map(spread, init_params), jax.tree.map(spread, masks), lr)
        states, losses = jax.vmap(train_fn)(states, keys)
        # one network at a time: every network's activations on the whole training set
        # at once would not fit in memory
        evals = jax.lax.map(evaluate, states.params)
        tail = max(1, cfg.steps // 10)
        out = {**evals, "steps": states.step, "final_loss": losses[:, -tail:].mean(-1)}
        return jax.tree.map(lambda x: x.reshape(A, L, S), out)

    args = (init_params, masks, jnp.asarray(lrs), harness.seed_keys(cfg, STREAM_DATA))
    t0 = time.perf_counter()
    options = harness.compiler_options(cfg.compile)
    compiled = jax.jit(program, compiler_options=options).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.device_get(compiled(*args))
    train_s = time.perf_counter() - t0
    kernel = [x.ndim >= 4 for x in jax.tree.leaves(masks)]  # (A, S, in, out) stacked
    out["alive"] = sum(
        m.reshape(A, S, -1).sum(-1) for m, k in zip(jax.tree.leaves(masks), kernel) if k
    )
    log(
        f"{name}: h={p['h']}: {A} arms x {L} lrs x {S} seeds, "
        f"compile {compile_s:.1f} s, train {train_s:.1f} s"
    )
    return out, {"compile_s": compile_s, "train_s": train_s}


def run_study(cfg: RandomPruningConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import numpy as np

    from experiments import data as data_lib

    run = harness.start(cfg, log=log)
    ds = data_lib.mnist1d(cfg.n_train, cfg.n_val, cfg.n_test)
    arrays = jax.device_put(ds.arrays())
    widths = floats(cfg.widths)
    L = len(floats(cfg.lrs))
    log(
        f"mnist1d {ds.sizes()} train/val/test; {len(widths)} widths, {cfg.seeds} seeds, "
        f"{L} learning rates, {cfg.steps} steps each"
    )
    records = []
    bar = run.progress(widths, total=len(widths), desc="widths", unit="net")
    for width in bar:
        p = plan(cfg, width)
        name = cell_name(cfg, width)
        shape = (len(p["arms"]), L, cfg.seeds)
        like = {k: np.zeros(shape, np.float32) for k in ("train", "val", "test", "final_loss")}
        like["steps"] = np.zeros(shape, np.int32)
        like["alive"] = np.zeros(shape[::2], np.int32)

        def compute(p=p, name=name):
            out, extra = run_cell(cfg, p, arrays, log, name)
            out["alive"] = np.asarray(out["alive"], np.int32)
            return out, extra

        out, extra = run.stage(name, like, compute)
        out = {k: np.asarray(v).tolist() for k, v in out.items()}
        records.append(
            {
                "network": name,
                "width": width,
                "hidden": p["h"],
                "n_kernel": p["n_kernel"],
                "arms": [list(a) for a in p["arms"]],
                "skipped": p["skipped"],
                "small": {str(s): v for s, v in p["small"].items()},
                **out,
                **extra,
            }
        )
        bar.set_postfix_str(f"{name} dense {100 * np.max(np.mean(out['test'][0], -1)):.1f}%")
    bar.close()
    out = outputs(cfg, records, {"data": f"MNIST-1D {ds.sizes()} train/val/test"})
    compile_s = sum(r.get("compile_s", 0.0) for r in records)
    train_s = sum(r.get("train_s", 0.0) for r in records)
    log(f"compile {compile_s:.1f} s, train {train_s:.1f} s")
    return run.publish(**out, compile_s=compile_s, train_s=train_s, networks=len(records))
