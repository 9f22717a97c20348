"""Group specs by value: scores, exact group pruning, expand, shrink, and masked training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse as js
from jaxsparse import structured
from tests._structured_models import CNN, MLP, init_variables, prune_groups


def _rel_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def _tie_free(gs, seed=0):
    """Distinct random scores with the group sets' lengths."""
    rng = np.random.default_rng(seed)
    total = sum(v.shape[0] for v in gs.values())
    vals = rng.permutation(total).astype(np.float32)
    out, i = {}, 0
    for k in gs:
        n = gs[k].shape[0]
        out[k], i = jnp.asarray(vals[i : i + n]), i + n
    return out


def _cnn(widths=(6, 8, 10), seed=0):
    model = CNN(widths)
    x = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((4, 6, 6, 2)), jnp.float32)
    return model, init_variables(model, x, seed), x


# --- spec validation --------------------------------------------------------------------


def test_check_spec_counts_groups_and_names_bad_slices():
    params = {
        "a": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
        "b": {"kernel": jnp.ones((5, 2))},
    }
    assert structured.check_spec({"a": [("a/kernel", -1), ("a/bias", 0)]}, params) == {"a": 4}
    with pytest.raises(ValueError, match=r"'a/kernel' has 4 along axis 1 but 'b/kernel' has 5"):
        structured.check_spec({"a": [("a/kernel", 1), ("b/kernel", 0)]}, params)
    with pytest.raises(ValueError, match=r"regex 'c/kernel' matches no leaf"):
        structured.check_spec({"a": [("a/kernel", 1), ("c/kernel", 0)]}, params)
    with pytest.raises(ValueError, match=r"axis 2 is out of range for 'a/kernel'"):
        structured.check_spec({"a": [("a/kernel", 2)]}, params)
    with pytest.raises(ValueError, match=r"axis 1 of 'a/kernel' is in two sets, 'x' and 'y'"):
        structured.check_spec({"x": [("a/kernel", 1)], "y": [("a/kernel", -1)]}, params)
    for bad in ({"a": [("a/kernel",)]}, {"a": "a/kernel"}, {"a": [("a/kernel", 1.0)]}, {}):
        with pytest.raises(TypeError, match="group spec"):
            structured.check_spec(bad, params)


def test_group_mask_must_match_the_spec():
    params = {"a": {"kernel": jnp.ones((3, 4))}}
    spec = {"a": [("a/kernel", 1)]}
    with pytest.raises(ValueError, match=r"missing sets \['a'\], unexpected sets \['b'\]"):
        structured.expand({"b": jnp.ones(4, bool)}, spec, params)
    with pytest.raises(ValueError, match=r"group_mask\['a'\] has shape \(3,\)"):
        structured.expand({"a": jnp.ones(3, bool)}, spec, params)
    with pytest.raises(TypeError, match="expected bool"):
        structured.shrink(params, {"a": jnp.ones(4)}, spec)
    with pytest.raises(TypeError, match="cannot run under jit"):
        jax.jit(lambda g: structured.shrink(params, g, spec))({"a": jnp.ones(4, bool)})


# --- scores -----------------------------------------------------------------------------


