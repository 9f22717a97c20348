"""The transfer study's work: pre-training and IMP on the source, IMP on each target,
then per target one compiled program training every arm at every learning rate and seed
for the same number of updates from the same starting point."""

from __future__ import annotations

from experiments import harness, models
from experiments.transfer.config import (
    DENSE_ARMS,
    SPARSE_ARMS,
    TransferConfig,
)
from experiments.transfer.net import CNN1D
from experiments.transfer.report import plot, summarise, table

BACKBONE = r"^(conv|hidden)_\d+/kernel$"  # pruned; the task head ("output") stays dense
NEW_HEAD = {r"^output/": None}  # the source head is dropped; the target's is new
EVAL_CHUNK = 8  # networks evaluated at once on the held-out sets (bounds memory)


def slots(cfg: TransferConfig) -> list[tuple[str, int]]:
    """The (arm, round) of every slot of the evaluation program, in order: the two
    dense arms (round 0), then the five sparse arms of each compared round."""
    return [(a, 0) for a in DENSE_ARMS] + [(a, r) for r in cfg.round_list() for a in SPARSE_ARMS]


def _with_lr(state, lr):
    """``state`` whose Adam (inside ``masked(inject_hyperparams(adam))``) uses ``lr``."""
    import jax.numpy as jnp

    inner = state.opt_state.inner_state
    hyper = {**inner.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)}
    return state.replace(
        opt_state=state.opt_state._replace(inner_state=inner._replace(hyperparams=hyper))
    )


def _eval_program(model, *, batch_size: int, steps: int, compile: str = "optimized"):
    """Jitted ``program(states, keys, arrays) -> (updates, metrics)``: every state (a
    leading axis) trains ``steps`` updates on ``arrays``' training split, then is
    evaluated on the training, validation and test splits (accuracy; validation loss)."""
    import jax
    import optax

    import jaxsparse as js

    def xent(params, x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def program(states, keys, arrays):
        train_fn = js.make_train_fn(
            lambda p, b: xent(p, b["x"], b["y"]),
            {"x": arrays["x_train"], "y": arrays["y_train"]},
            batch_size=batch_size,
            steps=steps,
        )

        def train(state, key):
            state, _ = train_fn(state, key)
            return state.params, state.step

        evaluate = models.classifier_eval(model, arrays, train_acc=True)

        params, updates = jax.vmap(train)(states, keys)
        return updates, jax.lax.map(evaluate, params, batch_size=EVAL_CHUNK)

    return jax.jit(program, compiler_options=harness.compiler_options(compile))


def _flat(tree):
    """Every leaf as a vector. The same numbers out of ``shuffle_mask``: its uniform
    draws are laid out row-major and its ties broken row-major; but XLA:CPU compiles a
    random draw of a vector in a fifth of the time of one of a 3-D shape."""
    import jax

    return jax.tree.map(lambda x: x.reshape(-1), tree)


def _unflat(tree, like):
    """``tree``'s vectors in the shapes of ``like``'s leaves (undoes :func:`_flat`)."""
    import jax

    return jax.tree.map(lambda x, y: x.reshape(y.shape), tree, like)


def _builder(make_state, cfg: TransferConfig):
    """``build(start, scratch, source_masks, imp_masks, keys, amounts)``: the initial
    state of every slot (:func:`slots`) x learning rate x seed, stacked in that order on
    one axis. ``source_masks``, ``imp_masks``, ``keys``: one entry a compared round
    (seed-stacked); ``amounts``: the share of the backbone each round prunes.

    The masks of (b), (d) and (e) come from one small program called per seed and round
    (XLA:CPU compiles the pruning and shuffling searches of one network in two thirds of
    the time of a seed-batched one, and once for every round); the rows are stacked on
    the host and one program makes the states."""
    import jax
    import numpy as np

    import jaxsparse as js
    from jaxsparse.transfer import transfer_mask

    lrs, S = cfg.lr_list(), cfg.seeds

    @jax.jit
    def sparse_masks(start, source_masks, keys, seed, amount):
        start, source_mask, key = jax.tree.map(lambda x: x[seed], (start, source_masks, keys))
        mask_b, _ = transfer_mask(source_mask, start, rename=NEW_HEAD)
        mask_d = js.prune(
            js.scores.magnitude(start), js.mask_like(start), amount, scope="global",
            where=BACKBONE,
        )  # fmt: skip
        mask_e = _unflat(
            js.shuffle_mask(key, _flat(mask_b), scope="layerwise", where=BACKBONE), mask_b
        )
        return mask_b, mask_d, mask_e

    states = jax.jit(jax.vmap(lambda p, m, a: _with_lr(make_state(p, m), a)))

    def build(start, scratch, source_masks, imp_masks, keys, amounts):
        start_h, scratch_h = _host(start), _host(scratch)
        dense = _all_alive(start_h)
        table = {("dense", 0): (start_h, dense), ("scratch", 0): (scratch_h, dense)}
        for e, r in enumerate(cfg.round_list()):
            amount = np.float32(amounts[e])
            per_seed = [
                _host(sparse_masks(start, source_masks[e], keys[e], s, amount)) for s in range(S)
            ]
            mask_b, mask_d, mask_e = jax.tree.map(lambda *xs: np.stack(xs), *per_seed)
            table[("transfer", r)] = (start_h, mask_b)  # (b) the source ticket, pre-trained
            table[("imp", r)] = (start_h, _host(imp_masks[e]))  # (c) IMP on the target
            table[("oneshot", r)] = (start_h, mask_d)  # (d) one-shot global magnitude
            table[("random", r)] = (start_h, mask_e)  # (e) random, (b)'s layer densities
            table[("reinit", r)] = (scratch_h, mask_b)  # (f) (b)'s mask on a random init
        order = [table[s] for s in slots(cfg)]
        # rows: slot-major, then learning rate, then seed
        stack = lambda *xs: np.concatenate([x for x in xs for _ in lrs])  # noqa: E731
        params = jax.tree.map(stack, *[p for p, _ in order])
        masks = jax.tree.map(stack, *[m for _, m in order])
        lr = np.tile(np.repeat(np.asarray(lrs, np.float32), S), len(order))
        return states(params, masks, lr)

    return build


def _host(tree):
    """``tree`` on the host, as numpy arrays."""
    import jax
    import numpy as np

    return jax.tree.map(np.asarray, jax.device_get(tree))


def _all_alive(params):
    """``js.mask_like(params)`` (all alive) as numpy arrays: no eager op to compile."""
    import jax
    import numpy as np

    return jax.tree.map(lambda x: np.ones(np.shape(x), bool), params)


def _dense_mask(params):
    """:func:`_all_alive` on the device."""
    import jax

    return jax.device_put(_all_alive(params))


def _report(masks, params, target) -> str:
    """``apply_ticket``'s report of seed 0 (leading axis) of a source ticket carried onto
    ``target``: it depends on paths and shapes only, so it is traced on shapes and
    nothing compiles."""
    import jax

    from jaxsparse.transfer import Ticket, apply_ticket

    reports = []

    def carry(m, p, t):
        params, _, report = apply_ticket(Ticket(m, p), t, rename=NEW_HEAD)
        reports.append(str(report))
        return params

    seed0 = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), (masks, params, target)
    )
    jax.eval_shape(carry, *seed0)
    return reports[0]


