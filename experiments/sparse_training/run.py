"""The sparse-training study's work: find each method's mask (timed), then train every
method for the same number of steps, all seeds vmapped; the methods with a fixed mask
share one compiled training program, their masks passed as data."""

from __future__ import annotations

import time

from experiments import harness
from experiments.sparse_training.config import SparseTrainingConfig, method_list
from experiments.sparse_training.methods import Methods
from experiments.sparse_training.report import outputs

STREAM_INIT, STREAM_DATA, STREAM_MASK, STREAM_IMP = range(4)
# method -> (mask finder or None, trainer)
PLAN = {
    "dense": (None, "run_static"),
    "erk": ("find_erk", "run_static"),
    "snip": ("find_snip", "run_static"),
    "grasp": ("find_grasp", "run_static"),
    "synflow": ("find_synflow", "run_static"),
    "set": ("find_erk", "run_set"),
    "rigl": ("find_erk", "run_rigl"),
    "gmp": (None, "run_gmp"),
    "ste": (None, "run_ste"),
    "imp": ("find_imp", "run_static"),
}


def search_cost(cfg: SparseTrainingConfig, method: str) -> str:
    """What finding the mask costs, in training-data terms."""
    return {
        "dense": "none",
        "erk": "none (random)",
        "snip": f"1 batch ({10 * cfg.per_class} examples): one gradient",
        "grasp": f"1 batch ({10 * cfg.per_class} examples): gradient + Hessian-gradient product",
        "synflow": f"{cfg.synflow_rounds} data-free gradient passes",
        "set": "none (ERK start; updates during training)",
        "rigl": "none (ERK start; dense gradient at each update)",
        "gmp": "none (prunes during training)",
        "ste": "none (mask recomputed every step)",
        "imp": f"{cfg.imp_rounds} trainings x {cfg.steps} steps",
    }[method]


def search_steps(cfg: SparseTrainingConfig, method: str) -> int:
    return cfg.imp_rounds * cfg.steps if method == "imp" else 0


def _timed_call(fn, *args):
    """(result, compile seconds, run seconds) of ``jax.jit(fn)(*args)``."""
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, t1 - t0, time.perf_counter() - t1, compiled


def run_study(cfg: SparseTrainingConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import numpy as np

    import jaxsparse as js
    from experiments import data as data_lib

    run = harness.start(cfg, log=log)
    ds = data_lib.load("mnist")
    arrays = jax.device_put(ds.arrays())
    pick = np.concatenate([np.flatnonzero(ds.y_train == c)[: cfg.per_class] for c in range(10)])
    probe = jax.device_put({"x": ds.x_train[pick], "y": ds.y_train[pick]})
    m = Methods(cfg, arrays, probe)
    params = jax.jit(jax.vmap(m.init))(harness.seed_keys(cfg, STREAM_INIT))
    data_keys = harness.seed_keys(cfg, STREAM_DATA)
    orders = jax.jit(jax.vmap(m.batches))(data_keys)  # one minibatch order a seed
    mask_keys = harness.seed_keys(cfg, STREAM_MASK)
    methods = method_list(cfg.methods)
    log(
        f"mnist {ds.sizes()} train/val/test, LeNet-300-100, {cfg.seeds} seeds, "
        f"{100 * cfg.sparsity:g}% sparsity, {cfg.steps} steps per method"
    )

    compiled_train: dict[str, object] = {}
    erk_cache: dict[str, object] = {}
    S = cfg.seeds
    like = {
        "test_acc": np.zeros(S, np.float32),
        "val_acc": np.zeros(S, np.float32),
        "sparsity": np.zeros(S, np.float32),
    }

    def compute(method):
        finder, trainer = PLAN[method]
        timing = {"search_s": 0.0, "search_compile_s": 0.0}
        if finder is None:
            mask = jax.vmap(js.mask_like)(params)
        elif finder == "find_erk" and "mask" in erk_cache:
            mask = erk_cache["mask"]  # SET and RigL start from the static ERK mask
            timing.update(erk_cache["timing"])
        else:
            keys = harness.seed_keys(cfg, STREAM_IMP) if finder == "find_imp" else mask_keys
            mask, c_s, r_s, _ = _timed_call(jax.vmap(getattr(m, finder)), params, keys)
            timing = {"search_s": r_s, "search_compile_s": c_s}
            if finder == "find_erk":
                erk_cache.update(mask=mask, timing=timing)
        if trainer in compiled_train:
            t0 = time.perf_counter()
            run_trainer = compiled_train[trainer]
            metrics = jax.block_until_ready(run_trainer(params, mask, data_keys, orders))
            train_s, train_c = time.perf_counter() - t0, 0.0
        else:
            metrics, train_c, train_s, compiled = _timed_call(
                jax.vmap(getattr(m, trainer)), params, mask, data_keys, orders
            )
            compiled_train[trainer] = compiled
        timing.update(train_s=train_s, train_compile_s=train_c)
        out = {k: np.asarray(v, np.float32) for k, v in jax.device_get(metrics).items()}
        return out, timing

    records = []
    bar = run.progress(methods, total=len(methods), desc="methods", unit="method")
    for method in bar:
        out, extra = run.stage(method, like, lambda method=method: compute(method))
        rec = {"method": method, **{k: np.asarray(v).tolist() for k, v in out.items()}, **extra}
        rec["search_steps"] = search_steps(cfg, method)
        rec["search_cost"] = search_cost(cfg, method)
        records.append(rec)
        bar.set_postfix_str(f"{method} {100 * np.mean(rec['test_acc']):.1f}%")
        log(
            f"{method}: test {harness.pm(rec['test_acc'])}%, sparsity "
            f"{100 * np.mean(rec['sparsity']):.2f}%, train {extra.get('train_s', 0):.1f} s, "
            f"search {extra.get('search_s', 0):.1f} s"
        )
    bar.close()
    out = outputs(cfg, records, f"{ds.sizes()} train/val/test")
    return run.publish(
        **out,
        train_s=sum(r.get("train_s", 0.0) for r in records),
        search_s=sum(r.get("search_s", 0.0) for r in records),
        compile_s=sum(
            r.get("train_compile_s", 0.0) + r.get("search_compile_s", 0.0) for r in records
        ),
    )
