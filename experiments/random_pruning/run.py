"""The random-pruning study's work: one compiled training program per network, every
arm (dense, each ratio rule at each sparsity, the small dense nets) and seed vmapped
together, masks and initial weights as data."""

from __future__ import annotations

import time

from experiments import harness
from experiments.random_pruning import nets
from experiments.random_pruning.config import RandomPruningConfig, floats, names
from experiments.random_pruning.report import outputs

STREAM_INIT, STREAM_DATA, STREAM_MASK, STREAM_SMALL, STREAM_SNIP = range(5)


def cells(cfg: RandomPruningConfig) -> list[tuple[str, int, float]]:
    """(family, depth, width) of every network the study trains, in run order."""
    out = [("mlp", int(d), w) for d in floats(cfg.mlp_depths) for w in floats(cfg.mlp_widths)]
    return out + [("conv", 2, w) for w in floats(cfg.conv_widths)]


def cell_name(family: str, depth: int, width: float) -> str:
    return f"{family}-d{depth}-w{width:g}" if family == "mlp" else f"conv-w{width:g}"


def sizes(cfg: RandomPruningConfig, family: str, width: float) -> tuple[int, int]:
    """(channels, hidden units) at ``width``."""
    if family == "mlp":
        return 0, max(1, round(cfg.mlp_base * width))
    return max(1, round(cfg.conv_channels * width)), max(1, round(cfg.conv_hidden * width))


def plan(cfg: RandomPruningConfig, family: str, depth: int, width: float) -> dict:
    """The cell's network and arms, from shapes only (no training): ``arms`` is a list of
    ``(rule, sparsity)`` (``("dense", 0)`` first, ``("small", s)`` last); rules whose
    distribution cannot reach a sparsity on this network are listed in ``skipped``."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    c, h = sizes(cfg, family, width)
    model = nets.build(family, depth, c, h)
    dummy = jnp.zeros((1, nets.in_features(family)), jnp.float32)
    shapes = jax.eval_shape(lambda k: model.init(k, dummy)["params"], jax.random.key(0))
    n_kernel = nets.kernel_count(family, depth, c, h)
    arms, targets, skipped = [("dense", 0.0)], [None], []
    for s in floats(cfg.sparsities):
        for rule in names(cfg.ratios):
            if rule == "snip":
                arms.append((rule, s))
                targets.append("snip")
                continue
            try:
                t = getattr(js.distributions, rule)(shapes, s)
            except ValueError as err:  # e.g. uniform+ keeps a first layer too big to keep
                skipped.append({"rule": rule, "sparsity": s, "reason": str(err)})
                continue
            arms.append((rule, s))
            targets.append(t)
    small = {}
    for s in floats(cfg.sparsities):
        cs, hs = nets.small_size(family, depth, c or 1, h, (1 - s) * n_kernel)
        small[s] = (cs if family == "conv" else 0, hs)
        arms.append(("small", s))
        targets.append(None)
    return {
        "model": model,
        "dummy": dummy,
        "c": c,
        "h": h,
        "n_kernel": n_kernel,
        "arms": arms,
        "targets": targets,
        "skipped": skipped,
        "small": small,
    }


def run_cell(cfg, family, depth, p, arrays, log, name) -> tuple[dict, dict]:
    """Builds every arm's mask and initial weights and trains them all in one program.

    The masks are data: random positions drawn on the host (exact per-layer counts),
    SNIP-ratio densities from :func:`jaxsparse.scores.snip` at each seed's init. The
    program takes the masks, the seeds' initial weights and the small nets' init keys,
    and trains (arms x seeds) networks under one ``vmap``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxsparse as js

    model, dummy, arms, S = p["model"], p["dummy"], p["arms"], cfg.seeds
    A = len(arms)
    tx = optax.adam(cfg.lr)

    def init(key, m=model):
        return m.init(key, dummy)["params"]

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    params = jax.jit(jax.vmap(init))(harness.seed_keys(cfg, STREAM_INIT))  # (S, ...)
    params0 = jax.tree.map(lambda x: np.asarray(x[0]), params)
    treedef = jax.tree.structure(params0)
    shapes = [x.shape for x in jax.tree.leaves(params0)]
    kernel = [len(s) >= 2 for s in shapes]

    # SNIP's per-layer densities: global top-|g w| on one batch at each seed's init
    if any(r == "snip" for r, _ in arms):
        batch = {"x": arrays["x_train"][: cfg.snip_batch], "y": arrays["y_train"][: cfg.snip_batch]}
        snip = jax.jit(jax.vmap(lambda q: js.scores.snip(loss_fn, q, batch)))(params)
        snip = [np.asarray(x) for x in jax.tree.leaves(snip)]

    rng = np.random.default_rng([cfg.seed, STREAM_MASK, int(p["n_kernel"])])
    masks = np.zeros((A, S), object)
    for a, ((rule, s), t) in enumerate(zip(arms, p["targets"])):
        for i in range(S):
            if rule == "small":
                cs, hs = p["small"][s]
                sm = nets.build(family, depth, cs, hs)
                small = jax.eval_shape(lambda k, sm=sm: init(k, sm), jax.random.key(0))
                ones = jax.tree.map(lambda x: np.ones(x.shape, bool), small)
                m = nets.embed(ones, params0, family, xp=np)
            elif rule == "snip":
                dens = nets.global_top_densities([x[i] for x in snip], shapes, kernel, s)
                m = nets.random_mask(rng, params0, jax.tree.unflatten(treedef, dens))
            else:  # dense: all targets 0
                t = t if t is not None else jax.tree.map(lambda _: 0.0, params0)
                m = nets.random_mask(rng, params0, t)
            masks[a, i] = m
    masks = jax.tree.map(lambda *ms: np.stack(ms).reshape(A, S, *ms[0].shape), *masks.ravel())

    def program(params, masks, small_keys, data_keys):
        """Trains every (arm, seed): the wide init under its mask, or a small net's own
        init embedded in the wide shapes."""
        prm = jax.tree.map(lambda x: jnp.broadcast_to(x, (A, *x.shape)), params)
        for a, (rule, s) in enumerate(arms):
            if rule == "small":
                sm = nets.build(family, depth, *p["small"][s])
                small = jax.vmap(lambda k, sm=sm: init(k, sm))(small_keys)
                emb = jax.vmap(lambda q: nets.embed(q, params0, family))(small)
                prm = jax.tree.map(lambda x, y, a=a: x.at[a].set(y), prm, emb)
        flat = lambda t: jax.tree.map(lambda x: x.reshape(A * S, *x.shape[2:]), t)  # noqa: E731
        make = lambda q, m: js.SparseTrainState.create(  # noqa: E731
            apply_fn=model.apply, params=q, tx=tx, mask=m
        )
        states = jax.vmap(make)(flat(prm), flat(masks))
        _, evals = jax.vmap(train_fn)(states, data_keys)
        return evals

    def eval_fn(q):
        def acc(x, y):
            return jnp.mean(jnp.argmax(model.apply({"params": q}, x), -1) == y)

        return {
            "val_acc": acc(arrays["x_val"], arrays["y_val"]),
            "test_acc": acc(arrays["x_test"], arrays["y_test"]),
        }

    train_fn = js.make_train_fn(
        loss_fn,
        {"x": arrays["x_train"], "y": arrays["y_train"]},
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        eval_fn=eval_fn,
        eval_every=cfg.steps,
    )
    args = (
        params,
        masks,
        harness.seed_keys(cfg, STREAM_SMALL),
        jnp.tile(harness.seed_keys(cfg, STREAM_DATA), A),  # one data order a seed
    )
    t0 = time.perf_counter()
    compiled = jax.jit(program).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    evals = jax.device_get(compiled(*args))
    train_s = time.perf_counter() - t0
    alive = sum(m.reshape(A, S, -1).sum(-1) for m, k in zip(jax.tree.leaves(masks), kernel) if k)
    out = {
        "test_acc": np.asarray(evals["test_acc"][:, -1]).reshape(A, S),
        "val_acc": np.asarray(evals["val_acc"][:, -1]).reshape(A, S),
        "alive": np.asarray(alive, np.int64),
    }
    log(
        f"{name}: c={p['c']} h={p['h']}: {A} arms x {S} seeds, "
        f"compile {compile_s:.1f} s, train {train_s:.1f} s"
    )
    return out, {"compile_s": compile_s, "train_s": train_s}


