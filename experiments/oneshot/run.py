"""The oneshot study's work: pre-train (or load the cached model), then prune it with
every method and pattern, sweep the calibration size, and fine-tune sparse."""

from __future__ import annotations

import functools
import hashlib
import json
import resource
import time
import zlib
from pathlib import Path

import numpy as np

from experiments import harness
from experiments.oneshot import model as lm
from experiments.oneshot.config import METHODS, OneShotConfig
from experiments.oneshot.report import report

MODEL_FIELDS = ("layers", "width", "heads", "context", "train_steps", "batch_size", "lr", "seed")


def _cache_dir(cfg: OneShotConfig, corpus_info: dict) -> Path:
    key = {f: getattr(cfg, f) for f in MODEL_FIELDS} | {"corpus": corpus_info["sha256"]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return Path(cfg.out) / f"oneshot-pretrained-{digest}"


def _tx(lr: float, steps: int):
    import optax

    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps, lr / 20)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01))


def _trainer(model, tx):
    import jax
    import optax

    def loss_fn(p, seqs):
        return lm.nll(model.apply({"params": p}, seqs[:, :-1]), seqs[:, 1:])

    @jax.jit
    def chunk(params, opt, batches):
        def step(c, seqs):
            p, o = c
            loss, g = jax.value_and_grad(loss_fn)(p, seqs)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss

        (params, opt), losses = jax.lax.scan(step, (params, opt), batches)
        return params, opt, losses

    return chunk


