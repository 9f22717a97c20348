"""The lottery-ticket study's work: one compiled round of IMP and its controls at a time."""

from __future__ import annotations

import math
import re
import time

from experiments import harness
from experiments.lottery.config import LotteryConfig
from experiments.lottery.report import (
    ARMS,
    BEST_RULE,
    add_paired,
    best_round,
    claims,
    csv_rows,
    paired_table,
    plot,
    summarise,
    table,
)


def setup(cfg: LotteryConfig):
    """The model, ``init_fn(key) -> params`` and ``make_state(key)`` (no data loaded)."""
    import jax.numpy as jnp
    import optax

    import jaxsparse as js
    from experiments import data as data_lib
    from experiments import models

    shape = data_lib.INPUT_SHAPES[cfg.data]
    model = models.build(cfg.model, shape, data_lib.NUM_CLASSES)
    tx = optax.adam(cfg.lr)
    dummy = jnp.zeros((1, math.prod(shape)), jnp.float32)

    def init_fn(key):
        return model.init(key, dummy)["params"]

    def make_state(key):
        return js.SparseTrainState.create(
            apply_fn=model.apply, params=init_fn(key), tx=tx, rewind_step=cfg.rewind_step
        )

    return model, init_fn, make_state


def initial_state(cfg: LotteryConfig):
    """The batched (one per seed) initial state of the study: the structure its
    checkpoints restore onto."""
    import jax

    _, _, make_state = setup(cfg)
    init_keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 0), cfg.seeds)
    return jax.jit(jax.vmap(make_state))(init_keys)


