"""The elastic study's work: IMP with late rewinding at the source depth, then at each
target depth one compiled program that trains IMP there, the dense network there, and
the source's tickets mapped onto it (the elastic arms and the controls), all seeds at
once."""

from __future__ import annotations

import functools

from experiments import harness
from experiments.elastic.arms import distinct, plan, target_arms
from experiments.elastic.config import CONTROLS, ElasticConfig, strategies_for
from experiments.elastic.model import PRUNABLE, ResNet, init_params
from experiments.elastic.report import plot, summarise, table


def train_program(
    model, *, fraction: float, batch_size: int, steps: int, compile: str = "optimized"
):
    """The jitted ``program(states, keys, arrays) -> (pruned, rewind, evals)``: every
    state (a leading axis) trains ``steps`` updates on its key's data order, is evaluated
    once at the end (training, validation and test accuracy), then pruned by IMP
    (``fraction`` of its alive block weights, one global threshold) and rewound to its
    step-k weights with a fresh optimizer at step 0. ``rewind`` holds those step-k
    weights; ``evals["updates"]`` counts the updates each state took. ``compile``:
    ``"optimized"`` or ``"fast"`` (:func:`experiments.harness.compiler_options`)."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxsparse as js

    def program(states, keys, arrays):
        x = arrays["x_train"]
        train_fn = js.make_train_fn(
            lambda p, b: optax.softmax_cross_entropy_with_integer_labels(
                model.apply({"params": p}, b["x"]), b["y"]
            ).mean(),
            {"x": x, "y": arrays["y_train"]},
            batch_size=batch_size,
            steps=steps,
        )
        # one forward pass over every split: one graph to compile, not three
        x_all = jnp.concatenate([x, arrays["x_val"], arrays["x_test"]])
        cuts = (len(x), len(x) + len(arrays["x_val"]))

        def one(state, key):
            trained, _ = train_fn(state, key)
            logits = model.apply({"params": trained.params}, x_all)
            right = jnp.argmax(logits, -1) == jnp.concatenate(
                [arrays["y_train"], arrays["y_val"], arrays["y_test"]]
            )
            parts = jnp.split(right, cuts)
            evals = {
                "train_acc": parts[0].mean(),
                "val_acc": parts[1].mean(),
                "test_acc": parts[2].mean(),
                "density": js.density(trained.mask, PRUNABLE),
                "start_step": state.step,
                "updates": trained.step - state.step,
            }
            rewind = trained.rewind_params  # step k: captured in round 0, kept after
            pruned = js.imp_round(trained, fraction=fraction, scope="global", rewind_to=rewind)
            return pruned, rewind, evals

        return jax.vmap(one)(states, keys)

    return jax.jit(program, compiler_options=harness.compiler_options(compile))


def start_gap(params, mask, start) -> list[float]:
    """Per seed (leading axis), the largest |initial weight - ``start``| over the alive
    block weights: 0 when an arm starts from exactly the step-k weights it claims to."""
    import re

    import jax
    import numpy as np

    from jaxsparse.filters import leaf_paths

    trees = [jax.tree.leaves(jax.device_get(t)) for t in (params, mask, start)]
    gaps = np.zeros(len(trees[0][0]))
    for path, p, m, s in zip(leaf_paths(params), *trees):
        if re.search(PRUNABLE, path):
            d = np.where(m, np.abs(np.asarray(p) - np.asarray(s)), 0.0)
            gaps = np.maximum(gaps, d.reshape(len(d), -1).max(-1))
    return gaps.tolist()


def run_study(cfg: ElasticConfig, *, log=print) -> dict:
    """Runs (or resumes) the study; writes everything to ``cfg.run_dir()``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxsparse as js

    run = harness.start(cfg, log=log)
    ds = _mnist14()
    arrays = jax.device_put(ds.arrays())
    # one object: every arm takes the same schedule, and programs reuse it
    tx = js.masked(optax.adam(optax.cosine_decay_schedule(cfg.lr, cfg.steps)))
    S, R, N0 = cfg.seeds, cfg.rounds, cfg.source_blocks
    data_keys = harness.seed_keys(cfg, 1)  # a seed's data order, the same for every arm

    def setup(blocks):
        model = ResNet(blocks=blocks, width=cfg.width, im2col=cfg.conv == "im2col")

        def make_state(params, mask):
            return js.SparseTrainState.create(
                apply_fn=model.apply, params=params, tx=tx, mask=mask,
                where=PRUNABLE, rewind_step=cfg.rewind_step,
            )  # fmt: skip

        prog = train_program(
            model,
            fraction=cfg.fraction,
            batch_size=cfg.batch_size,
            steps=cfg.steps,
            compile=cfg.compile,
        )
        # jitted: one program per depth, not an eager op per leaf; numpy leaves out
        batched = jax.jit(jax.vmap(make_state))
        return model, lambda p, m: jax.device_get(batched(p, m)), prog

    def stack(trees):
        """The states of a call, one after another; through the host, so that every call
        passes arrays of one kind (uncommitted, strongly typed) and the program compiles
        once per depth, whether a state came from numpy, eager ops or the program."""
        return jax.device_put(
            jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *trees)
        )

    def per_slot(tree, n_slots):
        """A call's outputs on the host, split by slot: leading axes (slot, seed)."""
        return jax.tree.map(lambda x: x.reshape(n_slots, S, *x.shape[1:]), _host(tree))

    def dense_mask(params):
        return jax.tree.map(lambda x: np.ones(np.shape(x), bool), params)

    targets = cfg.target_list()
    timed = run.calls((R + 1) * (1 + len(targets)), desc="elastic", unit="call")

    # --- the source depth: IMP with late rewinding --------------------------------------
    src_model, src_make, src_prog = setup(N0)
    init = init_params(src_model, harness.seed_keys(cfg, 0))

    def source_stage():
        state = src_make(init, dense_mask(init))
        masks, history, rewind = [], [], None
        for _ in range(R + 1):
            gap = start_gap(state.params, state.mask, init if rewind is None else rewind)
            state, rw, ev = (_host(t) for t in timed(src_prog, stack([state]), data_keys, arrays))
            rewind = rw if rewind is None else rewind
            masks.append(state.mask)
            history.append(_lists(ev) | {"start_gap": gap})
        return {"rewind": rewind, "masks": masks[:R]}, {"rounds": history}

    like = {"rewind": init, "masks": [dense_mask(init)] * R}
    src_tree, src_extra = run.stage("source", like, source_stage)
    if "source" not in run.timings:
        timed.skip(R + 1)
    rewind, masks = src_tree["rewind"], src_tree["masks"]

    # --- each target depth: IMP and dense there, the source's tickets mapped onto it ----
    def depth_stage(n):
        model, make_state, prog = setup(n)
        aliases = distinct(strategies_for(N0, n), N0, n)
        strategies = list(dict.fromkeys(aliases.values()))
        calls = plan([*strategies, *CONTROLS], R)
        target = init_params(model, harness.seed_keys(cfg, 10 + n))
        keys = harness.seed_keys(cfg, 30 + n)
        tickets = {
            r: target_arms(rewind, masks[r - 1], target, strategies, harness.fold(keys, r))
            for r in range(1, R + 1)
        }
        imp, rewind_t = make_state(target, dense_mask(target)), None
        results: dict[str, dict] = {}
        for c, slots in enumerate(calls):
            states, starts = [], []
            for arm, r in slots:
                if arm in ("imp", "pad"):
                    states.append(imp)
                    starts.append(target if c == 0 else rewind_t)
                elif arm == "dense":
                    states.append(make_state(rewind_t, dense_mask(rewind_t)))
                    starts.append(rewind_t)
                else:
                    params, mask, start = tickets[r][arm]
                    states.append(make_state(params, mask))
                    starts.append(start)
            gaps = [start_gap(s.params, s.mask, w) for s, w in zip(states, starts)]
            data = jnp.tile(data_keys, len(slots))
            nxt, rw, ev = timed(prog, stack(states), data, arrays)
            nxt, rw, ev = (per_slot(t, len(slots)) for t in (nxt, rw, ev))
            imp = jax.tree.map(lambda x: x[0], nxt)
            rewind_t = jax.tree.map(lambda x: x[0], rw) if rewind_t is None else rewind_t
            for j, (arm, r) in enumerate(slots):
                if arm != "pad":
                    rec = {k: np.asarray(v)[j].tolist() for k, v in ev.items()}
                    results[f"{arm}@{r}"] = rec | {"start_gap": gaps[j], "call": c}
        extra = {"arms": results, "calls": calls, "aliases": aliases}
        return {"done": jnp.zeros(())}, extra

    records = {}
    for n in targets:
        _, records[n] = run.stage(f"depth_{n}", {"done": jnp.zeros(())}, lambda n=n: depth_stage(n))
        if f"depth_{n}" not in run.timings:
            timed.skip(R + 1)
    timed.close()

    summary = summarise(cfg, src_extra, records)
    results = {
        "study": "elastic",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "data": {"name": ds.name, "sizes": ds.sizes(), "input_shape": list(ds.input_shape)},
        "std": "sample standard deviation over seeds (ddof=1)",
        "accuracy": f"at the end of training ({cfg.steps} updates, cosine decay to 0); no "
        "early stopping",
        "paired": "arm - reference per seed, mean and 95% Student-t interval "
        "(experiments.stats.paired); verdict against -margin",
        "mappings": {
            str(n): {s: js.transfer.block_mapping(N0, n, s) for s in strategies_for(N0, n)}
            for n in targets
        },
        **summary,
        "history": {"source": src_extra, "targets": {str(k): v for k, v in records.items()}},
    }
    caption = (
        f"Elastic tickets: ResNet-(6N+2) (width {cfg.width}/{2 * cfg.width}/{4 * cfg.width}) "
        f"on MNIST average-pooled to 14x14 ({ds.sizes()}), IMP at N={N0} pruning "
        f"{cfg.fraction:.0%} of the remaining block weights a round (global), every pruned "
        f"arm from the step-{cfg.rewind_step} weights with a fresh Adam (peak {cfg.lr:g}, "
        f"cosine to 0), {cfg.steps} updates of {cfg.batch_size} a training for every arm, "
        f"{S} paired seeds, config hash {cfg.digest()}. Accuracy: at the end of training, "
        f"mean ± sample std; differences: paired, mean [95% interval], in points; "
        f"'matches' = interval above -{cfg.margin:g}."
    )
    return run.publish(
        results,
        table=caption + "\n\n" + table(cfg, summary),
        csv=summary["csv"],
        figures={"elastic.png": plot(cfg, summary)},
        call_s=timed.seconds,
    )


@functools.cache
def _mnist14():
    """The data, loaded once a process (3.5 s of CPU; a resumed run in the same process
    reuses it)."""
    from experiments import data

    return data.load_variant("mnist14")


def _host(tree):
    """``tree`` on the host, as numpy arrays."""
    import jax
    import numpy as np

    return jax.tree.map(np.asarray, jax.device_get(tree))


def _lists(tree) -> dict:
    """A dict of arrays on the host as lists (what a stage's JSON extra holds)."""
    return {k: v.tolist() for k, v in _host(tree).items()}
