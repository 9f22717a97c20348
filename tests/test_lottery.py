"""Lottery tickets: SparseTrainState, imp_round, controls and the compiled IMP loop."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse as js


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


MODEL = MLP()


def init_params(key):
    return MODEL.init(key, jnp.ones((1, 8)))["params"]


def make_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    w = rng.normal(size=(8, 3)).astype(np.float32)
    y = np.argmax(x @ w, axis=1)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def loss_fn(params, batch):
    logits = MODEL.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def new_state(key=0, tx=None, rewind_step=0):
    tx = tx or optax.adam(1e-2)
    return js.SparseTrainState.create(
        apply_fn=MODEL.apply,
        params=init_params(jax.random.key(key)),
        tx=tx,
        rewind_step=rewind_step,
    )


DATA = make_data()
TRAIN = js.make_train_fn(loss_fn, DATA, batch_size=16, steps=24)
TRAIN_JIT = jax.jit(TRAIN)
IMP_JIT = jax.jit(lambda s: js.imp_round(s, fraction=0.2, scope="global"))


def alive(mask):
    return sum(int(m.sum()) for m in jax.tree.leaves(mask) if m.ndim >= 2)


def test_create_wraps_tx_and_starts_dense():
    state = new_state()
    assert js.sparsity(state.mask) == 0.0
    assert int(state.step) == 0 and int(state.round) == 0
    chex.assert_trees_all_equal(state.rewind_params, state.params)
    # an already masked tx is not wrapped twice
    state2 = js.SparseTrainState.create(
        apply_fn=None, params=init_params(jax.random.key(0)), tx=js.masked(optax.sgd(0.1))
    )
    assert isinstance(state2.opt_state, js.MaskedState)
    assert not isinstance(state2.opt_state.inner_state, js.MaskedState)


def test_imp_round_prunes_rewinds_and_resets_exactly():
    state = new_state()
    init = state.params
    trained, _ = TRAIN_JIT(state, jax.random.key(1))
    n_alive = alive(trained.mask)
    ticket = IMP_JIT(trained)
    mask = ticket.mask
    # exact count: round(0.2 * alive) removed, globally over the kernels
    assert alive(mask) == n_alive - round(0.2 * n_alive)
    # global magnitude: every pruned |w| <= every surviving |w| of the trained params
    kern = [
        (t, m)
        for t, m in zip(jax.tree.leaves(trained.params), jax.tree.leaves(mask))
        if t.ndim >= 2
    ]
    pruned = np.concatenate([np.abs(np.asarray(t))[~np.asarray(m)] for t, m in kern])
    kept = np.concatenate([np.abs(np.asarray(t))[np.asarray(m)] for t, m in kern])
    assert pruned.max() <= kept.min()
    # survivors equal the initial values exactly, pruned are exactly zero
    for p, p0, m in zip(
        jax.tree.leaves(ticket.params), jax.tree.leaves(init), jax.tree.leaves(mask)
    ):
        np.testing.assert_array_equal(np.asarray(p)[np.asarray(m)], np.asarray(p0)[np.asarray(m)])
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
    # biases untouched by pruning; optimizer reset to the snapshot (fresh adam)
    assert all(bool(m.all()) for m in jax.tree.leaves(mask) if m.ndim == 1)
    inner = ticket.opt_state.inner_state
    assert int(inner[0].count) == 0
    assert all(float(jnp.abs(x).sum()) == 0.0 for x in jax.tree.leaves(inner[0].mu))
    assert int(ticket.step) == 0 and int(ticket.round) == 1


def test_masks_nested_and_no_recompile_across_rounds():
    state = new_state()
    imp = jax.jit(chex.assert_max_traces(n=1)(lambda s: js.imp_round(s, fraction=0.3)))
    train = jax.jit(chex.assert_max_traces(n=1)(TRAIN))
    prev = state.mask
    counts = []
    for r in range(4):
        state, _ = train(state, jax.random.key(r))
        state = imp(state)
        for a, b in zip(jax.tree.leaves(state.mask), jax.tree.leaves(prev)):
            assert not np.any(np.asarray(a) & ~np.asarray(b))
        counts.append(alive(state.mask))
        prev = state.mask
    expected, n = [], alive(new_state().mask)
    for _ in range(4):
        n -= round(0.3 * n)
        expected.append(n)
    assert counts == expected


@pytest.mark.parametrize("rewind_step", [0, 3])
def test_donated_imp_round_reuses_every_buffer_of_the_state(rewind_step):
    """As the docs advise: donated and ``keep_unused=True``, every byte of the state is
    aliased to the output (XLA's memory analysis); without ``keep_unused`` the moments of a
    k > 0 state, never read, are dropped from the arguments and not reused. The result is
    the same."""
    state = new_state(rewind_step=rewind_step)
    state, _ = TRAIN_JIT(state, jax.random.key(0))
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    moments = sum(x.nbytes for x in jax.tree.leaves(state.opt_state) if x.ndim >= 1)

    def imp(keep):
        fn = lambda s: js.imp_round(s, fraction=0.2, scope="global")  # noqa: E731
        return jax.jit(fn, donate_argnums=0, keep_unused=keep)

    compiled = imp(True).lower(state).compile()
    assert compiled.memory_analysis().alias_size_in_bytes == state_bytes
    dropped = imp(False).lower(state).compile().memory_analysis()
    mask_bytes = sum(x.nbytes for x in jax.tree.leaves(state.mask))
    if rewind_step == 0:
        # the fresh zero moments are written over the current ones (in place), so those
        # are read and kept even without keep_unused (the old masks, 467 B, may go)
        assert dropped.alias_size_in_bytes >= state_bytes - mask_bytes
    else:
        # the current moments (opt_state's params-shaped leaves but the mask) go unread
        assert dropped.alias_size_in_bytes <= state_bytes - (moments - mask_bytes)
    want = IMP_JIT(state)
    got = compiled(jax.tree.map(jnp.copy, state))
    chex.assert_trees_all_equal(got, want)


def test_rewind_to_step_k_replays_schedule_and_moments():
    sched = optax.linear_schedule(1e-2, 0.0, 24)
    state = new_state(tx=optax.adam(sched), rewind_step=5)
    trained, _ = TRAIN_JIT(state, jax.random.key(3))
    ticket = IMP_JIT(trained)
    assert int(ticket.step) == 5
    # the snapshot is the state after exactly 5 updates of the first run
    idx_state = state
    idx = jax.random.permutation(jax.random.split(jax.random.key(3), 1)[0], DATA["x"].shape[0])
    for i in range(5):
        b = jax.tree.map(lambda x, i=i: x[idx[i * 16 : (i + 1) * 16]], DATA)
        idx_state = idx_state.apply_gradients(grads=jax.grad(loss_fn)(idx_state.params, b))
    chex.assert_trees_all_close(trained.rewind_params, idx_state.params, rtol=1e-6, atol=1e-7)
    inner = ticket.opt_state.inner_state
    assert int(inner[0].count) == 5  # adam (and its schedule) resume from step 5
    for mu, m in zip(jax.tree.leaves(inner[0].mu), jax.tree.leaves(ticket.mask)):
        assert np.all(np.asarray(mu)[~np.asarray(m)] == 0.0)
    # training on from the rewound state never revisits the snapshot
    again, _ = TRAIN_JIT(ticket, jax.random.key(4))
    chex.assert_trees_all_equal(again.rewind_params, trained.rewind_params)


def test_rates_override_layerwise():
    state = new_state()
    trained, _ = TRAIN_JIT(state, jax.random.key(0))
    ticket = jax.jit(
        lambda s: js.imp_round(s, fraction=0.2, scope="layerwise", rates={"Dense_2": 0.1})
    )(trained)
    m = ticket.mask
    assert int(m["Dense_0"]["kernel"].sum()) == 128 - round(0.2 * 128)
    assert int(m["Dense_1"]["kernel"].sum()) == 256 - round(0.2 * 256)
    assert int(m["Dense_2"]["kernel"].sum()) == 48 - round(0.1 * 48)


def test_rewind_to_pretrained_weights():
    state = new_state()
    trained, _ = TRAIN_JIT(state, jax.random.key(0))
    pre = init_params(jax.random.key(9))
    ticket = js.imp_round(trained, fraction=0.5, rewind_to=pre)
    for p, q, m in zip(
        jax.tree.leaves(ticket.params), jax.tree.leaves(pre), jax.tree.leaves(ticket.mask)
    ):
        np.testing.assert_array_equal(np.asarray(p), np.where(m, q, 0.0))
    with pytest.raises(ValueError, match=r"rewind_to.*Dense_1/bias"):
        js.imp_round(trained, rewind_to={"Dense_0": pre["Dense_0"]})


def test_controls_keep_densities():
    state = new_state()
    trained, _ = TRAIN_JIT(state, jax.random.key(0))
    ticket = js.imp_round(trained, fraction=0.5, scope="layerwise")
    re = js.reprune(ticket, jax.random.key(5))
    for a, b in zip(jax.tree.leaves(re.mask), jax.tree.leaves(ticket.mask)):
        assert int(a.sum()) == int(b.sum())
    assert any(
        bool((a != b).any()) for a, b in zip(jax.tree.leaves(re.mask), jax.tree.leaves(ticket.mask))
    )
    # re-pruned weights take their *initial* values, also where the ticket had pruned
    for p, p0, m in zip(
        jax.tree.leaves(re.params), jax.tree.leaves(state.params), jax.tree.leaves(re.mask)
    ):
        np.testing.assert_array_equal(np.asarray(p), np.where(m, p0, 0.0))
    glob = js.shuffle_mask(jax.random.key(1), ticket.mask, scope="global")
    assert alive(glob) == alive(ticket.mask)
    rr = js.random_reinit(ticket, init_params, jax.random.key(7))
    chex.assert_trees_all_equal(rr.mask, ticket.mask)
    fresh = init_params(jax.random.key(7))
    for p, q, m in zip(
        jax.tree.leaves(rr.params), jax.tree.leaves(fresh), jax.tree.leaves(rr.mask)
    ):
        np.testing.assert_array_equal(np.asarray(p), np.where(m, q, 0.0))
    assert int(rr.step) == 0


def python_loop(state, key, rounds, controls):
    """The same rounds as lottery.run, as a Python loop of jitted pieces."""
    step_train = jax.jit(jax.vmap(TRAIN, in_axes=(0, None)))
    outs = []
    for k in [jax.random.fold_in(key, r) for r in range(rounds)]:
        k_arms, k_train = jax.random.split(k)
        arm_keys = jax.random.split(k_arms, max(len(controls), 1))
        arms = [state] + [c(state, ak) for c, ak in zip(controls, arm_keys)]
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *arms)
        trained, losses = step_train(stacked, k_train)
        outs.append(losses)
        state = IMP_JIT(jax.tree.map(lambda x: x[0], trained))
    return state, jnp.stack(outs)


CONTROLS = (
    lambda s, k: js.random_reinit(s, init_params, k),
    lambda s, k: js.reprune(s, k),
)


def test_compiled_loop_equals_python_loop():
    state = new_state()
    key = jax.random.key(11)
    run = jax.jit(
        lambda s, k: js.lottery.run(
            s, TRAIN, k, rounds=3, controls=CONTROLS, fraction=0.2, scope="global"
        )
    )
    final, hist = run(state, key)
    ref_final, ref_losses = python_loop(state, key, 3, CONTROLS)
    chex.assert_trees_all_equal(final.mask, ref_final.mask)
    chex.assert_trees_all_equal(final.params, ref_final.params)
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(hist["metrics"], ref_losses)
    else:  # a GPU fuses the loss's reductions differently in the two programs
        np.testing.assert_allclose(hist["metrics"], ref_losses, rtol=1e-5)
    assert hist["density"].shape == (3, 3)
    np.testing.assert_allclose(hist["density"][:, 0], hist["density"][:, 1])
    np.testing.assert_allclose(hist["density"][:, 0], hist["density"][:, 2])


def test_vmap_over_seeds():
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.vmap(lambda k: new_state_from_key(k))(keys)
    run = jax.jit(jax.vmap(lambda s, k: js.lottery.run(s, TRAIN, k, rounds=2, fraction=0.5)))
    final, hist = run(states, keys)
    assert hist["density"].shape == (3, 2, 1)
    one, _ = jax.jit(lambda s, k: js.lottery.run(s, TRAIN, k, rounds=2, fraction=0.5))(
        new_state_from_key(keys[1]), keys[1]
    )
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[1], final.mask), one.mask)


def new_state_from_key(key):
    return js.SparseTrainState.create(
        apply_fn=MODEL.apply, params=init_params(key), tx=optax.adam(1e-2)
    )


def test_create_errors_name_the_place():
    params = init_params(jax.random.key(0))
    with pytest.raises(ValueError, match="rewind_step"):
        js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.1), rewind_step=-1)
    bad = js.mask_like(params)
    bad["Dense_1"]["kernel"] = jnp.ones((3, 3), bool)
    with pytest.raises(ValueError, match="Dense_1/kernel"):
        js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.1), mask=bad)


def test_arms_share_the_data_order():
    # an identity "control" trains exactly like the ticket: same batches, same result
    state = new_state()
    run = jax.jit(lambda s, k: js.lottery.run(s, TRAIN, k, rounds=1, controls=(lambda s, k: s,)))
    _, hist = run(state, jax.random.key(2))
    np.testing.assert_array_equal(hist["metrics"][0, 0], hist["metrics"][0, 1])


def test_run_resumable_equals_run_and_survives_an_interruption(tmp_path):
    state, key = new_state(), jax.random.key(21)
    kwargs = {"rounds": 3, "controls": CONTROLS[1:], "fraction": 0.3}
    ref_state, ref_hist = jax.jit(lambda s, k: js.lottery.run(s, TRAIN, k, **kwargs))(state, key)

    class Crash(Exception):
        pass

    def crash_after_round_1(r, s, record):
        if r == 1:
            raise Crash

    with pytest.raises(Crash):
        js.lottery.run_resumable(
            state, TRAIN, key, directory=tmp_path, on_round=crash_after_round_1, **kwargs
        )
    assert js.checkpoint.latest_round(tmp_path) == 1
    seen = []
    out, hist = js.lottery.run_resumable(
        state,
        TRAIN,
        key,
        directory=tmp_path,
        on_round=lambda r, s, rec: seen.append(r),
        **kwargs,
    )
    assert seen == [2]  # rounds 0 and 1 came from the checkpoint
    chex.assert_trees_all_equal(out.mask, ref_state.mask)
    chex.assert_trees_all_equal(out.params, ref_state.params)
    chex.assert_trees_all_equal(hist, jax.device_get(ref_hist))
    with pytest.raises(ValueError, match="beyond rounds=1"):
        js.lottery.run_resumable(state, TRAIN, key, directory=tmp_path, rounds=1)
    with pytest.raises(ValueError, match="other arguments"):
        js.lottery.run_resumable(
            state, TRAIN, key, directory=tmp_path, **{**kwargs, "rounds": 4, "fraction": 0.2}
        )


def test_run_resumable_extends_a_finished_run(tmp_path):
    state, key = new_state(), jax.random.key(5)
    js.lottery.run_resumable(state, TRAIN, key, rounds=1, directory=tmp_path, fraction=0.4)
    out, hist = js.lottery.run_resumable(
        state, TRAIN, key, rounds=2, directory=tmp_path, fraction=0.4
    )
    ref, ref_hist = jax.jit(lambda s, k: js.lottery.run(s, TRAIN, k, rounds=2, fraction=0.4))(
        state, key
    )
    chex.assert_trees_all_equal(out.params, ref.params)
    chex.assert_trees_all_equal(hist, jax.device_get(ref_hist))
