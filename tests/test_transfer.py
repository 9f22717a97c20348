"""transfer: masks and tickets carried by path (Linen and NNX), reports, errors, training."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsparse as js
from jaxsparse.transfer import Ticket, TransferReport, apply_ticket, ticket, transfer_mask


class Net(nn.Module):
    classes: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(8)(x))
        x = nn.relu(nn.Dense(8)(x))
        return nn.Dense(self.classes)(x)


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(4, 8, rngs=rngs), nnx.Linear(8, 8, rngs=rngs)])
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = nnx.relu(layer(x))
        return self.out(x)


def linen_params(classes=3, seed=0):
    return Net(classes).init(jax.random.key(seed), jnp.ones((1, 4)))["params"]


def random_mask(tree, seed=0, p=0.5):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.random(x.shape) < p), tree)


LINEN_TO_NNX = {r"^Dense_([01])/": r"layers/\1/", r"^Dense_2/": "out/"}
NNX_TO_LINEN = {r"^layers/(\d)/": r"Dense_\1/", r"^out/": "Dense_2/"}


def test_transfer_mask_by_path_and_rename_by_value():
    src = {
        "enc": {"a": jnp.array([[True, False], [False, True]]), "b": jnp.array([False, True])},
        "old_head": jnp.zeros((2, 3), bool),
    }
    tgt = {
        "backbone": {"a": jnp.ones((2, 2)), "b": jnp.ones(2)},
        "head": jnp.ones((2, 5)),
    }
    new, report = transfer_mask(src, tgt, rename={"^enc/": "backbone/"})
    np.testing.assert_array_equal(new["backbone"]["a"], src["enc"]["a"])
    np.testing.assert_array_equal(new["backbone"]["b"], src["enc"]["b"])
    assert new["head"].dtype == jnp.bool_ and bool(new["head"].all())
    assert report == TransferReport(
        matched=(("enc/a", "backbone/a", 4), ("enc/b", "backbone/b", 2)),
        dense=(("head", 10),),
        dropped=(("old_head", 6),),
    )
    lines = str(report).splitlines()
    assert lines[0].split() == ["status", "source", "target", "weights"]
    assert lines[1].split() == ["matched", "enc/a", "backbone/a", "4"]
    assert lines[-1] == "matched 2 leaves (6 weights), left dense 1 (10), dropped 1 (6)"


def test_rename_first_pattern_wins_re_sub_groups_and_none_drops():
    src = {"blk1": {"w": jnp.ones((1, 2), bool)}, "blk2": {"w": jnp.zeros((1, 2), bool)}}
    tgt = {"layer_1": {"w": jnp.zeros((1, 2))}, "layer_2": {"w": jnp.zeros((1, 2))}}
    # first pattern drops blk2 even though the second would also match it
    new, report = transfer_mask(src, tgt, rename={"^blk2": None, r"^blk(\d)": r"layer_\1"})
    assert bool(new["layer_1"]["w"].all()) and bool(new["layer_2"]["w"].all())
    assert report.matched == (("blk1/w", "layer_1/w", 2),)
    assert report.dense == (("layer_2/w", 2),) and report.dropped == (("blk2/w", 2),)
    # a None drop never raises under extra="raise"
    transfer_mask(src, tgt, rename={"^blk2": None, r"^blk(\d)": r"layer_\1"}, extra="raise")


def test_transfer_onto_the_same_structure_is_the_identity():
    params = linen_params()
    for seed in range(3):
        mask = random_mask(params, seed)
        new, report = transfer_mask(mask, params)
        chex.assert_trees_all_equal(new, mask)
        assert report.dense == () and report.dropped == ()
        assert [s for s, t, _ in report.matched] == [t for _, t, _ in report.matched]


def test_linen_and_nnx_round_trip_both_ways():
    params = linen_params()
    mask = random_mask(params, 1)
    _, nnx_state = nnx.split(NnxNet(nnx.Rngs(0)), nnx.Param)
    pure = nnx.to_pure_dict(nnx_state)

    # Linen -> nnx.State: the result is a State of bools in the State's structure
    as_state, report = transfer_mask(mask, nnx_state, rename=LINEN_TO_NNX, missing="raise")
    assert isinstance(as_state, nnx.State)
    assert jax.tree.structure(as_state) == jax.tree.structure(nnx_state)
    np.testing.assert_array_equal(as_state["layers"][1]["kernel"][...], mask["Dense_1"]["kernel"])
    assert len(report.matched) == 6 and not report.dense and not report.dropped
    # Linen -> pure dict, and the State and the pure dict agree
    as_pure, _ = transfer_mask(mask, pure, rename=LINEN_TO_NNX, missing="raise", extra="raise")
    chex.assert_trees_all_equal(as_pure, nnx.to_pure_dict(as_state))
    # back to Linen from either, exactly the original
    for source in (as_state, as_pure):
        back, _ = transfer_mask(source, params, rename=NNX_TO_LINEN, missing="raise", extra="raise")
        chex.assert_trees_all_equal(back, mask)
    # a whole Linen ticket applied to the NNX model computes what the Linen ticket does
    graphdef, _ = nnx.split(NnxNet(nnx.Rngs(0)), nnx.Param)
    weights, _, _ = apply_ticket(ticket(params, mask), nnx_state, rename=LINEN_TO_NNX)
    x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    want = Net().apply({"params": js.apply_mask(params, mask)}, x)
    np.testing.assert_allclose(nnx.merge(graphdef, weights)(x), want, rtol=1e-6)


def test_errors_name_paths_shapes_and_arguments():
    src = {"a": {"kernel": jnp.ones((3, 4), bool)}, "x": jnp.ones(2, bool)}
    tgt = {"b": {"kernel": jnp.ones((4, 4))}, "y": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"'a/kernel' has shape \(3, 4\).*'b/kernel'.*\(4, 4\)"):
        transfer_mask(src, tgt, rename={"^a/": "b/"})
    with pytest.raises(ValueError, match=r"missing='raise'.*'b/kernel'"):
        transfer_mask(src, tgt, missing="raise")
    with pytest.raises(ValueError, match=r"extra='raise'.*'a/kernel'"):
        transfer_mask(src, tgt, extra="raise")
    with pytest.raises(ValueError, match="missing= must be 'dense' or 'raise', got 'drop'"):
        transfer_mask(src, tgt, missing="drop")
    with pytest.raises(ValueError, match="extra= must be 'drop' or 'raise', got 'dense'"):
        transfer_mask(src, tgt, extra="dense")
    with pytest.raises(ValueError, match="'a/kernel' and 'x' both map to target path 'b/kernel'"):
        transfer_mask(src, tgt, rename={"^a/": "b/", "^x$": "b/kernel"})
    with pytest.raises(ValueError, match="not a valid regex"):
        transfer_mask(src, tgt, rename={"(": "b"})
    with pytest.raises(TypeError, match="rename"):
        transfer_mask(src, tgt, rename=[("a", "b")])
    with pytest.raises(TypeError, match="leaf 'x' has dtype float32"):
        transfer_mask({"x": jnp.ones(2)}, tgt)
    pair = ({"b": {"kernel": jnp.ones((4, 4), bool)}}, {"b": {"kernel": jnp.ones((4, 4))}})
    with pytest.raises(ValueError, match=r"apply_ticket: source leaf 'b/kernel' .*\(4, 4\).*'a/"):
        apply_ticket(pair, {"a": {"kernel": jnp.ones((3, 4))}}, rename={"^b/": "a/"})


def test_output_takes_the_target_sharding_and_works_under_jit():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("x", "y"))
    rows, cols = NamedSharding(mesh, P("x", None)), NamedSharding(mesh, P(None, "y"))
    src_mask = {"w": jax.device_put(jnp.arange(32).reshape(8, 4) % 3 > 0, cols)}
    src_w = {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4), cols)}
    tgt = {
        "w": jax.device_put(jnp.zeros((8, 4)), rows),
        "head": jax.device_put(jnp.zeros((8, 2)), rows),
    }
    new, _ = transfer_mask(src_mask, tgt)
    assert new["w"].sharding == rows and new["head"].sharding == rows
    np.testing.assert_array_equal(new["w"], src_mask["w"])
    params, mask, _ = apply_ticket(ticket(src_w, src_mask), tgt)
    assert params["w"].sharding == rows and mask["w"].sharding == rows
    np.testing.assert_array_equal(params["w"], np.where(src_mask["w"], src_w["w"], 0))
    jitted = jax.jit(lambda m, p: transfer_mask(m, p)[0])(src_mask, tgt)
    chex.assert_trees_all_equal(jitted, new)


def test_ticket_from_states_and_params(tmp_path):
    params = linen_params()
    m1 = random_mask(params, 2)
    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.1), mask=m1)
    state = state.apply_gradients(grads=jax.tree.map(jnp.ones_like, params))
    t = ticket(state)  # the weights to rewind to: the snapshot (k = 0: init), masked
    chex.assert_trees_all_equal(t.mask, m1)
    chex.assert_trees_all_equal(t.params, js.apply_mask(params, m1))
    assert not np.allclose(state.params["Dense_0"]["kernel"], t.params["Dense_0"]["kernel"])
    # an explicit mask overrides the state's; plain params need one
    m2 = random_mask(params, 3)
    chex.assert_trees_all_equal(ticket(state, m2).params, js.apply_mask(params, m2))
    chex.assert_trees_all_equal(ticket(params, m2), ticket(state, m2))
    with pytest.raises(TypeError, match="mask is required"):
        ticket(params)
    plain = train_state.TrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.1))
    with pytest.raises(TypeError, match="TrainState keeps no rewind snapshot"):
        ticket(plain)
    with pytest.raises(ValueError, match="ticket: mask"):
        ticket(params, {"w": jnp.ones(2, bool)})
    # the checkpoint format stores it as is
    js.checkpoint.save_ticket(tmp_path / "t", *t, {"round": 1})
    loaded = Ticket(*js.checkpoint.load_ticket(tmp_path / "t", params)[:2])
    chex.assert_trees_all_equal(loaded, t)


def test_apply_ticket_new_head_keeps_its_values_and_dtypes_follow_the_target():
    src = linen_params(classes=3, seed=0)
    t = ticket(src, random_mask(src, 5))
    tgt = jax.tree.map(lambda x: x.astype(jnp.bfloat16), linen_params(classes=7, seed=1))
    params, mask, report = apply_ticket(t, tgt, rename={"^Dense_2/": None})
    for name in ("Dense_0", "Dense_1"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(mask[name][leaf], t.mask[name][leaf])
            np.testing.assert_array_equal(
                params[name][leaf], t.params[name][leaf].astype(jnp.bfloat16)
            )
            assert params[name][leaf].dtype == jnp.bfloat16
    chex.assert_trees_all_equal(params["Dense_2"], tgt["Dense_2"])
    assert all(bool(m.all()) for m in jax.tree.leaves(mask["Dense_2"]))
    assert [p for p, _ in report.dense] == ["Dense_2/bias", "Dense_2/kernel"]
    assert [p for p, _ in report.dropped] == ["Dense_2/bias", "Dense_2/kernel"]


def _data(classes, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(4, classes)), axis=1)
    return jnp.asarray(x), jnp.asarray(y)


def _alive(mask):
    return sum(int(m.sum()) for m in jax.tree.leaves(mask) if m.ndim >= 2)


def test_transferred_ticket_trains_under_masked_adam_and_imp_rewinds_to_it():
    # a "pre-trained" source model and a ticket on it (kernels half pruned)
    pretrained = linen_params(classes=3, seed=0)
    mask = jax.tree.map(lambda m: m if m.ndim >= 2 else jnp.ones_like(m), random_mask(pretrained))
    t = ticket(pretrained, mask)
    # the downstream task has 5 classes: a new head, the body from the ticket
    model = Net(5)
    params, new_mask, _ = apply_ticket(t, linen_params(5, seed=2), rename={"^Dense_2/": None})
    x, y = _data(5, 0)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(
            model.apply({"params": p}, x), y
        ).mean()

    tx = js.masked(optax.adam(1e-2), new_mask)
    opt = tx.init(params)

    @jax.jit
    def step(p, o):
        g = jax.grad(loss)(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    p = params
    for _ in range(10):
        p, opt = step(p, opt)
    trees = jax.device_get((p, new_mask, params))
    for w, m, w0 in zip(*map(jax.tree.leaves, trees)):
        assert (w[~m] == 0).all()  # pruned stay exactly 0
        assert not np.allclose(w[m], w0[m])  # alive ones trained
    loss_jit = jax.jit(loss)
    assert float(loss_jit(p)) < float(loss_jit(params))

    # IMP on the downstream task, rewinding to the transferred weights
    state = js.SparseTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2), mask=new_mask
    )
    state = state.replace(params=p)  # the trained weights decide what is pruned next
    n_before = _alive(new_mask)
    state = jax.jit(lambda s, r: js.imp_round(s, fraction=0.2, rewind_to=r))(state, params)
    assert _alive(state.mask) == n_before - round(0.2 * n_before)
    for m_new, m_old in zip(jax.tree.leaves(state.mask), jax.tree.leaves(new_mask)):
        assert not bool((m_new & ~m_old).any())  # nested
    chex.assert_trees_all_equal(state.params, js.apply_mask(params, state.mask))
    assert int(state.step) == 0 and int(state.round) == 1
