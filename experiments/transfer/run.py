"""The transfer study's work: pre-training, IMP on the source task, and per downstream
task one compiled program training the five arms of a round for all seeds."""

from __future__ import annotations

from experiments import harness, models
from experiments.transfer.config import TransferConfig
from experiments.transfer.report import ARMS, plot, summarise, table

BACKBONE = r"^hidden_\d+/kernel$"  # pruned; the task head ("output") stays dense
NEW_HEAD = {r"^output/": None}  # the source head is dropped; the target's is new


def _arms_builder(make_state, n_backbone: int):
    """Jitted: the five arms of a round, stacked arm-major (arm, seed) on one axis."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js
    from jaxsparse.transfer import transfer_mask

    def build(imp_state, start, scratch, source_mask, keys, amount):
        def per_seed(start, scratch, source_mask, key):
            mask_b, _ = transfer_mask(source_mask, start, rename=NEW_HEAD)
            dense = js.mask_like(start)
            mask_d = js.prune(
                js.scores.magnitude(start), dense, amount, scope="global", where=BACKBONE
            )
            mask_e = js.shuffle_mask(key, mask_b, scope="layerwise", where=BACKBONE)
            return (
                make_state(start, mask_b),  # (b) transferred ticket
                make_state(start, mask_d),  # (d) one-shot magnitude, pre-trained weights
                make_state(start, mask_e),  # (e) random mask, (b)'s layer densities
                make_state(scratch, mask_b),  # (f) (b)'s mask, random init
            )

        arms = jax.vmap(per_seed)(start, scratch, source_mask, keys)
        return jax.tree.map(lambda *xs: jnp.concatenate(xs), imp_state, *arms)

    del n_backbone
    return jax.jit(build)


def _alive(mask) -> int:
    """Alive backbone weights of seed 0 (every seed has the same counts)."""
    import re

    import jax
    import numpy as np

    from jaxsparse.filters import path_str

    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    return sum(int(np.sum(np.asarray(m)[0])) for p, m in flat if re.search(BACKBONE, path_str(p)))


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
    source = data_lib.load_variant("mnist0-4")
    tasks = {t: data_lib.load_variant(t) for t in cfg.task_list()}
    tx = js.masked(optax.adam(cfg.lr))  # one object: states stack and programs reuse
    S, R = cfg.seeds, cfg.rounds

    def setup(ds):
        model = models.LeNet300(num_classes=ds.num_classes)
        return model, *models.sparse_states(model, tx, 784, where=BACKBONE)

    def program(model):
        return models.imp_program(
            model, BACKBONE, fraction=cfg.fraction, batch_size=cfg.batch_size,
            steps=cfg.steps, eval_every=cfg.eval_every,
        )  # fmt: skip

    timed = run.calls(1 + R + len(tasks) * (R + 1), desc="transfer", unit="training")

    # --- the source: pre-training, then IMP rewinding to the pre-trained weights -------
    src_model, src_make, src_init = setup(source)
    src_prog = program(src_model)
    src_arrays = jax.device_put(source.arrays())
    init = src_init(harness.seed_keys(cfg, 0))
    data_keys = harness.seed_keys(cfg, 1)
    make_batch = jax.jit(jax.vmap(src_make))

    def source_stage():
        _, pretrained, pre_ev = timed(
            src_prog,
            make_batch(init, js.mask_like(init)),
            harness.fold(data_keys, 0),
            src_arrays,
            init,
        )
        state = make_batch(pretrained, js.mask_like(pretrained))
        masks, history = [], []
        for r in range(R):
            state, _, ev = timed(
                src_prog, state, harness.fold(data_keys, r + 1), src_arrays, pretrained
            )
            masks.append(state.mask)
            history.append(jax.device_get(ev))
        extra = {
            "pretrain": jax.tree.map(np.ndarray.tolist, jax.device_get(pre_ev)),
            "rounds": [jax.tree.map(np.ndarray.tolist, h) for h in history],
        }
        return {"pretrained": pretrained, "masks": masks}, extra

    like = {"pretrained": init, "masks": [js.mask_like(init)] * R}
    src_tree, src_extra = run.stage("source", like, source_stage)
    pretrained, src_masks = src_tree["pretrained"], src_tree["masks"]
    if cfg.resume and "source" not in run.timings:
        timed.skip(1 + R)

    # --- each downstream task: the five arms of every round in one program -------------
    task_records, reports = {}, {}
    for ti, (name, ds) in enumerate(tasks.items()):
        model, make_state, t_init = setup(ds)
        prog, arrays = program(model), jax.device_put(ds.arrays())
        head_init = t_init(harness.seed_keys(cfg, 10 + ti))
        scratch = t_init(harness.seed_keys(cfg, 20 + ti))
        carry = jax.jit(
            jax.vmap(lambda m, p, t: apply_ticket(Ticket(m, p), t, rename=NEW_HEAD)[:2])
        )
        start, dense = carry(js.mask_like(pretrained), pretrained, head_init)
        seed0 = jax.tree.map(lambda x: x[0], (src_masks[-1], pretrained, head_init))
        reports[name] = str(apply_ticket(Ticket(*seed0[:2]), seed0[2], rename=NEW_HEAD)[2])
        build = _arms_builder(make_state, 0)
        n_backbone = _alive(dense)
        task_keys = harness.seed_keys(cfg, 30 + ti)
        mask_keys = harness.seed_keys(cfg, 40 + ti)

        def task_stage(
            make_state=make_state,
            prog=prog,
            arrays=arrays,
            start=start,
            dense=dense,
            scratch=scratch,
            build=build,
            n_backbone=n_backbone,
            task_keys=task_keys,
            mask_keys=mask_keys,
        ):
            imp = jax.jit(jax.vmap(make_state))(start, dense)
            history = []
            for r in range(R + 1):
                src_mask = js.mask_like(pretrained) if r == 0 else src_masks[r - 1]
                amount = 1.0 - (_alive(src_mask) / n_backbone)
                arms = build(imp, start, scratch, src_mask, harness.fold(mask_keys, r), amount)
                keys = jnp.tile(harness.fold(task_keys, r), len(ARMS))
                rewind = jax.tree.map(
                    lambda x: jnp.tile(x, (len(ARMS),) + (1,) * (x.ndim - 1)), start
                )
                nxt, _, ev = timed(prog, arms, keys, arrays, rewind)
                imp = jax.tree.map(lambda x: x[:S], nxt)
                ev = jax.tree.map(
                    lambda x: np.asarray(x).reshape(len(ARMS), S, *x.shape[1:]), jax.device_get(ev)
                )
                history.append(jax.tree.map(np.ndarray.tolist, ev))
            return {"done": jnp.zeros(())}, {"rounds": history}

        _, extra = run.stage(f"task_{name}", {"done": jnp.zeros(())}, task_stage)
        if cfg.resume and f"task_{name}" not in run.timings:
            timed.skip(R + 1)
        task_records[name] = extra["rounds"]
    timed.close()

    # --- the seed-0 source ticket at the highest sparsity, saved with checkpoint --------
    summary = summarise(cfg, src_extra, task_records)
    t = ticket(
        jax.tree.map(lambda x: x[0], pretrained), jax.tree.map(lambda x: x[0], src_masks[-1])
    )
    js.checkpoint.save_ticket(
        run.dir / "ticket",
        *t,
        {
            "source": "mnist0-4",
            "rounds": R,
            "pct_remaining": 100 * _alive(src_masks[-1]) / _alive(js.mask_like(pretrained)),
            "rewound_to": "pre-trained weights",
            "config_hash": cfg.digest(),
        },
    )

    results = {
        "study": "transfer",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "data": {n: ds.sizes() for n, ds in {"mnist0-4": source, **tasks}.items()},
        "arms": list(ARMS),
        "std": "sample standard deviation over seeds (ddof=1)",
        "accuracy": "test accuracy at early stopping (min. validation loss, evaluated every "
        f"{cfg.eval_every} updates)",
        "transfer_report_seed0": reports,
        **summary,
        "history": {"source": src_extra, "tasks": task_records},
    }
    caption = (
        f"Transfer of pre-trained tickets: LeNet-300-100 pre-trained on MNIST 0-4 "
        f"({source.sizes()}), IMP on the source at {cfg.fraction:.0%} of the backbone a "
        f"round rewinding to the pre-trained weights, {cfg.steps} updates a training, "
        f"{S} seeds (mean ± sample std), config hash {cfg.digest()}. Accuracy: test at "
        f"early stopping (min. validation loss). "
    )
    return run.publish(
        results,
        table=caption + "\n\n" + table(cfg, summary),
        csv=summary["csv"],
        figures={"transfer.png": plot(cfg, summary)},
        call_s=timed.seconds,
        trainings_per_call={"source": S, "task": S * len(ARMS)},
    )
