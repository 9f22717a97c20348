"""Training-step rows: masked(adam) against adam, gradual magnitude pruning against
dense training, and K seeds ``vmap``-ed in one program against K single-seed runs.

All on LeNet-300-100 (batch 128, random inputs: the cost does not depend on the data),
every step inside one jitted ``lax.scan`` with donated buffers, so what is timed is
training, not Python dispatch; the masked step is also timed one jitted call a step
(the loop users write), and that row is shown where its ratio differs by > 5%.
"""

from __future__ import annotations

import functools

from experiments.bench import timing

BATCH = 128


def _setup(steps: int, seed: int = 0):
    import jax
    import jax.numpy as jnp

    from experiments.models import LeNet300

    model = LeNet300()
    params = model.init(jax.random.key(seed), jnp.ones((1, 784)))["params"]
    xs = jax.random.normal(jax.random.key(1), (steps, BATCH, 784))
    ys = jax.random.randint(jax.random.key(2), (steps, BATCH), 0, 10)
    return model, params, xs, ys


def _loss(model):
    import optax

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss_fn


def _trainer(model, tx, update_mask=None, every: int = 0):
    """``train(params, opt_state, xs, ys)``: one scan over the batches. With
    ``update_mask(params, mask, step) -> mask``, the mask is updated every ``every``
    steps (1 = every step) before the gradient step."""
    import jax
    import optax

    import jaxsparse as js

    grad_fn = jax.grad(_loss(model))

    def body(carry, batch):
        p, s, step = carry
        if update_mask is not None:

            def new_mask(p, s):
                m = update_mask(p, js.get_mask(s), step)
                return js.apply_mask(p, m), js.set_mask(s, m)

            if every == 1:
                p, s = new_mask(p, s)
            else:
                p, s = jax.lax.cond(step % every == 0, new_mask, lambda p, s: (p, s), p, s)
        u, s = tx.update(grad_fn(p, *batch), s, p)
        return (optax.apply_updates(p, u), s, step + 1), None

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train(params, opt_state, xs, ys):
        return jax.lax.scan(body, (params, opt_state, 0), (xs, ys))[0]

    return train


def _runner(train, params, tx, xs, ys):
    import jax
    import jax.numpy as jnp

    state = {"ps": jax.tree.map(jnp.copy, (params, tx.init(params)))}

    def run():
        p, s, _ = train(*state["ps"], xs, ys)
        state["ps"] = (p, s)
        return p

    return run


def masked_step(quick: bool) -> list[dict]:
    import optax

    import jaxsparse as js

    steps, repeats = (20, 5) if quick else (200, 15)
    model, params, xs, ys = _setup(steps)
    mask = js.prune(js.scores.magnitude(params), js.mask_like(params), 0.9, scope="global")
    dense_tx, masked_tx = optax.adam(1e-3), js.masked(optax.adam(1e-3), mask)
    start = {"dense": params, "masked": js.apply_mask(params, mask)}
    txs = {"dense": dense_tx, "masked": masked_tx}
    scan = {k: _runner(_trainer(model, tx), start[k], tx, xs, ys) for k, tx in txs.items()}
    per_call = {k: _per_call(model, tx, start[k], xs, ys) for k, tx in txs.items()}
    t = timing.interleaved(scan, repeats)
    per_rep = [m / d for m, d in zip(t.wall["masked"], t.wall["dense"])]
    bytes_dense = _step_bytes(model, dense_tx, params, xs[0], ys[0])
    bytes_masked = _step_bytes(model, masked_tx, params, xs[0], ys[0])
    what = f"masked(adam) step / adam step, batch {BATCH}, 90% sparse"
    rows = [
        timing.compare(
            what + f", {steps} steps in one lax.scan",
            t,
            "masked",
            "dense",
            "optax.adam step",
            per=steps,
            goal=1.02,
            per_repeat_ratio_range=[min(per_rep), max(per_rep)],
            xla_bytes_ratio=bytes_masked / bytes_dense,
            steps=steps,
            repeats=repeats,
        )
    ]
    # the loop users write (one jitted call a step): reported where it differs
    t = timing.interleaved(per_call, repeats)
    call = timing.compare(
        what + ", one jitted call a step", t, "masked", "dense", "optax.adam step", per=steps
    )
    if abs(call["ratio"] / rows[0]["ratio"] - 1) > 0.05:
        rows.append(call)
    return rows


def _per_call(model, tx, params, xs, ys):
    """Like :func:`_runner`, one jitted step a call, as a Flax training loop runs."""
    import jax
    import jax.numpy as jnp
    import optax

    grad_fn = jax.grad(_loss(model))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, x, y):
        u, s = tx.update(grad_fn(p, x, y), s, p)
        return optax.apply_updates(p, u), s

    batches = [(xs[i], ys[i]) for i in range(xs.shape[0])]  # sliced before timing
    state = {"ps": jax.tree.map(jnp.copy, (params, tx.init(params)))}

    def run():
        p, s = state["ps"]
        for x, y in batches:
            p, s = step(p, s, x, y)
        state["ps"] = (p, s)
        return p

    return run