def test_group_scores_l1_l2_by_value():
    _, variables, _ = _cnn()
    params = variables["params"]
    spec = structured.channels(params)
    for how, f in (("l1", np.abs), ("l2", np.square)):
        gs = jax.jit(lambda p, how=how: structured.group_scores(p, spec, how))(params)
        k0, k1 = np.asarray(params["Conv_0"]["kernel"]), np.asarray(params["Conv_1"]["kernel"])
        bn = params["BatchNorm_0"]
        want = (
            f(k0).sum(axis=(0, 1, 2))
            + f(np.asarray(params["Conv_0"]["bias"]))
            + f(np.asarray(bn["scale"]))
            + f(np.asarray(bn["bias"]))
            + f(k1).sum(axis=(0, 1, 3))
        )
        want = want if how == "l1" else np.sqrt(want)
        np.testing.assert_allclose(gs["Conv_0"], want, rtol=1e-5)
        assert {k: v.shape for k, v in gs.items()} == {
            "Conv_0": (6,),
            "Conv_1": (8,),
            "Conv_2": (10,),
        }
    gamma = structured.group_scores(params, spec, where=r"BatchNorm_\d+/scale")
    for i in range(3):
        np.testing.assert_allclose(
            gamma[f"Conv_{i}"], np.abs(params[f"BatchNorm_{i}"]["scale"]), rtol=1e-6
        )
    with pytest.raises(ValueError, match="how must be"):
        structured.group_scores(params, spec, "l0")
    with pytest.raises(ValueError, match="picks no leaf of set"):
        structured.group_scores(params, spec, where="nothing")


# --- exact group pruning ----------------------------------------------------------------


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_group_prune_counts_are_exact_and_nested(scope):
    _, variables, _ = _cnn(widths=(7, 9, 13))
    params = variables["params"]
    spec = structured.channels(params)
    gs = _tie_free({k: jnp.zeros(n) for k, n in structured.check_spec(spec, params).items()})
    gmask = js.mask_like(gs)
    alive = {k: v.shape[0] for k, v in gs.items()}
    prune = jax.jit(lambda g: js.prune(gs, g, 0.3, scope=scope, where=js.all_leaves))
    for _ in range(3):
        new = prune(gmask)
        got = {k: int(v.sum()) for k, v in new.items()}
        if scope == "layerwise":
            assert got == {k: a - round(0.3 * a) for k, a in alive.items()}
        else:
            total = sum(alive.values())
            assert sum(got.values()) == total - round(0.3 * total)
            # the survivors are the highest scores among the alive groups
            flat_s = np.concatenate([gs[k] for k in gs])
            flat_old = np.concatenate([gmask[k] for k in gs])
            flat_new = np.concatenate([new[k] for k in gs])
            assert flat_s[flat_new].min() > flat_s[flat_old & ~flat_new].max()
        assert all(bool(jnp.all(new[k] <= gmask[k])) for k in gs)
        gmask, alive = new, got
    # the expanded param mask has exactly the counts the group mask implies
    mask = jax.jit(lambda g: structured.expand(g, spec, params))(gmask)
    a = [int(gmask[f"Conv_{i}"].sum()) for i in range(3)]
    assert int(mask["Conv_0"]["kernel"].sum()) == 9 * 2 * a[0]
    assert int(mask["Conv_1"]["kernel"].sum()) == 9 * a[0] * a[1]
    assert int(mask["Conv_2"]["kernel"].sum()) == 9 * a[1] * a[2]
    assert int(mask["Dense_0"]["kernel"].sum()) == a[2] * 5
    assert int(mask["BatchNorm_1"]["scale"].sum()) == a[1]
    assert bool(mask["Dense_0"]["bias"].all())


def test_expand_by_value_and_under_jit():
    _, variables, _ = _cnn()
    params = variables["params"]
    spec = structured.channels(params)
    gmask = {
        "Conv_0": jnp.array([1, 0, 1, 1, 0, 1], bool),
        "Conv_1": jnp.array([0, 1, 1, 1, 1, 1, 1, 0], bool),
        "Conv_2": jnp.ones(10, bool).at[3].set(False),
    }
    traces = []

    @jax.jit
    def run(g):
        traces.append(None)
        return structured.expand(g, spec, params)

    mask = run(gmask)
    run(jax.tree.map(lambda g: ~g, gmask))  # a new group mask is data: no recompile
    assert len(traces) == 1
    g0, g1 = np.asarray(gmask["Conv_0"]), np.asarray(gmask["Conv_1"])
    k1 = np.asarray(mask["Conv_1"]["kernel"])
    np.testing.assert_array_equal(k1, np.broadcast_to(g0[:, None] & g1[None, :], k1.shape))
    np.testing.assert_array_equal(mask["BatchNorm_0"]["bias"], g0)
    np.testing.assert_array_equal(mask["Conv_0"]["bias"], g0)
    np.testing.assert_array_equal(mask["Dense_0"]["kernel"][:, 0], gmask["Conv_2"])
    # apply_mask keeps alive groups untouched and zeroes every slice of the pruned ones
    masked = js.apply_mask(params, mask)
    np.testing.assert_array_equal(
        masked["Conv_1"]["kernel"][..., g1], params["Conv_1"]["kernel"][..., g1] * g0[:, None]
    )
    assert not np.any(np.asarray(masked["Conv_1"]["kernel"])[:, :, ~g0, :])


