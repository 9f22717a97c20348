"""The early-bert study's work: per seed, dense training and the EarlyBERT pipeline side
by side, chunk by chunk; the pipeline's encoder is shrunk the moment its ticket is drawn
and trains on, smaller, to the end of the same epoch budget."""

from __future__ import annotations

import time

import numpy as np

from experiments import harness
from experiments.early_bert.config import EarlyBertConfig
from experiments.early_bert.report import outputs
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
from experiments.models import slim_encoder_spec

COEFS = r"(head|ffn)_coef$"


def build_model(cfg: EarlyBertConfig, heads=None, ffn=None):
    from experiments.models import SlimEncoder

    return SlimEncoder(
        heads=tuple(heads or (cfg.heads,) * cfg.layers),
        ffn=tuple(ffn or (cfg.ffn,) * cfg.layers),
        width=cfg.width,
        head_dim=cfg.width // cfg.heads,
    )


def make_tx(cfg: EarlyBertConfig, steps, slimming, lr=None):
    """Adam from peak rate ``lr`` (default ``cfg.lr``) with cosine decay over ``steps``,
    after the L1 subgradient on the slimming coefficients; all three may be traced (one
    program for every arm and rate of a shape)."""
    import optax

    import jaxsparse as js

    return optax.chain(
        js.slimming(slimming, where=COEFS), optax.adam(cosine(cfg.lr if lr is None else lr, steps))
    )


def make_chunk(model, cfg: EarlyBertConfig):
    """``chunk((params, opt), x, y, idx, hyper) -> (carry, losses)``, one ``lax.scan``."""
    import jax
    import optax

    def chunk(carry, x, y, idx, hyper):
        tx = make_tx(cfg, hyper["steps"], hyper["slimming"], hyper["lr"])

        def step(c, i):
            params, opt = c

            def loss_fn(p):
                logits = model.apply({"params": p}, x[i])
                return optax.softmax_cross_entropy_with_integer_labels(logits, y[i]).mean()

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), loss

        return jax.lax.scan(step, carry, idx)

    return jax.jit(chunk)


def make_eval(model):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def accuracy(params, x, y):
        return jnp.mean(jnp.argmax(model.apply({"params": params}, x), -1) == y)

    return accuracy


def shrink_like_params(tree, params, gmask, spec):
    """Shrinks every subtree of ``tree`` shaped like ``params`` (Adam's moments)."""
    import jax

    import jaxsparse as js

    treedef = jax.tree.structure(params)

    def is_params(t):
        return jax.tree.structure(t) == treedef

    return jax.tree.map(
        lambda t: js.structured.shrink(t, gmask, spec)[0] if is_params(t) else t,
        tree,
        is_leaf=is_params,
    )


