"""SparseTrainState: snapshot capture, Flax/NNX interop, duck typing."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import jaxsparse as js


def test_snapshot_captured_exactly_at_step_k_and_only_once():
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    state = js.SparseTrainState.create(
        apply_fn=None, params=params, tx=optax.sgd(1.0), rewind_step=2
    )
    grads = {"w": jnp.ones((2, 3))}
    step = jax.jit(lambda s: s.apply_gradients(grads=grads))
    history = []
    for _ in range(4):
        state = step(state)
        history.append(state.params["w"])
    np.testing.assert_array_equal(state.rewind_params["w"], history[1])  # after 2 updates
    np.testing.assert_array_equal(state.rewind_params["w"], params["w"] - 2.0)
    # the rewound state never steps onto k again, so the snapshot stays
    state = js.imp_round(state, fraction=0.5)
    assert int(state.step) == 2
    for _ in range(3):
        state = step(state)
    np.testing.assert_array_equal(state.rewind_params["w"], params["w"] - 2.0)


def _has_cond(fn, *args) -> bool:
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return any(e.primitive.name == "cond" for e in jaxpr.eqns)


def test_step_checks_for_k_only_when_k_is_not_zero():
    """With k = 0 the snapshot is the initial state and a step carries no lax.cond (on a
    GPU each one makes the host wait); with k > 0 it does. k = 0 rewinds to the exact
    initial values after any number of steps."""
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = jax.tree.map(jnp.ones_like, params)

    def step(s):
        return s.apply_gradients(grads=grads)

    zero = js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.adam(0.1))
    late = js.SparseTrainState.create(
        apply_fn=None, params=params, tx=optax.adam(0.1), rewind_step=2
    )
    assert not zero.takes_snapshot and late.takes_snapshot
    assert not _has_cond(step, zero) and _has_cond(step, late)
    flags = []  # a traced k may be anything: the check stays

    def build(k):
        s = js.SparseTrainState.create(
            apply_fn=None, params=params, tx=optax.sgd(0.1), rewind_step=k
        )
        flags.append(s.takes_snapshot)
        return s.step

    jax.jit(build)(jnp.int32(0))
    assert flags == [True]
    jitted = jax.jit(step)
    state = zero
    for _ in range(5):
        state = jitted(state)
    back = js.imp_round(state, fraction=0.5)
    mask = back.mask
    np.testing.assert_array_equal(back.params["w"], np.where(mask["w"], params["w"], 0.0))
    np.testing.assert_array_equal(back.params["b"], params["b"])
    assert int(back.step) == 0


@pytest.mark.parametrize(
    "tx",
    [
        optax.adam(0.1),
        optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.05, weight_decay=0.1)),
        optax.sgd(0.1, momentum=0.9, nesterov=True),
        # its accumulators start at 0.1, not 0: the rewind must still zero the pruned ones
        optax.adagrad(0.1, initial_accumulator_value=0.1),
    ],
    ids=["adam", "clip+adamw", "nesterov", "adagrad"],
)
def test_k0_state_carries_no_snapshot_opt_state_and_rewinds_the_same(tx):
    """With k = 0 the snapshot's optimizer state is tx.init of the initial params, so the
    state does not carry it (fewer leaves a step, 2 floats a weight less for Adam), and
    every rewind (imp_round, both controls) gives bit for bit what carrying it gave."""
    mask0 = {"w": jnp.array([[True, False, True], [True, True, True]]), "b": jnp.ones(3, bool)}
    params = {"w": jnp.arange(1.0, 7.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.full(3, 0.5)}
    lean = js.SparseTrainState.create(apply_fn=None, params=params, tx=tx, mask=mask0)
    assert lean.rewind_opt_state is None
    # what create carried before: the initial optimizer state itself
    full = lean.replace(rewind_opt_state=lean.opt_state)
    assert len(jax.tree.leaves(lean)) == len(jax.tree.leaves(full)) - len(
        jax.tree.leaves(lean.opt_state)
    )
    step = jax.jit(lambda s: s.apply_gradients(grads=grads))
    key = jax.random.key(3)
    ops = {
        "imp_round": lambda s: js.imp_round(s, fraction=0.5),
        "reprune": lambda s: js.controls.reprune(s, key),
        "random_reinit": lambda s: js.controls.random_reinit(
            s, lambda k: {"w": jax.random.normal(k, (2, 3)), "b": jnp.zeros(3)}, key
        ),
    }
    for name, op in ops.items():
        a, b = lean, full
        for _ in range(2):  # two rounds: the second rewinds from what the first left
            for _ in range(3):
                a, b = step(a), step(b)
            a, b = jax.jit(op)(a), jax.jit(op)(b)
            assert a.rewind_opt_state is None, name
            for x, y in zip(
                jax.tree.leaves((a.params, a.opt_state, a.rewind_params, a.step)),
                jax.tree.leaves((b.params, b.opt_state, b.rewind_params, b.step)),
                strict=True,
            ):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


def test_k0_rewind_writes_each_zero_moment_where_it_lies():
    """A k = 0 rewind makes Adam's moments afresh: zero fills, which need no mask. Each is
    its own in-place fill; XLA would otherwise merge equal fills and copy them out, one
    memcpy a moment. Adagrad's 0.1 start is masked, so its pruned entries are zero."""
    params = {f"l{i}": {"kernel": jnp.ones((64, 32)), "bias": jnp.ones(32)} for i in range(3)}
    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3))
    round_ = jax.jit(lambda s: js.imp_round(s, fraction=0.5), donate_argnums=0, keep_unused=True)
    hlo = round_.lower(state).compile().as_text()
    entry = hlo[hlo.index("ENTRY") :]
    assert "f32[64,32]{1,0} copy(" not in entry and "f32[32]{0} copy(" not in entry
    ada = js.SparseTrainState.create(
        apply_fn=None, params=params, tx=optax.adagrad(0.1, initial_accumulator_value=0.1)
    )
    out = jax.jit(lambda s: js.imp_round(s, fraction=0.5))(ada)
    acc = [x for x in jax.tree.leaves(out.opt_state) if x.dtype == jnp.float32]
    for a, m in zip(acc, jax.tree.leaves(out.mask), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.where(np.asarray(m), np.float32(0.1), 0))
    assert sum(int(np.sum(~np.asarray(m))) for m in jax.tree.leaves(out.mask)) > 0