# --- masked training: pruned groups stay zero, alive groups train as in the small net ----


def test_pruned_neurons_stay_zero_under_masked_adam_and_alive_match_the_shrunk_net():
    x = jax.random.normal(jax.random.key(3), (32, 5))
    y = jax.random.normal(jax.random.key(4), (32, 3))
    model = MLP((12, 10))
    params = init_variables(model, x)["params"]
    spec = structured.neurons(params)
    assert set(spec) == {"Dense_0", "Dense_1"}
    gmask, mask = prune_groups(params, spec, 0.4)
    small_params, widths = structured.shrink(params, gmask, spec)
    assert widths == {k: int(v.sum()) for k, v in gmask.items()}

    def train(model, params, tx, steps=100):
        def loss(p):
            return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

        def step(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, tx.init(params)), length=steps)[0][0]

    params = js.apply_mask(params, mask)  # the ticket starts at zero where pruned
    full = jax.jit(lambda p: train(model, p, js.masked(optax.adam(1e-2), mask)))(params)
    small = jax.jit(
        lambda p: train(MLP((widths["Dense_0"], widths["Dense_1"])), p, optax.adam(1e-2))
    )(small_params)
    # every slice of a pruned group is exactly 0 after 100 steps
    jax.tree.map(
        lambda p, m: np.testing.assert_array_equal(np.asarray(p)[~np.asarray(m)], 0), full, mask
    )
    g0 = np.asarray(gmask["Dense_0"])
    assert not np.any(np.asarray(full["Dense_1"]["kernel"])[~g0, :])
    # alive groups trained exactly as the physically smaller network did
    back, _ = structured.shrink(full, gmask, spec)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), back, small)
    assert _rel_err(back["Dense_0"]["kernel"], small_params["Dense_0"]["kernel"]) > 1e-2


def test_pruned_channels_stay_zero_under_masked_adam_with_batchnorm():
    model, variables, x = _cnn()
    params, stats = variables["params"], variables["batch_stats"]
    spec = structured.channels(params)
    _, mask = prune_groups(params, spec, 0.5, "layerwise", how="l1", score_where="BatchNorm")
    params = js.apply_mask(params, mask)
    tx = js.masked(optax.adam(1e-2), mask)

    @jax.jit
    def train(params, stats):
        def step(carry, _):
            p, s, bs = carry

            def loss(p):
                out, upd = model.apply(
                    {"params": p, "batch_stats": bs}, x, train=True, mutable=["batch_stats"]
                )
                return jnp.mean((out - 1.0) ** 2), upd["batch_stats"]

            g, bs = jax.grad(loss, has_aux=True)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s, bs), None

        return jax.lax.scan(step, (params, tx.init(params), stats), length=100)[0]

    trained, _, _ = train(params, stats)
    for path, p, m in zip(
        js.filters.leaf_paths(trained), jax.tree.leaves(trained), jax.tree.leaves(mask)
    ):
        p, m = np.asarray(p), np.asarray(m)
        assert np.all(p[~m] == 0), path
    moved = np.asarray(trained["Conv_1"]["kernel"] != params["Conv_1"]["kernel"])
    np.testing.assert_array_equal(moved, np.asarray(mask["Conv_1"]["kernel"]))