def run_study(cfg: LotteryConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxsparse as js
    from experiments import data as data_lib
    from experiments import models
    from jaxsparse import checkpoint
    from jaxsparse.filters import path_str

    if cfg.coordinator:  # before anything starts JAX's backends
        harness.join_processes(
            cfg.coordinator, cfg.num_processes, cfg.process_id, heartbeat=cfg.heartbeat
        )
    run = harness.start(cfg, log=log)
    log = run.log  # silent on all but process 0
    run_dir, ckpt_root = run.dir, run.checkpoints

    ds = data_lib.load(cfg.data)
    model, init_fn, _ = setup(cfg)
    rates = models.pruning_rates(cfg.model, cfg.fraction, cfg.output_fraction)

    def one_round(state, key, arrays):
        train_fn = models.classifier_train_fn(
            model,
            arrays,
            batch_size=cfg.batch_size,
            steps=cfg.steps,
            eval_every=cfg.eval_every,
            batch_sharding=batch_sharding,
            train_acc=True,
        )
        layer_alive = jax.tree.map(lambda m: jnp.sum(m, dtype=jnp.int32), state.mask)
        state, hist = js.lottery.run(
            state,
            train_fn,
            key,
            rounds=1,
            controls=(
                lambda s, k: js.random_reinit(s, init_fn, k),
                lambda s, k: js.reprune(s, k),
            ),
            fraction=cfg.fraction,
            scope="layerwise",
            rates=rates,
        )
        hist = jax.tree.map(lambda x: x[0], hist)  # the one round
        return state, {**hist, "layer_alive": layer_alive}

    arrays = ds.arrays()
    run_keys = harness.seed_keys(cfg, 1)

    if cfg.mesh:
        mesh = Mesh(np.array(jax.devices()), ("data",))
        replicated = NamedSharding(mesh, P())
        batch_sharding = NamedSharding(mesh, P("data"))
        arrays = jax.device_put(arrays, replicated)
        jit_kw = {"out_shardings": replicated}
        log(
            f"mesh: {mesh.devices.size} devices of {jax.process_count()} process(es) on axis "
            "'data', batch sharded, params replicated"
        )
    else:
        replicated, batch_sharding = None, None
        arrays = jax.device_put(arrays)
        jit_kw = {}

    def place(tree):
        return jax.device_put(tree, replicated) if replicated is not None else tree

    options = harness.compiler_options(cfg.compile)
    round_fn = jax.jit(
        jax.vmap(one_round, in_axes=(0, 0, None)), compiler_options=options, **jit_kw
    )
    state = place(initial_state(cfg))
    state0 = state

    history: list[dict] = []
    start = 0
    if cfg.resume:
        restored = checkpoint.restore_latest(ckpt_root, state)
        if restored is not None:
            last, state, extra = restored
            state = place(jax.tree.map(jnp.asarray, state))
            history = list(extra["history"])[: last + 1]
            start = last + 1
            log(f"resuming from round {last} checkpoint in {ckpt_root}")
        else:
            log(f"--resume: no checkpoint in {ckpt_root}; starting afresh")

    t0 = time.perf_counter()
    compiled = round_fn.lower(state, harness.fold(run_keys, start), arrays).compile()
    compile_s = time.perf_counter() - t0
    if jax.process_count() > 1:  # start the rounds together, however long each compiled
        ocp.multihost.sync_global_processes("jaxsparse lottery: compiled")
    log(
        f"{cfg.data} {ds.sizes()} train/val/test, {cfg.model}, {cfg.seeds} seeds x "
        f"{len(ARMS)} arms, {cfg.steps} steps/round; compiled one round in {compile_s:.1f} s"
    )
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]]

    round_s = []
    bar = run.progress(
        range(start, cfg.rounds), desc="IMP rounds", unit="round", initial=start, total=cfg.rounds
    )
    for r in bar:
        t0 = time.perf_counter()
        state, hist = compiled(state, harness.fold(run_keys, r), arrays)
        hist = js.parallel.to_host(hist)
        round_s.append(time.perf_counter() - t0)
        alive = np.asarray(jax.tree.leaves(hist["layer_alive"]))  # (leaves, seeds)
        if not (alive == alive[:, :1]).all():
            raise RuntimeError("layer densities differ between seeds; the pruning rule broke")
        rec = {
            "round": r,
            "layer_alive": {p: int(a[0]) for p, a in zip(paths, alive)},
            "density": np.asarray(hist["density"]).tolist(),  # (seeds, arms)
            "val_loss": np.asarray(hist["metrics"]["val_loss"]).tolist(),  # (seeds, arms, evals)
            "val_acc": np.asarray(hist["metrics"]["val_acc"]).tolist(),
            "test_acc": np.asarray(hist["metrics"]["test_acc"]).tolist(),
            "train_acc": np.asarray(hist["metrics"]["train_acc"]).tolist(),
        }
        history.append(rec)
        checkpoint.save_round(ckpt_root, r, state, extra={"history": history})
        es = summarise([rec], cfg)[0]["arms"]["ticket"]
        bar.set_postfix_str(
            f"{es['pct_remaining']:.1f}% ticket ES acc {100 * es['early_stop_acc']:.1f}%"
            f" {round_s[-1]:.1f}s"
        )
    bar.close()

    rows = add_paired(summarise(history, cfg), cfg.best_tolerance)
    best = best_round(rows, cfg.best_tolerance)
    sizes = {p: int(np.prod(x.shape[1:])) for p, x in zip(paths, jax.tree.leaves(state0.params))}
    prunable = {p: s for p, s in sizes.items() if p.endswith("kernel")}

    # The ticket trained in round b > 0 is the state that entered it, saved after round
    # b - 1 (rewound to step k). For b = 0 it is the dense network at its step-k
    # snapshot, which round 0 captured (the initial weights when k = 0).
    if best == 0:
        after_0, _ = checkpoint.load_state(ckpt_root / "round_0000", state)
        ticket_state = state0.replace(params=after_0.rewind_params)
    else:
        ticket_state, _ = checkpoint.load_state(ckpt_root / f"round_{best - 1:04d}", state)
    seed0 = js.parallel.to_host({"mask": ticket_state.mask, "params": ticket_state.params})
    seed0 = jax.tree.map(lambda x: x[0], seed0)
    ticket_meta = {
        "rule": BEST_RULE.format(tol=cfg.best_tolerance),
        "round": best,
        "seed": 0,
        "pct_remaining": rows[best]["arms"]["ticket"]["pct_remaining"],
        "early_stop_acc_mean": rows[best]["arms"]["ticket"]["early_stop_acc"],
        "early_stop_val_acc_mean": rows[best]["arms"]["ticket"]["early_stop_val_acc"],
        "rewind_step": cfg.rewind_step,
        "config_hash": cfg.digest(),
    }
    checkpoint.save_ticket(run_dir / "ticket", seed0["mask"], seed0["params"], ticket_meta)

    results = {
        "study": "lottery",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "data": {
            "name": ds.name,
            "train": len(ds.x_train),
            "val": len(ds.x_val),
            "test": len(ds.x_test),
        },
        "arms": list(ARMS),
        "layer_sizes": sizes,
        "prunable": prunable,
        "rates": {
            p: next((f for pat, f in rates.items() if re.search(pat, p)), cfg.fraction)
            for p in prunable
        },
        "std": "sample standard deviation over seeds (ddof=1)",
        "early_stopping": "iteration of minimum validation loss among evaluations after "
        f"every {cfg.eval_every} iterations",
        "paired": "per-seed differences A - B (same seed: same data order, the same "
        "initial weights for ticket and reprune), mean and 95% Student-t interval; "
        f"'matches' = interval above -{cfg.best_tolerance} points",
        "claims": claims(rows, cfg.best_tolerance),
        "rounds": rows,
        "best_ticket": ticket_meta,
        "history": history,
    }
    caption = (
        f"Lottery tickets, {cfg.model} on {cfg.data} ({ds.sizes()} train/val/test), "
        f"{cfg.seeds} seeds, {cfg.steps} iterations a round, rewind to k={cfg.rewind_step}. "
        f"ES = early stopping (min. validation loss, checked every {cfg.eval_every} "
        "iterations). First table: the ticket (mean ± std; train = training accuracy at "
        "its early stop) and paired differences over seeds, mean [95% interval] and verdict "
        f"('matches' = interval above -{cfg.best_tolerance} points; 'dense' = round 0). "
        "Second: each arm, mean ± std. Best ticket: "
        f"{ticket_meta['rule']} -> round {best}, {ticket_meta['pct_remaining']:.1f}% of weights."
    )
    mean_round_s = float(np.mean(round_s)) if round_s else None
    log(f"compile {compile_s:.1f} s, {len(round_s)} rounds at {mean_round_s or 0:.1f} s each")
    title = f"{cfg.model} on {cfg.data}: IMP, {cfg.seeds} seeds (hash {cfg.digest()})"
    return run.publish(
        results,
        table=caption + "\n\n" + paired_table(rows) + "\n\n" + table(rows, cfg),
        csv=csv_rows(rows),
        figures={"lottery.png": plot(rows, title)},
        compile_s=compile_s,
        round_s=round_s,
        mean_round_s=mean_round_s,
        devices=len(jax.devices()) if cfg.mesh else 1,
        processes=jax.process_count(),
        resumed_from=start - 1 if start else None,
    )