def _distinct_kernels(hlo: str) -> int:
    """The fused computations of a compiled program that differ once names and metadata
    are dropped: what XLA:CPU compiles a kernel for."""
    blocks = re.findall(r"^%fused_computation[^\n]*\{\n(.*?)\n\}", hlo, re.M | re.S)
    return len({re.sub(r"%[\w.\-]+", "%", re.sub(r", metadata=\{[^}]*\}", "", b)) for b in blocks})


def test_imp_round_compiles_no_more_kernels_for_more_leaves():
    """A round over 200 same-shaped layers needs the kernels of 20: the per-leaf loops
    (rewind, zero moments, masks) are one computation a shape. Writing each zero moment
    from a constant of its own once made a kernel a leaf (4x the compile on BERT-base)."""

    def kernels(n):
        params = {f"l{i}": {"kernel": jnp.ones((16, 8)), "bias": jnp.ones(8)} for i in range(n)}
        state = jax.eval_shape(
            lambda p: js.SparseTrainState.create(apply_fn=None, params=p, tx=optax.adam(1e-3)),
            params,
        )
        fn = jax.jit(lambda s: js.imp_round(s, fraction=0.5), donate_argnums=0, keep_unused=True)
        return _distinct_kernels(fn.lower(state).compile().as_text())

    few, many = kernels(20), kernels(200)
    assert few > 10 and many <= few + 5, (few, many)


def test_rewind_step_replaced_on_a_state_created_with_zero_is_refused():
    params = {"w": jnp.ones((2, 3))}
    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.1))
    state = state.replace(rewind_step=jnp.int32(4))
    with pytest.raises(ValueError, match="created with rewind_step=0"):
        state.apply_gradients(grads={"w": jnp.ones((2, 3))})


def test_nnx_model_through_split_and_merge():
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 16, rngs=rngs)
            self.l2 = nnx.Linear(16, 2, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)
    x = jax.random.normal(jax.random.key(1), (32, 4))
    y = jnp.sum(x, axis=1, keepdims=True) * jnp.array([[1.0, -1.0]])

    def loss_fn(p):
        return jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-2))
    step = jax.jit(lambda s: s.apply_gradients(grads=jax.grad(loss_fn)(s.params)))
    for _ in range(20):
        state = step(state)
    ticket = js.imp_round(state, fraction=0.5)
    assert js.check_mask(ticket.mask, params) is None
    assert sum(int(m.sum()) for m in jax.tree.leaves(ticket.mask)) == 16 + 2 + (64 + 32) // 2
    model = nnx.merge(graphdef, ticket.params)
    k = np.asarray(model.l1.kernel[...])
    np.testing.assert_array_equal(k == 0, ~np.asarray(ticket.mask["l1"]["kernel"][...]))


