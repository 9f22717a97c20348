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
    batch_indices,
    cosine,
    full_width_programs,
    hyper,
    run_seeds,
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


def make_tx(cfg: EarlyBertConfig, steps, slimming):
    """Adam with cosine decay over ``steps``, after the L1 subgradient on the slimming
    coefficients; ``steps`` and ``slimming`` may be traced (one program for both arms)."""
    import optax

    import jaxsparse as js

    return optax.chain(js.slimming(slimming, where=COEFS), optax.adam(cosine(cfg.lr, steps)))


def make_chunk(model, cfg: EarlyBertConfig):
    """``chunk((params, opt), x, y, idx, hyper) -> (carry, losses)``, one ``lax.scan``."""
    import jax
    import optax

    def chunk(carry, x, y, idx, hyper):
        tx = make_tx(cfg, hyper["steps"], hyper["slimming"])

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
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    x, y, xt, yt, spec = ctx["x"], ctx["y"], ctx["xt"], ctx["yt"], ctx["spec"]
    idx = batch_indices(cfg, len(x), seed)
    n_checks = idx.shape[0]
    params = ctx["init"](jax.random.fold_in(jax.random.key(cfg.seed), seed))
    opt = make_tx(cfg, 1, 0.0).init(params)
    dense, pipe = (params, opt), (params, opt)
    h_dense, h_pipe = hyper(cfg.total_steps(), 0.0), hyper(cfg.total_steps(), cfg.slimming)
    ebs = js.early_bird.init(ctx["gmask_like"], cfg.window)
    (train_exe, check_exe), evaluate = ctx["exe"](), ctx["evaluate"]
    pipe_exe, pipe_eval = train_exe, evaluate

    times = {"dense": [], "pipeline": [], "check": []}
    acc = np.zeros((2, n_checks), np.float32)
    dists = np.full((n_checks, cfg.window - 1), np.inf, np.float32)
    drawn = None
    for c in range(n_checks):
        batch = jnp.asarray(idx[c])
        (dense, _), t = harness.timed(train_exe, dense, x, y, batch, h_dense)
        times["dense"].append(t)
        (pipe, _), t = harness.timed(pipe_exe, pipe, x, y, batch, h_pipe)
        times["pipeline"].append(t)
        if drawn is None:
            (gmask, ebs, found, dist), t = harness.timed(check_exe, pipe[0], ebs)
            times["check"].append(t)
            dists[c] = np.asarray(dist)
            if bool(found) and c < n_checks - 1:
                gmask = jax.tree.map(np.asarray, gmask)
                t0 = time.perf_counter()
                small = js.structured.shrink(pipe[0], gmask, spec)[0]
                small_opt = shrink_like_params(pipe[1], pipe[0], gmask, spec)
                pipe = jax.block_until_ready((small, small_opt))
                shrink_s = time.perf_counter() - t0
                widths = js.structured.check_spec(spec, small)
                heads = [widths[f"block_{i}/attn"] for i in range(cfg.layers)]
                ffn = [widths[f"block_{i}/ffn_in"] for i in range(cfg.layers)]
                model = build_model(cfg, heads, ffn)
                pipe_exe, compile_s = harness.compiled(
                    make_chunk(model, cfg), pipe, x, y, batch, h_pipe
                )
                pipe_eval = make_eval(model)
                drawn = {
                    "check": c,
                    "heads": heads,
                    "ffn": ffn,
                    "params": int(sum(v.size for v in jax.tree.leaves(small))),
                    "flops": model.flops(),
                    "shrink_s": shrink_s,
                    "compile_s": compile_s,
                }
        acc[0, c] = float(evaluate(dense[0], xt, yt))
        acc[1, c] = float(pipe_eval(pipe[0], xt, yt))
        bar.update(1)

    dense_s = float(np.sum(times["dense"]))
    pipeline_s = float(np.sum(times["pipeline"]) + np.sum(times["check"]))
    pipeline_s += drawn["shrink_s"] if drawn else 0.0
    draw = drawn["check"] + 1 if drawn else n_checks
    extra = {
        "seed": seed,
        "drawn": drawn,
        "acc": {"dense": float(acc[0, -1]), "earlybert": float(acc[1, -1])},
        "dense_s": dense_s,
        "pipeline_s": pipeline_s,
        "time_ratio": pipeline_s / dense_s,
        # shrunk chunks over the dense chunks they alternated with
        "step_ratio": float(
            np.median(np.asarray(times["pipeline"][draw:]) / np.asarray(times["dense"][draw:]))
        )
        if draw < n_checks
        else None,
        "chunk_s": times,
    }
    return {"curves": acc, "dists": dists}, extra


def run_study(cfg: EarlyBertConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js
    from experiments import data as data_lib

    run = harness.start(cfg, log=log)
    ds = data_lib.load("mnist")
    x, y, xt, yt = map(jnp.asarray, (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
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

    def first():
        p0 = jax.jit(init)(jax.random.key(0))
        carry = (p0, make_tx(cfg, 1, 0.0).init(p0))
        return carry, (p0, js.early_bird.init(gmask_like, cfg.window))

    programs, compile_s = full_width_programs(cfg, make_chunk(model, cfg), check, first, x, y, log)
    ctx = {
        "x": x,
        "y": y,
        "xt": xt,
        "yt": yt,
        "spec": spec,
        "init": jax.jit(init),
        "gmask_like": gmask_like,
        "exe": programs,
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