def _step_bytes(model, tx, params, x, y) -> float:
    """Bytes one jitted step reads and writes, by XLA's cost analysis (deterministic)."""
    import jax
    import optax

    grad_fn = jax.grad(_loss(model))

    def step(p, s, x, y):
        u, s = tx.update(grad_fn(p, x, y), s, p)
        return optax.apply_updates(p, u), s

    cost = jax.jit(step).lower(params, tx.init(params), x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["bytes accessed"])


def _gradual_update(final: float, steps: int):
    """Zhu & Gupta's cubic schedule to ``final`` sparsity over ``steps``, each layer
    pruned by magnitude to the schedule's sparsity (exact counts), through js.prune."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    def update(p, mask, step):
        frac = jnp.minimum(step / max(steps - 1, 1), 1.0)
        target = final * (1 - (1 - frac) ** 3)
        targets = jax.tree.map(lambda _: target, p)
        return js.prune(js.scores.magnitude(p), mask, targets)

    return update


def gradual(quick: bool) -> list[dict]:
    import optax

    import jaxsparse as js

    steps, repeats = (20, 5) if quick else (200, 11)
    model, params, xs, ys = _setup(steps)
    dense_tx, masked_tx = optax.adam(1e-3), js.masked(optax.adam(1e-3))
    update = _gradual_update(0.9, steps)
    calls = {
        "dense": _runner(_trainer(model, dense_tx), params, dense_tx, xs, ys),
        "every 10": _runner(_trainer(model, masked_tx, update, 10), params, masked_tx, xs, ys),
        "every 1": _runner(_trainer(model, masked_tx, update, 1), params, masked_tx, xs, ys),
    }
    t = timing.interleaved(calls, repeats)
    return [
        timing.compare(
            "gradual magnitude pruning to 90%, mask update every 10 steps / dense",
            t,
            "every 10",
            "dense",
            "optax.adam step",
            per=steps,
            goal=1.10,
        ),
        timing.compare(
            "the same, mask update every step / dense",
            t,
            "every 1",
            "dense",
            "optax.adam step",
            per=steps,
            goal=1.5,
        ),
    ]


def seeds(quick: bool) -> list[dict]:
    """K seeds' masked training vmapped in one program against K runs of one seed."""
    import jax
    import optax

    import jaxsparse as js

    steps, repeats = (10, 3) if quick else (100, 7)
    model, params, xs, ys = _setup(steps)
    tx = js.masked(optax.adam(1e-3))
    train = _trainer(model, tx)
    rows = []
    one = _runner(train, params, tx, xs, ys)
    for k in (4, 16):
        keys = jax.random.split(jax.random.key(0), k)
        stacked = jax.vmap(lambda key: model.init(key, xs[0, :1])["params"])(keys)
        batched = jax.jit(
            jax.vmap(train.__wrapped__, in_axes=(0, 0, None, None)), donate_argnums=(0, 1)
        )
        many = _runner(batched, stacked, _Vmapped(tx), xs, ys)
        t = timing.interleaved({"one": one, "many": many}, repeats)
        t.wall["k x one"] = [k * x for x in t.wall["one"]]
        t.cpu["k x one"] = [k * x for x in t.cpu["one"]]
        rows.append(
            timing.compare(
                f"K = {k} seeds vmap-ed in one program / {k} x one seed",
                t,
                "many",
                "k x one",
                f"{k} x one seed, same steps",
                goal=0.55 if k == 16 else None,
            )
        )
    return rows


class _Vmapped:
    """``tx`` whose ``init`` maps over stacked params."""

    def __init__(self, tx):
        self.tx = tx

    def init(self, params):
        import jax

        return jax.vmap(self.tx.init)(params)


def measure(quick: bool) -> dict:
    rows = masked_step(quick) + gradual(quick) + seeds(quick)
    note = (
        f"LeNet-300-100, batch {BATCH}, every step inside one jitted `lax.scan` (the masked "
        "step also one jitted call a step, shown where it differs); "
        f"{timing.clock_words()}, median of interleaved repeats, baseline in the same run "
        "(`xla_bytes_ratio` in the JSON: bytes a masked step moves / a dense step's, by "
        "XLA's cost analysis). Gradual pruning: Zhu & Gupta's "
        "cubic schedule to 90%, each layer pruned by magnitude with `js.prune` (exact "
        "counts), the mask set into `masked(adam)`'s state and applied to the params."
    )
    return timing.section("Training steps", rows, note)