def _density(mask) -> float:
    """Alive share of the backbone kernels of seed 0 (every seed has the same counts)."""
    import re

    import jax
    import numpy as np

    from jaxsparse.filters import path_str

    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    kept = [np.asarray(m)[0] for p, m in flat if re.search(BACKBONE, path_str(p))]
    return sum(int(k.sum()) for k in kept) / sum(k.size for k in kept)


def _start_checks(cfg: TransferConfig, states, start, scratch) -> dict:
    """By value, per slot: the largest |initial weight - its reference| over the alive
    weights (the reference: the pre-trained backbone with the new head, or the scratch
    init), the largest |initial weight| over the pruned ones, and the backbone density."""
    import jax
    import numpy as np

    L, S = len(cfg.lr_list()), cfg.seeds
    refs = {
        "pre-trained + new head": jax.tree.leaves(jax.device_get(start)),
        "scratch init": jax.tree.leaves(jax.device_get(scratch)),
    }
    params, masks = jax.tree.leaves(states.params), jax.tree.leaves(states.mask)
    out = {}
    for i, (arm, r) in enumerate(slots(cfg)):
        rows = slice(i * L * S, (i + 1) * L * S)
        name = "scratch init" if arm in ("scratch", "reinit") else "pre-trained + new head"
        alive = dead = 0.0
        for p, m, ref in zip(params, masks, refs[name]):
            p, m = np.asarray(p[rows]), np.asarray(m[rows])
            ref = np.concatenate([np.asarray(ref)] * L)
            alive = max(alive, float(np.max(np.abs(p - ref), where=m, initial=0.0)))
            dead = max(dead, float(np.max(np.abs(p), where=~m, initial=0.0)))
        mask_i = jax.tree.map(lambda x, rows=rows: np.asarray(x)[rows], states.mask)
        out[f"{arm}@{r}"] = {
            "start": name,
            "alive_vs_start": alive,
            "pruned_abs": dead,
            "density": _density(mask_i),
        }
    return out