def test_plain_flax_train_state_with_rewind_to():
    params = {"w": jnp.arange(1.0, 9.0).reshape(2, 4)}
    state = train_state.TrainState.create(
        apply_fn=None, params=params, tx=js.masked(optax.adam(1e-2))
    )
    state = state.apply_gradients(grads={"w": jnp.ones((2, 4))})
    new = js.imp_round(state, fraction=0.25, rewind_to=params)
    np.testing.assert_array_equal(
        new.params["w"], np.where(np.arange(1, 9).reshape(2, 4) > 2, params["w"], 0.0)
    )
    assert int(new.step) == 0
    with pytest.raises(ValueError, match="no rewind snapshot"):
        js.imp_round(state)


def test_sparse_state_is_a_pytree_that_vmaps_and_jits():
    states = jax.vmap(
        lambda k: js.SparseTrainState.create(
            apply_fn=None, params={"w": jax.random.normal(k, (3, 3))}, tx=optax.sgd(0.1)
        )
    )(jax.random.split(jax.random.key(0), 4))
    assert states.params["w"].shape == (4, 3, 3)
    pruned = jax.jit(jax.vmap(lambda s: js.imp_round(s, fraction=1 / 3)))(states)
    chex.assert_shape(pruned.mask["w"], (4, 3, 3))
    assert [int(m.sum()) for m in pruned.mask["w"]] == [6, 6, 6, 6]


def test_mask_inside_the_optimizer_zeroes_params_at_create():
    mask = {"w": jnp.array([[True, False], [False, True]])}
    state = js.SparseTrainState.create(
        apply_fn=None,
        params={"w": jnp.arange(1.0, 5.0).reshape(2, 2)},
        tx=js.masked(optax.sgd(0.1), mask),
    )
    np.testing.assert_array_equal(state.params["w"], [[1.0, 0.0], [0.0, 4.0]])
    chex.assert_trees_all_equal(state.mask, mask)


def test_rewinding_before_step_k_is_refused_or_consistent():
    params = {"w": jnp.arange(1.0, 7.0).reshape(2, 3)}
    state = js.SparseTrainState.create(
        apply_fn=None, params=params, tx=optax.adam(1e-2), rewind_step=10
    )
    step = jax.jit(lambda s: s.apply_gradients(grads={"w": jnp.ones((2, 3))}))
    for _ in range(3):
        state = step(state)
    with pytest.raises(ValueError, match="at step 3 but rewind_step is 10"):
        js.imp_round(state)
    # under jit: the creation snapshot, consistently (params, optimizer count and step 0)
    ticket = jax.jit(js.imp_round)(state)
    assert int(ticket.step) == 0
    assert int(ticket.opt_state.inner_state[0].count) == 0
    np.testing.assert_array_equal(ticket.params["w"], np.where(ticket.mask["w"], params["w"], 0))


def test_random_reinit_restarts_at_k_with_fresh_moments():
    sched = optax.linear_schedule(1.0, 0.0, 20)
    state = js.SparseTrainState.create(
        apply_fn=None, params={"w": jnp.ones((3, 3))}, tx=optax.adam(sched), rewind_step=4
    )
    step = jax.jit(lambda s: s.apply_gradients(grads={"w": jnp.full((3, 3), 0.5)}))
    for _ in range(6):
        state = step(state)
    ticket = js.imp_round(state, fraction=0.5)
    rr = js.random_reinit(ticket, lambda k: {"w": jax.random.normal(k, (3, 3))}, jax.random.key(0))
    assert int(rr.step) == 4 == int(ticket.step)
    adam = rr.opt_state.inner_state[0]
    assert int(adam.count) == 4  # the schedule resumes where the ticket's does
    assert float(jnp.abs(adam.mu["w"]).sum()) == 0.0 and float(adam.nu["w"].sum()) == 0.0
    assert float(jnp.abs(ticket.opt_state.inner_state[0].mu["w"]).sum()) > 0.0


def test_mask_moments_keeps_integer_counts_with_scalar_params():
    from jaxsparse.state import mask_moments

    opt = optax.adam(0.1)
    s = opt.init(jnp.float32(2.0))
    s = (s[0]._replace(count=jnp.int32(7), mu=jnp.float32(0.3)), *s[1:])
    out = mask_moments(s, jnp.bool_(False), jnp.float32(2.0))
    assert int(out[0].count) == 7 and float(out[0].mu) == 0.0