def run_seed(cfg: EarlyBertConfig, seed: int, ctx: dict, bar) -> tuple[dict, dict]:
    """Everything for one seed: dense and the pipeline side by side (and, after the draw,
    the search run on at full width), then the arms that retrain for the ticket's budget
    and dense for the pipeline's time; ``(arrays, extra)`` for the stage checkpoint."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    x, y, xt, yt, spec = ctx["x"], ctx["y"], ctx["xt"], ctx["yt"], ctx["spec"]
    idx = batch_indices(cfg, len(x), seed)
    n_checks, spc = idx.shape[0], idx.shape[1]
    key = jax.random.fold_in(jax.random.key(cfg.seed), seed)
    params = ctx["init"](key)
    opt_of = ctx["init_opt"]
    opt = opt_of(params)
    dense, pipe, search = (params, opt), (params, opt), None
    h_dense = hyper(cfg.total_steps(), 0.0, cfg.lr)
    h_pipe = hyper(cfg.total_steps(), cfg.slimming, cfg.lr)
    ebs = js.early_bird.init(ctx["gmask_like"], cfg.window)
    (train_exe, check_exe), evaluate = ctx["exe"](), ctx["evaluate"]
    pipe_exe, pipe_eval = train_exe, evaluate

    def shrunk(params, opt, gmask):
        """``(carry, exe, evaluate, info)``: the shrunk params and ``opt`` shrunk alike
        (a fresh Adam state for None; ``info["shrink_s"]``: the seconds this took), the
        ahead-of-time compiled chunk and the evaluation of the smaller model (compiled
        once a shape for the whole run; ``info["compile_s"]``: that compile's seconds)."""
        t0 = time.perf_counter()
        small = js.structured.shrink(params, gmask, spec)[0]
        small_opt = (
            shrink_like_params(opt, params, gmask, spec) if opt is not None else opt_of(small)
        )
        carry = jax.block_until_ready((small, small_opt))
        shrink_s = time.perf_counter() - t0
        widths = js.structured.check_spec(spec, small)
        heads = [int(widths[f"block_{i}/attn"]) for i in range(cfg.layers)]
        ffn = [int(widths[f"block_{i}/ffn_in"]) for i in range(cfg.layers)]
        sh = shape_of(heads, ffn)
        if "exe" not in sh:
            sh["exe"], sh["compile_s"] = harness.compiled(
                make_chunk(sh["model"], cfg), carry, x, y, batch, h_pipe
            )
        info = {
            "heads": heads,
            "ffn": ffn,
            "params": int(sum(v.size for v in jax.tree.leaves(small))),
            "flops": sh["model"].flops(),
            "compile_s": sh["compile_s"],
            "shrink_s": shrink_s,
        }
        return carry, sh["exe"], sh["evaluate"], info

    def shape_of(heads, ffn):
        """The encoder with these widths and its programs (:func:`at_widths`)."""
        return at_widths(
            ctx["shapes"], (tuple(heads), tuple(ffn)), lambda w: build_model(cfg, *w),
            make_eval, x[:1],
        )  # fmt: skip

    times = {"dense": [], "pipeline": [], "check": [], "search": []}
    acc = np.zeros((2, n_checks), np.float32)
    dists = np.full((n_checks, cfg.window - 1), np.inf, np.float32)
    drawn = None
    for c in range(n_checks):
        batch = jnp.asarray(idx[c])
        (dense, _), t = harness.timed(train_exe, dense, x, y, batch, h_dense)
        times["dense"].append(t)
        (pipe, _), t = harness.timed(pipe_exe, pipe, x, y, batch, h_pipe)
        times["pipeline"].append(t)
        if search is not None:  # the search run on at full width, outside the pipeline
            (search, _), t = harness.timed(train_exe, search, x, y, batch, h_pipe)
            times["search"].append(t)
        if drawn is None:
            (gmask, ebs, found, dist), t = harness.timed(check_exe, pipe[0], ebs)
            times["check"].append(t)
            dists[c] = np.asarray(dist)
            if bool(found) and c < n_checks - 1:
                gmask = jax.tree.map(np.asarray, gmask)
                search = pipe
                pipe, pipe_exe, pipe_eval, info = shrunk(*search, gmask)
                drawn = {"check": c, **info}
        acc[0, c] = accuracy(evaluate, xt, yt, dense[0])
        acc[1, c] = accuracy(pipe_eval, xt, yt, pipe[0])
        bar.update(1)

    compile_s = ctx["compile_s"]
    dense_s = float(np.sum(times["dense"]))
    pipeline_s = float(np.sum(times["pipeline"]) + np.sum(times["check"]))
    pipeline_s += drawn["shrink_s"] if drawn else 0.0
    draw = drawn["check"] + 1 if drawn else n_checks
    extra = {
        "seed": seed,
        "drawn": drawn,
        "acc": {"dense": float(acc[0, -1]), "earlybert": float(acc[1, -1])},
        "train_acc": {
            "dense": accuracy(evaluate, x, y, dense[0]),
            "earlybert": accuracy(pipe_eval, x, y, pipe[0]),
        },
        "steps": {"dense": n_checks * spc, "earlybert": (n_checks - draw) * spc},
        "dense_s": dense_s,
        "dense_compile_s": with_compile(dense_s, compile_s["train"]),
        "pipeline_s": pipeline_s,
        "pipeline_compile_s": with_compile(
            pipeline_s, compile_s["train"], compile_s["check"], drawn["compile_s"] if drawn else 0
        ),
        "time_ratio": pipeline_s / dense_s,
        # shrunk chunks over the dense chunks they alternated with
        "step_ratio": float(
            np.median(np.asarray(times["pipeline"][draw:]) / np.asarray(times["dense"][draw:]))
        )
        if draw < n_checks
        else None,
        "chunk_s": times,
        "arms": None,
    }
    extra["time_ratio_compile"] = extra["pipeline_compile_s"] / extra["dense_compile_s"]
    if drawn:
        extra["arms"] = other_arms(
            cfg,
            ctx,
            key,
            idx,
            drawn,
            (search, pipe_exe, pipe_eval, shrunk, shape_of),
            pipeline_s,
            times["dense"],
        )
    return {"curves": acc, "dists": dists}, extra


def other_arms(cfg, ctx, key, idx, drawn, run, pipeline_s, dense_chunk_s) -> dict:
    """The arms read against the pipeline, each ``{"acc", "train_acc", "steps", ...}``:
    the ticket after full training and a small dense encoder at the ticket's widths from
    fresh weights (its peak rate chosen on validation from ``--lr-grid``), both for the
    ticket's retraining budget on its batches (a fresh cosine, the pipeline's L1), and
    dense for as many chunks as fit in the pipeline's time.
    ``run = (search, pipe_exe, pipe_eval, shrunk, shape_of)``: the search run at the end,
    the shrunk pipeline's programs, the shrinking function of :func:`run_seed` and its
    programs by widths."""
    import jax

    import jaxsparse as js

    x, y, xt, yt = ctx["x"], ctx["y"], ctx["xt"], ctx["yt"]
    c, spc = drawn["check"], idx.shape[1]
    rows = idx[c + 1 :]
    steps = len(rows) * spc
    h = hyper(steps, cfg.slimming, cfg.lr)
    train_exe, check_exe = ctx["exe"]()
    search, pipe_exe, pipe_eval, shrunk, shape_of = run
    opt_of = ctx["init_opt"]
    out = {}

    # the ticket drawn from the fully trained search run (its mask at the end)
    gmask = check_exe(search[0], js.early_bird.init(ctx["gmask_like"], cfg.window))[0]
    carry, exe, evaluate, info = shrunk(search[0], None, jax.tree.map(np.asarray, gmask))
    carry, t = train(exe, carry, x, y, rows, h)
    out["full"] = {**info, "carry": carry, "evaluate": evaluate, "steps": steps, "train_s": t}

    # the ticket's widths from fresh weights: the pipeline's shapes, so its program
    fresh = shape_of(drawn["heads"], drawn["ffn"])["init"](jax.random.fold_in(key, 2))["params"]
    widths = js.structured.check_spec(ctx["spec"], fresh)  # read off the arrays

    def small_at(lr):
        h_lr = hyper(steps, cfg.slimming, lr)
        return train(pipe_exe, (fresh, opt_of(fresh)), x, y, rows, h_lr)

    (carry, t), lr_record = best_on_val(
        cfg, small_at, lambda run: accuracy(pipe_eval, ctx["xv"], ctx["yv"], run[0][0])
    )
    out["small"] = {
        "heads": [int(widths[f"block_{i}/attn"]) for i in range(cfg.layers)],
        "ffn": [int(widths[f"block_{i}/ffn_in"]) for i in range(cfg.layers)],
        "params": int(sum(v.size for v in jax.tree.leaves(fresh))),
        "carry": carry,
        "evaluate": pipe_eval,
        "steps": steps,
        "train_s": t,
        "lr": lr_record,
    }

    # dense for the pipeline's measured time (compile left out of both)
    k = chunks_in(pipeline_s, dense_chunk_s, cfg)
    p0 = ctx["init"](key)
    carry = (p0, opt_of(p0))
    carry, t = train(train_exe, carry, x, y, idx[:k], hyper(k * spc, 0.0, cfg.lr))
    out["dense_time"] = {"carry": carry, "evaluate": ctx["evaluate"], "steps": k * spc}
    out["dense_time"]["train_s"] = t

    for arm in out.values():
        carry, evaluate = arm.pop("carry"), arm.pop("evaluate")
        arm["acc"] = accuracy(evaluate, xt, yt, carry[0])
        arm["train_acc"] = accuracy(evaluate, x, y, carry[0])
        arm["train_s"] = float(np.sum(arm["train_s"]))
    return out


def run_study(cfg: EarlyBertConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js
    from experiments import data as data_lib

    run = harness.start(cfg, log=log)
    ds = data_lib.load("mnist")
    x, y, xv, yv, xt, yt = map(
        jnp.asarray, (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test)
    )
    model = build_model(cfg)

    def init(key):
        return model.init(key, x[:1])["params"]

    like = jax.eval_shape(init, jax.random.key(0))
    spec = slim_encoder_spec(like, cfg.layers)
    sizes = js.structured.check_spec(spec, like)
    gmask_like = {n: jnp.ones(s, bool) for n, s in sizes.items()}

    def check(params, eb):
        gs = js.structured.group_scores(params, spec, "l1", where=COEFS)
        gmask = js.prune(
            gs,
            js.mask_like(gs),
            cfg.ffn_ratio,
            scope="global",
            where=js.all_leaves,
            rates={r"/attn$": cfg.head_ratio},
        )
        eb = js.early_bird.update(eb, gmask)
        return gmask, eb, js.early_bird.found(eb, cfg.eps), js.early_bird.distances(eb)

    init_jit = jit_init(init)
    # one program a shape: eager, every new leaf shape of Adam's state compiles one
    opt_of = jax.jit(lambda params: make_tx(cfg, 1, 0.0).init(params))

    def first():
        p0 = init_jit(jax.random.key(0))
        carry = (p0, opt_of(p0))
        return carry, (p0, js.early_bird.init(gmask_like, cfg.window))

    programs, compile_s = full_width_programs(cfg, make_chunk(model, cfg), check, first, x, y, log)
    ctx = {
        "x": x,
        "y": y,
        "xv": xv,
        "yv": yv,
        "xt": xt,
        "yt": yt,
        "spec": spec,
        "init": init_jit,
        "init_opt": opt_of,
        "shapes": {},
        "gmask_like": gmask_like,
        "exe": programs,
        "compile_s": compile_s,
        "evaluate": make_eval(model),
    }
    n_checks = cfg.n_checks()
    arrays_like = {
        "curves": np.zeros((2, n_checks), np.float32),
        "dists": np.zeros((n_checks, cfg.window - 1), np.float32),
    }
    per_seed = run_seeds(
        run, cfg, arrays_like, lambda s, bar: run_seed(cfg, s, ctx, bar), "early-bert"
    )
    dense_info = {
        "heads": [cfg.heads] * cfg.layers,
        "ffn": [cfg.ffn] * cfg.layers,
        "params": int(sum(v.size for v in jax.tree.leaves(like))),
        "flops": model.flops(),
    }
    out = outputs(cfg, ds, per_seed, dense_info, compile_s)
    return run.publish(**out, compile_s=compile_s, seeds=cfg.seeds)