def run_study(cfg: TransferConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxsparse as js
    from experiments import data as data_lib
    from jaxsparse.transfer import Ticket, apply_ticket, ticket

    run = harness.start(cfg, log=log)
    # the source's held-out sets have the targets' sizes, so the arrays of every task
    # have one shape and the IMP programs compile once
    source = data_lib.mnist1d(cfg.source_train, cfg.target_val, cfg.target_test)
    tasks = {
        t: data_lib.mnist1d(cfg.target_train, cfg.target_val, cfg.target_test, variant=t)
        for t in cfg.task_list()
    }
    model = CNN1D()
    # one optimizer object: the learning rate is data in its state, so states of every
    # learning rate stack and share one compiled program
    tx = js.masked(optax.inject_hyperparams(optax.adam)(learning_rate=cfg.search_lr))
    make_state, _ = models.sparse_states(model, tx, 40, where=BACKBONE)
    # the params of every key, one compiled program for all three draws (the same
    # numbers as models.sparse_states' eager init, where each op compiles on its own)
    dummy = jnp.zeros((1, 40), jnp.float32)
    init = jax.jit(jax.vmap(lambda key: model.init(key, dummy)["params"]))
    rounds, lrs, S = cfg.round_list(), cfg.lr_list(), cfg.seeds
    R, L = rounds[-1], len(lrs)

    programs = {}  # one compiled IMP program a step count (the preset shares one)

    def imp(steps):
        if steps not in programs:
            programs[steps] = models.imp_program(
                model, BACKBONE, fraction=cfg.fraction, batch_size=cfg.batch_size,
                steps=steps, eval_every=steps, compile=cfg.compile,
            )  # fmt: skip
        return programs[steps]

    timed = run.calls(1 + R + len(tasks) * (R + 1), desc="transfer", unit="program")
    batch = jax.jit(jax.vmap(make_state))

    # --- the source: pre-training, then IMP rewinding to the pre-trained weights -------
    src_arrays = jax.device_put(source.arrays())
    init_params = init(harness.seed_keys(cfg, 0))
    data_keys = harness.seed_keys(cfg, 1)

    def source_stage():
        dense = _dense_mask(init_params)
        _, pretrained, pre_ev = timed(
            imp(cfg.pretrain_steps),
            batch(init_params, dense),
            harness.fold(data_keys, 0),
            src_arrays,
            init_params,
        )
        search = imp(cfg.search_steps)
        state, masks, history = batch(pretrained, dense), [], []
        for r in range(1, R + 1):
            state, _, ev = timed(search, state, harness.fold(data_keys, r), src_arrays, pretrained)
            masks.append(state.mask)  # round r's mask: r prunes of the source ticket
            history.append(jax.device_get(ev))
        extra = {
            "pretrain": jax.tree.map(np.ndarray.tolist, jax.device_get(pre_ev)),
            "rounds": [jax.tree.map(np.ndarray.tolist, h) for h in history],
        }
        return {"pretrained": pretrained, "masks": masks}, extra

    like = {"pretrained": init_params, "masks": [_dense_mask(init_params)] * R}
    src_tree, src_extra = run.stage("source", like, source_stage)
    pretrained, src_masks = src_tree["pretrained"], src_tree["masks"]
    if cfg.resume and "source" not in run.timings:
        timed.skip(1 + R)

    # --- each target: IMP on the target, then every arm in one program ----------------
    program = _eval_program(model, batch_size=cfg.batch_size, steps=cfg.steps, compile=cfg.compile)
    target_imp = imp(cfg.steps)
    dense_mask = _dense_mask(pretrained)
    carry = jax.jit(jax.vmap(lambda m, p, t: apply_ticket(Ticket(m, p), t, rename=NEW_HEAD)[:2]))
    build = _builder(make_state, cfg)
    task_records, reports = {}, {}
    for ti, (name, ds) in enumerate(tasks.items()):
        arrays = jax.device_put(ds.arrays())
        head_init = init(harness.seed_keys(cfg, 10 + ti))
        scratch = init(harness.seed_keys(cfg, 20 + ti))
        start, _ = carry(dense_mask, pretrained, head_init)  # pre-trained backbone, new head
        reports[name] = _report(src_masks[-1], pretrained, head_init)
        keys = harness.seed_keys(cfg, 30 + ti)  # seed s: one data order for every arm
        search_keys = harness.seed_keys(cfg, 40 + ti)
        mask_keys = harness.seed_keys(cfg, 50 + ti)

        def task_stage(arrays=arrays, start=start, scratch=scratch, keys=keys,
                       search_keys=search_keys, mask_keys=mask_keys):  # fmt: skip
            # (c)'s masks: IMP on the target, rewinding to the same starting point
            state, imp_masks, imp_hist = batch(start, dense_mask), [], []
            for r in range(1, R + 1):
                state, _, ev = timed(target_imp, state, harness.fold(search_keys, r), arrays, start)
                imp_masks.append(state.mask)
                imp_hist.append(jax.tree.map(np.ndarray.tolist, jax.device_get(ev)))

            amounts = [1.0 - _density(src_masks[r - 1]) for r in rounds]
            states = build(
                start, scratch, [src_masks[r - 1] for r in rounds],
                [imp_masks[r - 1] for r in rounds],
                [harness.fold(mask_keys, r) for r in rounds], amounts,
            )  # fmt: skip
            checks = _start_checks(cfg, jax.device_get(states), start, scratch)
            n = len(slots(cfg)) * L
            updates, metrics = timed(program, states, jnp.concatenate([keys] * n), arrays)
            shape = (len(slots(cfg)), L, S)
            record = {k: np.asarray(v).reshape(shape).tolist() for k, v in metrics.items()}
            record["updates"] = np.asarray(updates).reshape(shape).tolist()
            return {"done": jnp.zeros(())}, {
                "eval": record,
                "start_checks": checks,
                "imp_search": imp_hist,
            }

        _, extra = run.stage(f"task_{name}", {"done": jnp.zeros(())}, task_stage)
        if cfg.resume and f"task_{name}" not in run.timings:
            timed.skip(R + 1)
        task_records[name] = extra
    timed.close()

    # --- the seed-0 source ticket at the highest sparsity, saved with checkpoint --------
    @jax.jit  # one small program, not an eager op per leaf
    def seed0_ticket(params, masks):
        t = ticket(*jax.tree.map(lambda x: x[0], (params, masks)))
        return t, js.density(t.mask, BACKBONE)

    t, density = seed0_ticket(pretrained, src_masks[-1])
    js.checkpoint.save_ticket(
        run.dir / "ticket",
        *t,
        {
            "source": "mnist1d standard",
            "rounds": R,
            "pct_remaining": 100 * float(density),
            "rewound_to": "pre-trained weights",
            "config_hash": cfg.digest(),
        },
    )

    summary = summarise(cfg, slots(cfg), src_extra, task_records)
    sizes = {"source (standard)": source.sizes(), **{n: ds.sizes() for n, ds in tasks.items()}}
    results = {
        "study": "transfer",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "data": sizes,
        "model": "CNN1D: conv5(16)-pool2-conv5(16)-pool2-dense(64)-output "
        "(experiments/transfer/net.py)",
        "slots": [list(s) for s in slots(cfg)],
        "accuracy": "after the fixed downstream budget; each arm's learning rate is the one "
        "of the grid with the highest mean validation accuracy over seeds",
        "transfer_report_seed0": reports,
        **summary,
        "history": {"source": src_extra, "tasks": task_records},
    }
    caption = (
        f"Transfer of pre-trained tickets on MNIST-1D: a 1-D CNN pre-trained on the standard "
        f"set ({source.sizes()} train/val/test, {cfg.pretrain_steps} updates), IMP on the "
        f"source at {cfg.fraction:.0%} of the backbone a round ({cfg.search_steps} updates "
        f"each) rewinding to the pre-trained weights; targets {', '.join(tasks)} "
        f"({next(iter(tasks.values())).sizes()}); every arm {cfg.steps} updates from the "
        f"same start, learning rate chosen per arm on validation from {lrs}; {S} paired "
        f"seeds; differences are (arm - dense fine-tuned) in points with 95% intervals; "
        f"'matches' = interval above -{cfg.margin}; config hash {cfg.digest()}."
    )
    return run.publish(
        results,
        table=caption + "\n\n" + table(cfg, summary),
        csv=summary["csv"],
        figures={"transfer.png": plot(cfg, summary)},
        call_s=timed.seconds,
    )