def pretrain(cfg, model, train, log):
    """Trains the dense model, or loads it from the cache; ``(params, info)``."""
    import jax
    import jax.numpy as jnp

    from jaxsparse import checkpoint

    tokens = jax.ShapeDtypeStruct((1, cfg.context), jnp.int32)
    like = jax.eval_shape(lambda t: model.init(jax.random.key(0), t)["params"], tokens)
    cache = _cache_dir(cfg, train[2])
    if (cache / "model").exists():
        params, extra = checkpoint.load_state(cache / "model", like)
        log(f"loaded the pre-trained model from {cache}")
        return params, {**extra, "cached": True}
    # the initialisers run as they would in init (the same numbers), the forward pass
    # does not (it would compile an eager program for each of its operations)
    params = model.lazy_init(jax.random.key(cfg.seed), tokens)["params"]
    tx = _tx(cfg.lr, cfg.train_steps)
    opt = tx.init(params)
    chunk = _trainer(model, tx)
    rng = np.random.default_rng([cfg.seed, 1])
    # the batches are drawn 50 steps at a time (as they always were), but run in chunks of
    # one length that divides the steps, so that the scan compiles once (60 steps: 2 x 30,
    # not 50 + 10)
    every = max(1, min(50, cfg.train_steps))
    seqs = np.concatenate(
        [
            lm.windows(train[0], min(every, cfg.train_steps - s) * cfg.batch_size,
                       cfg.context + 1, rng)
            for s in range(0, cfg.train_steps, every)
        ]
    ).reshape(cfg.train_steps, cfg.batch_size, -1)  # fmt: skip
    size = max(d for d in range(1, every + 1) if cfg.train_steps % d == 0)
    losses, t0 = [], time.perf_counter()
    for start in range(0, cfg.train_steps, size):
        batches = jnp.asarray(seqs[start : start + size])
        params, opt, loss = chunk(params, opt, batches)
        losses += np.asarray(loss).tolist()
        log(f"pre-train step {start + size}/{cfg.train_steps}: loss {np.mean(losses[-size:]):.3f}")
    extra = {"train_s": time.perf_counter() - t0, "losses": losses[:: max(1, len(losses) // 100)]}
    checkpoint.save_state(cache / "model", params, extra=extra)
    return params, {**extra, "cached": False}


def _ppl(model, held):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def f(p):
        return jnp.exp(lm.nll(model.apply({"params": p}, held[:, :-1]), held[:, 1:]))

    return lambda p: float(f(p))


def _random_mask(params, sparsity, nm, seed):
    """Random masks on the prunable kernels, exact counts (per layer or N:M)."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js
    from jaxsparse.filters import path_str

    key = jax.random.key(seed)

    def one(path, x):
        p = path_str(path)
        if not js.filters.resolve_filter(lm.PRUNABLE)(p, x):
            return jnp.ones(x.shape, bool)
        if nm is None and sparsity == 0:  # nothing to prune: no scores, no search
            return jnp.ones(x.shape, bool)
        rows = int(np.prod(x.shape[: lm.in_axes(p)]))
        data = np.uint32(zlib.crc32(p.encode()))
        return _random_leaf()(key, data, (rows, x.size // rows), sparsity, nm).reshape(x.shape)

    mask = jax.tree_util.tree_map_with_path(one, params)
    return _apply_mask()(params, mask), mask


@functools.cache
def _random_leaf():
    """``leaf(key, data, shape, sparsity, nm)``: one layer's random mask (a kernel as 2-D
    ``shape``), compiled once per shape and setting: the draw and the search in one
    program, the layer's key folded in as data."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    def leaf(key, data, shape, sparsity, nm):
        s = jax.random.uniform(jax.random.fold_in(key, data), shape)
        if nm is not None:
            return js.structured.nm(s, *nm, axis=0)
        return js.prune(s, jnp.ones(s.shape, bool), sparsity)

    return jax.jit(leaf, static_argnums=(2, 3, 4))


@functools.cache
def _apply_mask():
    """``js.apply_mask`` compiled once per model, not one ``where`` per leaf shape."""
    import jax

    import jaxsparse as js

    return jax.jit(js.apply_mask)


def prune_grid(cfg, apply_fn, params, calib, ppl, log, bar):
    import jax

    import jaxsparse as js

    settings = [(f"{s:g}", {"sparsity": s}) for s in cfg.sparsity_list()]
    settings += [(f"{n}:{m}", {"nm": (n, m)}) for n, m in cfg.pattern_list()]
    rows, errors, kept = [], {}, {}
    for method in METHODS:
        for name, pattern in settings:
            t0 = time.perf_counter()
            out = js.oneshot.prune(
                apply_fn, params, calib, method=method, where=lm.PRUNABLE,
                blocksize=cfg.blocksize, errors=True, **pattern,
            )  # fmt: skip
            jax.block_until_ready(out)
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "method": method,
                    "pattern": name,
                    "ppl": ppl(out.params),
                    "sparsity": float(js.sparsity(out.mask, where=lm.PRUNABLE)),
                    "prune_s": seconds,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
            errors[(method, name)] = {p: float(e) for p, e in out.errors.items()}
            if pattern.get("sparsity") == cfg.finetune_at:
                kept[method] = out
            log(f"{method:9s} {name:>4s}: ppl {rows[-1]['ppl']:.3f}  ({seconds:.1f} s)")
            bar.update(1)
    for name, pattern in settings:
        _, mask = _random_mask(params, pattern.get("sparsity"), pattern.get("nm"), cfg.seed)
        rows.append({"method": "random", "pattern": name, "ppl": ppl(_apply_mask()(params, mask))})
    return rows, errors, kept


def calib_sweep(cfg, apply_fn, params, train, ppl, log):
    import jaxsparse as js

    rows = []
    for n in cfg.sweep_list():
        seqs = _calib(cfg, train, n)
        for method in ("wanda", "sparsegpt"):
            out = js.oneshot.prune(
                apply_fn, params, seqs, method=method, sparsity=0.5, where=lm.PRUNABLE,
                blocksize=cfg.blocksize,
            )  # fmt: skip
            rows.append({"calib": n, "method": method, "ppl": ppl(out.params)})
            log(f"calibration {n:4d} seqs, {method}: ppl {rows[-1]['ppl']:.3f}")
    return rows


def _calib(cfg, train, n):
    import jax.numpy as jnp

    seqs = lm.windows(train[0], n, cfg.context, np.random.default_rng([cfg.seed, 2]))
    per = 16
    return [jnp.asarray(seqs[i : i + per]) for i in range(0, n, per)]


def finetune(cfg, model, train, kept, params, ppl, log):
    """``masked(adam)`` on the training bytes from each pruned model; dense as long."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxsparse as js

    rows = []
    starts = {m: (o.params, o.mask) for m, o in kept.items()}
    starts["dense"] = (params, js.mask_like(params))
    tx = js.masked(optax.adam(cfg.finetune_lr))
    chunk = _trainer(model, tx)
    init = jax.jit(tx.init)  # one program for the state's zeros, not one a leaf shape
    for name, (p, mask) in starts.items():
        before = ppl(p)
        opt = js.set_mask(init(p), mask)
        rng = np.random.default_rng([cfg.seed, 3])  # the same batches for every start
        n = cfg.finetune_steps * cfg.finetune_batch
        seqs = lm.windows(train[0], n, cfg.context + 1, rng)
        batches = jnp.asarray(seqs.reshape(cfg.finetune_steps, cfg.finetune_batch, -1))
        p, _, _ = chunk(p, opt, batches)
        alive_ok = bool(_stay_zero()(mask, p))
        after = ppl(p)
        rows.append({"start": name, "before": before, "after": after, "pruned_stay_zero": alive_ok})
        log(f"fine-tuned {name}: ppl {before:.3f} -> {rows[-1]['after']:.3f}")
    return rows


@functools.cache
def _stay_zero():
    """``check(mask, params)``: whether every pruned weight is still exactly zero; one
    compiled program, not three eager operations per leaf shape."""
    import jax
    import jax.numpy as jnp

    def check(mask, params):
        leaves = zip(jax.tree.leaves(mask), jax.tree.leaves(params))
        return jnp.all(jnp.stack([jnp.all(jnp.where(m, True, x == 0)) for m, x in leaves]))

    return jax.jit(check)


def run_study(cfg: OneShotConfig, *, log=print) -> dict:
    """Runs the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import jax.numpy as jnp

    run = harness.start(cfg, log=log)
    train_b, held_b, info = lm.corpus()
    log(f"corpus: optax {info['version']} sources, {info['files']} files, sha256 "
        f"{info['sha256'][:12]}; {info['train_bytes']:,} train / {info['heldout_bytes']:,} "
        f"held-out bytes")  # fmt: skip
    model = lm.ByteLM(cfg.layers, cfg.width, cfg.heads, cfg.context)
    params, pre = pretrain(cfg, model, (train_b, held_b, info), log)
    held = jnp.asarray(lm.heldout_windows(held_b, cfg.eval_seqs, cfg.context + 1))
    ppl = _ppl(model, held)
    dense_ppl = ppl(params)
    log(f"dense held-out perplexity {dense_ppl:.3f} (bytes)")

    def apply_fn(p, seqs):
        return model.apply({"params": p}, seqs)

    calib = _calib(cfg, (train_b,), cfg.calib)
    n_settings = len(cfg.sparsity_list()) + len(cfg.pattern_list())
    bar = run.progress(None, total=len(METHODS) * n_settings, desc="oneshot", unit="prune")
    grid, errors, kept = prune_grid(cfg, apply_fn, params, calib, ppl, log, bar)
    bar.close()
    sweep = calib_sweep(cfg, apply_fn, params, (train_b,), ppl, log)
    tuned = finetune(cfg, model, (train_b,), kept, params, ppl, log) if cfg.finetune_steps else []
    n_params = sum(int(x.size) for x in jax.tree.leaves(params))
    vis = None
    if not cfg.no_vision:
        from experiments.oneshot.vision import run_vision

        vis = run_vision(cfg, log)
    return report(
        run, cfg, info, pre, dense_ppl, grid, errors, sweep, tuned, n_params,
        jax.device_count(), vis,
    )  # fmt: skip