def _arrays(ds, family: str) -> dict:
    """The data on device; the conv net sees the digits average-pooled to 14x14."""
    import jax
    import numpy as np

    def prep(x):
        if family == "mlp":
            return x
        return x.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196).astype(np.float32)

    return jax.device_put({k: prep(v) if k[0] == "x" else v for k, v in ds.arrays().items()})


def run_study(cfg: RandomPruningConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import numpy as np

    from experiments import data as data_lib

    run = harness.start(cfg, log=log)
    ds = data_lib.load("mnist")
    arrays = {f: _arrays(ds, f) for f in ("mlp", "conv")}
    todo = cells(cfg)
    log(
        f"mnist {ds.sizes()} train/val/test; {len(todo)} networks, {cfg.seeds} seeds, "
        f"{cfg.steps} steps each"
    )
    records = []
    bar = run.progress(todo, total=len(todo), desc="networks", unit="net")
    for family, depth, width in bar:
        p = plan(cfg, family, depth, width)
        name = cell_name(family, depth, width)
        shape = (len(p["arms"]), cfg.seeds)
        like = {
            "test_acc": np.zeros(shape, np.float32),
            "val_acc": np.zeros(shape, np.float32),
            "alive": np.zeros(shape, np.int32),
        }

        def compute(family=family, depth=depth, p=p, name=name):
            out, extra = run_cell(cfg, family, depth, p, arrays[family], log, name)
            out["alive"] = out["alive"].astype(np.int32)
            return out, extra

        out, extra = run.stage(name, like, compute)
        out = {k: np.asarray(v).tolist() for k, v in out.items()}
        records.append(
            {
                "network": name,
                "family": family,
                "depth": depth,
                "width": width,
                "channels": p["c"],
                "hidden": p["h"],
                "n_kernel": p["n_kernel"],
                "arms": [list(a) for a in p["arms"]],
                "skipped": p["skipped"],
                "small": {str(s): list(v) for s, v in p["small"].items()},
                **out,
                **extra,
            }
        )
        bar.set_postfix_str(f"{name} dense {100 * np.mean(out['test_acc'][0]):.1f}%")
    bar.close()
    out = outputs(cfg, records, list(names(cfg.ratios)), {"data": f"{ds.sizes()} train/val/test"})
    compile_s = sum(r.get("compile_s", 0.0) for r in records)
    train_s = sum(r.get("train_s", 0.0) for r in records)
    log(f"compile {compile_s:.1f} s, train {train_s:.1f} s")
    return run.publish(**out, compile_s=compile_s, train_s=train_s, networks=len(records))
