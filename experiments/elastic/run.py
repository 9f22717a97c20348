"""The elastic study's work: IMP with late rewinding at the source depth, then at each
target depth one compiled program training IMP's ticket and the elastic arms of a round
for all seeds."""

from __future__ import annotations

import re

from experiments import harness, models
from experiments.elastic.config import SOURCE_ARMS, ElasticConfig, arms_for
from experiments.elastic.model import PRUNABLE, ResNet
from experiments.elastic.report import plot, summarise, table

# what elastic's shuffle control shuffles: prunable leaves of blocks 1.. of each stage
SHUFFLED = r"^stage\d+_block[1-9]\d*/.*kernel$"


def run_study(cfg: ElasticConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxsparse as js
    from experiments import data as data_lib
    from jaxsparse.filters import path_str
    from jaxsparse.transfer import elastic

    run = harness.start(cfg, log=log)
    ds = data_lib.load_variant("mnist14")
    arrays = jax.device_put(ds.arrays())
    tx = js.masked(optax.adam(cfg.lr))  # one object: states stack and programs reuse
    S, R, N0 = cfg.seeds, cfg.rounds, cfg.source_blocks

    def setup(blocks):
        model = ResNet(blocks=blocks, width=cfg.width)
        kw = {"where": PRUNABLE, "rewind_step": cfg.rewind_step}
        return model, *models.sparse_states(model, tx, ds.x_train.shape[1], **kw)

    def program(model):
        return models.imp_program(
            model, PRUNABLE, fraction=cfg.fraction, batch_size=cfg.batch_size,
            steps=cfg.steps, eval_every=cfg.eval_every,
        )  # fmt: skip

    def stack(*states):
        return jax.tree.map(lambda *xs: jnp.concatenate(xs), *states)

    def split_arms(ev, n_arms):
        ev = jax.device_get(ev)
        return jax.tree.map(lambda x: np.asarray(x).reshape(n_arms, S, *x.shape[1:]).tolist(), ev)

    targets = cfg.target_list()
    timed = run.calls((R + 1) * (1 + len(targets)), desc="elastic", unit="round")

    data_keys = harness.seed_keys(cfg, 1)

    # --- the source depth: IMP with late rewinding, and random pruning beside it -------
    src_model, src_make, src_init = setup(N0)
    src_prog = program(src_model)
    init = src_init(harness.seed_keys(cfg, 0))

    def shuffle(keys, mask, where=PRUNABLE):
        """Each seed's leaves whose path ``where`` finds shuffled, their alive counts kept
        exactly. On the host: ``jaxsparse.shuffle_mask`` (also behind ``elastic``'s
        ``shuffle_key``) takes minutes per leaf shape to compile on a loaded CPU, and
        a numpy permutation no time at all; the result is the same control."""
        flat, treedef = jax.tree_util.tree_flatten_with_path(jax.device_get(mask))
        rngs = [np.random.default_rng(np.asarray(jax.random.key_data(k)).ravel()) for k in keys]
        out = []
        for path, m in flat:
            m = np.asarray(m)
            if not re.search(where, path_str(path)):
                out.append(m)
                continue
            new = np.zeros_like(m)
            for i, rng in enumerate(rngs):
                row = np.zeros(m[i].size, bool)
                row[rng.permutation(m[i].size)[: int(m[i].sum())]] = True
                new[i] = row.reshape(m[i].shape)
            out.append(new)
        return jax.tree.unflatten(treedef, [jnp.asarray(x) for x in out])

    def random_arm(make_state, init_fn, mask, stream, r, key_stream):
        """Random pruning: a fresh init under ``mask`` shuffled within each layer."""
        fresh = init_fn(harness.fold(harness.seed_keys(cfg, stream), r))
        keys = harness.fold(harness.seed_keys(cfg, key_stream), r)
        return jax.vmap(make_state)(fresh, shuffle(keys, mask))

    def source_stage():
        state = jax.vmap(src_make)(init, js.mask_like(init))
        masks, history, rewind = [state.mask], [], None
        for r in range(R + 1):
            arms = stack(state, random_arm(src_make, src_init, state.mask, 2, r, 3))
            nxt, _, ev = timed(src_prog, arms, jnp.tile(harness.fold(data_keys, r), 2), arrays)
            state = jax.tree.map(lambda x: x[:S], nxt)
            rewind = state.rewind_params if rewind is None else rewind
            if r < R:
                masks.append(state.mask)
            history.append(split_arms(ev, len(SOURCE_ARMS)))
        return {"rewind": rewind, "masks": masks}, {"rounds": history}

    like = {"rewind": init, "masks": [js.mask_like(init)] * (R + 1)}
    src_tree, src_extra = run.stage("source", like, source_stage)
    if "source" not in run.timings:
        timed.skip(R + 1)
    rewind, masks = src_tree["rewind"], src_tree["masks"]

    # --- each target depth: IMP there, and the source ticket mapped onto it -------------
    records = {}
    for n in targets:
        model, make_state, init_fn = setup(n)
        prog = program(model)
        arms_n = arms_for(N0, n)
        strategies = arms_n[1:-2]
        target = init_fn(harness.seed_keys(cfg, 10 + n))

        def build(
            imp, src_p, src_m, tgt, fresh, keys, strategies=strategies, make_state=make_state
        ):
            """The arms of a round, stacked arm-major. ``elastic`` is host-side path
            logic, so it runs per seed, eagerly (its mask shuffles are jitted)."""
            arms: list[list] = [[] for _ in strategies]
            interleaved, dense_mapped = [], []
            for i in range(S):
                p, m, t = (jax.tree.map(lambda x, i=i: x[i], a) for a in (src_p, src_m, tgt))
                for j, s in enumerate(strategies):
                    arms[j].append(elastic(p, m, t, strategy=s))
                interleaved.append(elastic(p, m, t)[1])
                dense_mapped.append(elastic(p, jax.tree.map(jnp.ones_like, m), t)[0])
            batched = [
                jax.vmap(make_state)(*jax.tree.map(lambda *xs: jnp.stack(xs), *arm)) for arm in arms
            ]
            m_int = jax.tree.map(lambda *xs: jnp.stack(xs), *interleaved)
            # the paper's control (elastic(..., shuffle_key=) semantics): the masks of
            # target blocks 1.. shuffled, weights from the dense mapped rewind weights
            m_shuf = shuffle(harness.fold(keys, 1), m_int, SHUFFLED)
            w_dense = jax.tree.map(lambda *xs: jnp.stack(xs), *dense_mapped)
            shuffled = jax.vmap(make_state)(w_dense, m_shuf)
            fresh_state = jax.vmap(make_state)(fresh, shuffle(keys, m_int))
            return stack(imp, *batched, shuffled, fresh_state)

        def depth_stage(
            n=n,
            prog=prog,
            build=build,
            target=target,
            init_fn=init_fn,
            make_state=make_state,
            arms_n=arms_n,
        ):
            imp = jax.vmap(make_state)(target, js.mask_like(target))
            history = []
            for r in range(R + 1):
                fresh = init_fn(harness.fold(harness.seed_keys(cfg, 20 + n), r))
                keys = harness.fold(harness.seed_keys(cfg, 30 + n), r)
                arms = build(imp, rewind, masks[r], target, fresh, keys)
                data = jnp.tile(harness.fold(data_keys, r), len(arms_n))
                nxt, _, ev = timed(prog, arms, data, arrays)
                imp = jax.tree.map(lambda x: x[:S], nxt)
                history.append(split_arms(ev, len(arms_n)))
            return {"done": jnp.zeros(())}, {"rounds": history, "arms": list(arms_n)}

        _, extra = run.stage(f"depth_{n}", {"done": jnp.zeros(())}, depth_stage)
        if f"depth_{n}" not in run.timings:
            timed.skip(R + 1)
        records[n] = extra
    timed.close()

    summary = summarise(cfg, src_extra, records)
    results = {
        "study": "elastic",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "data": {"name": ds.name, "sizes": ds.sizes(), "input_shape": list(ds.input_shape)},
        "source_arms": list(SOURCE_ARMS),
        "std": "sample standard deviation over seeds (ddof=1)",
        "accuracy": "test accuracy at early stopping (min. validation loss, evaluated every "
        f"{cfg.eval_every} updates)",
        "mappings": {
            str(n): {s: js.transfer.block_mapping(N0, n, s) for s in arms_for(N0, n)[1:-2]}
            for n in targets
        },
        **summary,
        "history": {"source": src_extra, "targets": {str(k): v for k, v in records.items()}},
    }
    caption = (
        f"Elastic tickets: ResNet-(6N+2) (width {cfg.width}/{2 * cfg.width}/{4 * cfg.width}) "
        f"on MNIST average-pooled to 14x14 ({ds.sizes()}), IMP at N={N0} pruning "
        f"{cfg.fraction:.0%} of the remaining block weights a round (global), late rewinding "
        f"to step {cfg.rewind_step}, {cfg.steps} updates of {cfg.batch_size} a training, "
        f"{S} seeds (mean ± sample std), config hash {cfg.digest()}. Accuracy: test at early "
        "stopping (min. validation loss)."
    )
    return run.publish(
        results,
        table=caption + "\n\n" + table(cfg, summary),
        csv=summary["csv"],
        figures={"elastic.png": plot(cfg, summary)},
        call_s=timed.seconds,
    )
