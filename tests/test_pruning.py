"""``jaxsparse.prune`` against a plain NumPy sort-based reference, plus its invariants."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsparse as js
from jaxsparse.pruning import _prune

SHAPES = {
    "params": {
        "Conv_0": {"kernel": (3, 3, 2, 4), "bias": (4,)},
        "Dense_0": {"kernel": (8, 16), "bias": (16,)},
        "Dense_1": {"kernel": (16, 5), "bias": (5,)},
        "LayerNorm_0": {"scale": (16,), "bias": (16,)},
    }
}
LEAF_PATHS = [
    "params/Conv_0/bias",
    "params/Conv_0/kernel",
    "params/Dense_0/bias",
    "params/Dense_0/kernel",
    "params/Dense_1/bias",
    "params/Dense_1/kernel",
    "params/LayerNorm_0/bias",
    "params/LayerNorm_0/scale",
]
KERNEL = [False, True, False, True, False, True, False, False]  # default filter, leaf order


def _is_shape(x):
    return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def tie_free_params(seed: int):
    """Random weights whose magnitudes are all distinct across the whole tree."""
    rng = np.random.default_rng(seed)
    shapes, treedef = jax.tree.flatten(SHAPES, is_leaf=_is_shape)
    total = sum(int(np.prod(s)) for s in shapes)
    mags = (rng.permutation(total) + 1).astype(np.float32) / total
    vals = mags * rng.choice(np.float32([-1, 1]), total)
    out, i = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(jnp.asarray(vals[i : i + n].reshape(s)))
        i += n
    return jax.tree.unflatten(treedef, out)


# --- the NumPy reference ---------------------------------------------------------------


def _remove_lowest(scores: np.ndarray, alive: np.ndarray, k: int) -> np.ndarray:
    """New alive vector: the k lowest alive scores removed (stable: earlier first)."""
    idx = np.flatnonzero(alive)
    order = np.argsort(scores[idx], kind="stable")
    new = alive.copy()
    new[idx[order[:k]]] = False
    return new


def ref_layerwise(scores_leaves, mask_leaves, amount, sel=KERNEL):
    out = []
    for s, m, chosen in zip(scores_leaves, mask_leaves, sel):
        s, m = np.asarray(s, np.float64), np.asarray(m)
        if not chosen:
            out.append(m)
            continue
        k = round(amount * int(m.sum()))
        out.append(_remove_lowest(s.ravel(), m.ravel(), k).reshape(m.shape))
    return out


def ref_global(scores_leaves, mask_leaves, amount, sel=KERNEL):
    chosen = [i for i, c in enumerate(sel) if c]
    s = np.concatenate([np.asarray(scores_leaves[i], np.float64).ravel() for i in chosen])
    m = np.concatenate([np.asarray(mask_leaves[i]).ravel() for i in chosen])
    new = _remove_lowest(s, m, round(amount * int(m.sum())))
    out, pos = [np.asarray(x) for x in mask_leaves], 0
    for i in chosen:
        n = out[i].size
        out[i] = new[pos : pos + n].reshape(out[i].shape)
        pos += n
    return out


def assert_leaves_equal(mask, ref):
    leaves = jax.tree.leaves(mask)
    assert len(leaves) == len(ref)
    for path, got, want in zip(LEAF_PATHS, leaves, ref):
        assert got.dtype == jnp.bool_, path
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=path)


# Compiled once each and reused; the amount is traced data (float32).
_prune_layerwise = jax.jit(functools.partial(js.prune, scope="layerwise"))
_prune_global = jax.jit(functools.partial(js.prune, scope="global"))
_PRUNE = {"layerwise": _prune_layerwise, "global": _prune_global}
_REF = {"layerwise": ref_layerwise, "global": ref_global}


# --- against the reference -------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_five_nested_rounds_match_numpy(scope):
    mask = js.mask_like(tie_free_params(0))
    ref = jax.tree.leaves(mask)
    prune_static = jax.jit(functools.partial(js.prune, amount=0.2, scope=scope))
    for r in range(5):
        # the weights move between rounds (as in training); only alive entries count
        scores = js.scores.magnitude(tie_free_params(100 + r))
        mask = prune_static(scores, mask)
        ref = _REF[scope](jax.tree.leaves(scores), ref, 0.2)
        assert_leaves_equal(mask, ref)
    # non-kernels (biases, norms) stay all-True under the default filter
    for path, leaf, chosen in zip(LEAF_PATHS, jax.tree.leaves(mask), KERNEL):
        if not chosen:
            assert bool(jnp.all(leaf)), path
    # the exact count after five rounds of round(0.2 * alive)
    alive = {"layerwise": [72, 128, 80], "global": [280]}[scope]
    for _ in range(5):
        alive = [a - round(0.2 * a) for a in alive]
    got = [int(jnp.sum(x)) for x, c in zip(jax.tree.leaves(mask), KERNEL) if c]
    assert (got if scope == "layerwise" else [sum(got)]) == alive


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    amount=st.floats(0.0, 0.96875, width=32),
    scope=st.sampled_from(["layerwise", "global"]),
)
def test_traced_amount_matches_numpy_and_counts(seed, amount, scope):
    old_tree = _prune_layerwise(_scores(seed + 1), js.mask_like(SHAPES_P), jnp.float32(0.3))
    old = [np.asarray(x) for x in jax.tree.leaves(old_tree)]
    scores = _scores(seed)
    new = _PRUNE[scope](scores, old_tree, jnp.float32(amount))
    a = float(np.float32(amount))  # the traced amount is the float32 value, used exactly
    assert_leaves_equal(new, _REF[scope](jax.tree.leaves(scores), old, a))
    new_l = [np.asarray(x) for x in jax.tree.leaves(new)]
    # nested: new <= old, and exactly round(a * alive) removed
    for n, o in zip(new_l, old):
        assert not np.any(n & ~np.asarray(o))
    alive_old = [int(np.sum(o)) for o, c in zip(old, KERNEL) if c]
    alive_new = [int(np.sum(n)) for n, c in zip(new_l, KERNEL) if c]
    if scope == "layerwise":
        assert [o - n for o, n in zip(alive_old, alive_new)] == [round(a * o) for o in alive_old]
    else:
        assert sum(alive_old) - sum(alive_new) == round(a * sum(alive_old))


SHAPES_P = tie_free_params(0)


def _scores(seed):
    return js.scores.magnitude(tie_free_params(seed))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scope=st.sampled_from(["layerwise", "global"]))
def test_amount_zero_is_identity(seed, scope):
    mask = _PRUNE[scope](_scores(seed), js.mask_like(SHAPES_P), jnp.float32(0.5))
    again = _PRUNE[scope](_scores(seed + 7), mask, jnp.float32(0.0))
    for x, y in zip(jax.tree.leaves(again), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    static = _PRUNE_ZERO[scope](_scores(seed + 7), mask)
    for x, y in zip(jax.tree.leaves(static), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


_PRUNE_ZERO = {
    scope: jax.jit(functools.partial(js.prune, amount=0.0, scope=scope))
    for scope in ("layerwise", "global")
}


# --- rounding: torch.nn.utils.prune semantics = Python round(amount * n) ----------------


ROUNDING_CASES = [
    (0.1, 5),  # 0.5 in float64: rounds to 0
    (0.5, 7),  # 3.5 -> 4
    (0.25, 10),  # 2.5 -> 2
    (0.3, 5),  # 1.5 -> 2
    (0.7, 15),  # 10.5 in float64 -> 10
]


def test_rounding_is_python_round():
    # one leaf per case, its fraction given through rates= (static Python floats)
    w = {
        f"c{i:02d}": jnp.arange(1.0, n + 1.0).reshape(1, n)
        for i, (_, n) in enumerate(ROUNDING_CASES)
    }
    rates = {f"^c{i:02d}$": a for i, (a, _) in enumerate(ROUNDING_CASES)}
    assert [round(a * n) for a, n in ROUNDING_CASES] == [0, 4, 2, 2, 10]
    mask = jax.jit(functools.partial(js.prune, amount=0.0, rates=rates))(w, js.mask_like(w))
    for i, (a, n) in enumerate(ROUNDING_CASES):
        k = round(a * n)
        # exactly the k smallest are gone
        np.testing.assert_array_equal(np.asarray(mask[f"c{i:02d}"][0]), np.arange(n) >= k)
    # the same through amount= itself (eager, global)
    w7 = {"w": jnp.arange(1.0, 8.0).reshape(1, 7)}
    m = js.prune(w7, js.mask_like(w7), 0.5, scope="global")
    np.testing.assert_array_equal(np.asarray(m["w"][0]), np.arange(7) >= 4)


# --- per-leaf targets and rates --------------------------------------------------------


_prune_targets = jax.jit(js.prune)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    t=st.lists(st.floats(0.0, 0.96875, width=32), min_size=3, max_size=3),
)
def test_per_leaf_targets_reach_exact_counts(seed, t):
    it = iter(t)
    targets = jax.tree.map(lambda c: next(it) if c else 0.0, _kernel_tree())
    tj = jax.tree.map(jnp.float32, targets)
    mask = _prune_targets(_scores(seed), js.mask_like(SHAPES_P), tj)
    for m, tt, c in zip(jax.tree.leaves(mask), jax.tree.leaves(targets), KERNEL):
        dead = m.size - int(jnp.sum(m))
        assert dead == (round(float(np.float32(tt)) * m.size) if c else 0)
    # from a mask already sparser than a target, nothing more is pruned and nothing revives
    sparse = _prune_targets(_scores(seed + 1), mask, jax.tree.map(lambda x: x * 0.5, tj))
    for x, y in zip(jax.tree.leaves(sparse), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the pruned ones are the lowest-scored, like the reference at the right count
    scores = jax.tree.leaves(_scores(seed))
    for s, m, tt, c in zip(scores, jax.tree.leaves(mask), jax.tree.leaves(targets), KERNEL):
        if c:
            k = round(float(np.float32(tt)) * m.size)
            want = _remove_lowest(np.asarray(s).ravel(), np.ones(m.size, bool), k)
            np.testing.assert_array_equal(np.asarray(m).ravel(), want)


def _kernel_tree():
    it = iter(KERNEL)
    return jax.tree.map(lambda _: next(it), SHAPES_P)


def test_static_targets_eager():
    targets = jax.tree.map(lambda c: 0.55 if c else 0.0, _kernel_tree())
    mask = js.prune(_scores(3), js.mask_like(SHAPES_P), targets)
    for m, c in zip(jax.tree.leaves(mask), KERNEL):
        assert m.size - int(jnp.sum(m)) == (round(0.55 * m.size) if c else 0)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_rates_override_matching_leaves(scope):
    scores = _scores(5)
    mask = js.mask_like(SHAPES_P)
    rates = {"Dense_1": 0.1, "Conv": 0.5}
    new = js.prune(scores, mask, 0.2, scope=scope, rates=rates)
    s_leaves, m_leaves = jax.tree.leaves(scores), jax.tree.leaves(mask)
    got = [np.asarray(x) for x in jax.tree.leaves(new)]
    # overridden leaves: layerwise at their own rate
    conv = ref_layerwise(s_leaves, m_leaves, 0.5, sel=[i == 1 for i in range(8)])[1]
    dense1 = ref_layerwise(s_leaves, m_leaves, 0.1, sel=[i == 5 for i in range(8)])[5]
    np.testing.assert_array_equal(got[1], conv)
    np.testing.assert_array_equal(got[5], dense1)
    assert 72 - got[1].sum() == 36 and 80 - got[5].sum() == 8
    # the rest (Dense_0 only) by amount and scope; global over a single leaf = layerwise
    np.testing.assert_array_equal(got[3], ref_layerwise(s_leaves, m_leaves, 0.2)[3])
    assert 128 - got[3].sum() == round(0.2 * 128)
    # jitted, same answer; first matching pattern wins
    jitted = jax.jit(functools.partial(js.prune, amount=0.2, scope=scope, rates=rates))
    assert_leaves_equal(jitted(scores, mask), got)
    first = js.prune(scores, mask, 0.2, scope=scope, rates={"Dense_1": 0.5, "Dense": 0.0})
    assert 80 - int(jnp.sum(first["params"]["Dense_1"]["kernel"])) == 40
    np.testing.assert_array_equal(np.asarray(first["params"]["Dense_0"]["kernel"]), True)


def test_rates_global_pool_excludes_overridden():
    scores = _scores(6)
    mask = js.mask_like(SHAPES_P)
    new = js.prune(scores, mask, 0.25, scope="global", rates={"Conv_0": 0.0})
    s_leaves, m_leaves = jax.tree.leaves(scores), jax.tree.leaves(mask)
    pool = [i in (3, 5) for i in range(8)]
    assert_leaves_equal(new, ref_global(s_leaves, m_leaves, 0.25, sel=pool))


# --- ties, -0.0, NaN -------------------------------------------------------------------


def test_ties_prune_earlier_positions_first():
    shapes = {"a": (3, 4), "b": (2, 5), "c": (4,)}
    scores = {k: jnp.full(s, 0.7) for k, s in shapes.items()}
    mask = js.mask_like(scores)
    lw, gl = _prune_layerwise, _prune_global
    m = lw(scores, mask, 0.5)
    np.testing.assert_array_equal(np.asarray(m["a"]).ravel(), np.arange(12) >= 6)
    np.testing.assert_array_equal(np.asarray(m["b"]).ravel(), np.arange(10) >= 5)
    np.testing.assert_array_equal(np.asarray(m["c"]), True)  # 1-D: not a kernel
    g = gl(scores, mask, 0.6)  # round(0.6 * 22) = 13: all 12 of "a", first of "b"
    np.testing.assert_array_equal(np.asarray(g["a"]), False)
    np.testing.assert_array_equal(np.asarray(g["b"]).ravel(), np.arange(10) >= 1)
    # a second round on equal scores continues from the first surviving position
    g2 = gl(scores, g, 0.5)  # round(0.5 * 9) = 4 (half to even)
    np.testing.assert_array_equal(np.asarray(g2["b"]).ravel(), np.arange(10) >= 5)


def test_ties_among_some_equal_scores_and_signed_zero():
    s = {"w": jnp.array([[0.5, 0.0, 0.2, -0.0], [0.2, 0.0, 0.9, 0.2]])}
    m = js.prune(s, js.mask_like(s), 0.5)  # 4 lowest: the three zeros then the first 0.2
    np.testing.assert_array_equal(
        np.asarray(m["w"]), [[True, False, False, False], [True, False, True, True]]
    )


def test_signed_zeros_tie_in_order():
    """-0.0 and 0.0 are one score, ranked by position like any tie (as a stable NumPy
    argsort ranks them). XLA folds ``x + 0.0`` to ``x``, so normalising -0.0 that way
    had keyed it below 0.0 and pruned [0, 1, 3] here."""
    s = {"w": jnp.array([[0.0, -0.0, 0.0, -0.0, 1.0, 2.0]])}
    want = [[False, False, False, True, True, True]]
    for scope in ("global", "layerwise"):

        def prune(s, scope=scope):
            return js.prune(s, js.mask_like(s), 0.5, scope=scope, where=js.all_leaves)

        for run in (prune, jax.jit(prune)):
            np.testing.assert_array_equal(np.asarray(run(s)["w"]), want)


def test_a_filter_selecting_nothing_is_an_error():
    group_scores = {"conv_0": jnp.array([0.3, 0.1, 0.2])}  # 1-D: not a kernel
    with pytest.raises(ValueError, match=r"selects no leaf.*all_leaves"):
        js.prune(group_scores, js.mask_like(group_scores), 0.5)
    m = js.prune(group_scores, js.mask_like(group_scores), 0.5, where=js.all_leaves)
    np.testing.assert_array_equal(np.asarray(m["conv_0"]), [True, False, False])  # round(1.5)=2


def test_concrete_nan_scores_raise_naming_path():
    s = {"enc": {"kernel": jnp.array([[1.0, jnp.nan], [0.5, 2.0]])}}
    with pytest.raises(ValueError, match=r"enc/kernel.*NaN"):
        js.prune(s, js.mask_like(s), 0.25)


def test_traced_nan_scores_pruned_first():
    s = {"w": jnp.array([[0.1, jnp.nan, 0.3], [jnp.nan, 0.05, jnp.nan]]), "v": jnp.ones((2, 2))}
    mask = js.mask_like(s)
    m = _prune_layerwise(s, mask, jnp.float32(0.5))  # 3 of 6: exactly the NaNs
    np.testing.assert_array_equal(np.asarray(m["w"]), [[True, False, True], [False, True, False]])
    m = _prune_layerwise(s, mask, jnp.float32(0.34))  # 2 of 6: the first two NaNs
    np.testing.assert_array_equal(np.asarray(m["w"]), [[True, False, True], [False, True, True]])
    g = _prune_global(s, mask, jnp.float32(0.4))  # 4 of 10: three NaNs, then 0.05
    np.testing.assert_array_equal(np.asarray(g["w"]), [[True, False, True], [False, False, False]])
    np.testing.assert_array_equal(np.asarray(g["v"]), True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    amount=st.integers(0, 63).map(lambda i: i / 64),  # exact in float32, so traced == ref
    scope=st.sampled_from(["layerwise", "global"]),
)
def test_heavy_ties_and_nan_match_numpy(seed, amount, scope):
    """Scores from six values (NaN, -0.0 and 0.0 among them) over a random mask: almost every
    threshold lands inside a run of ties, ranked by position by the counting passes."""
    rng = np.random.default_rng(seed)
    values = np.float32([np.nan, -0.0, 0.0, 0.25, 0.5, 1.0])
    shapes, treedef = jax.tree.flatten(SHAPES, is_leaf=_is_shape)
    scores = jax.tree.unflatten(treedef, [jnp.asarray(rng.choice(values, s)) for s in shapes])
    mask = jax.tree.unflatten(treedef, [jnp.asarray(rng.random(s) < 0.8) for s in shapes])
    got = _PRUNE[scope](scores, mask, jnp.float32(amount))
    nan_lowest = [np.where(np.isnan(x), -np.inf, x) for x in jax.tree.leaves(scores)]
    assert_leaves_equal(got, _REF[scope](nan_lowest, jax.tree.leaves(mask), amount))


_PRUNE_ABS = {  # by magnitude from the params, |w| taken after packing (imp_round's way)
    scope: jax.jit(
        lambda p, m, a, scope=scope: _prune(
            p, m, a, scope=scope, where=None, rates=None, absolute=True
        )
    )
    for scope in ("layerwise", "global")
}


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    amount=st.integers(0, 63).map(lambda i: i / 64),
    scope=st.sampled_from(["layerwise", "global"]),
)
def test_magnitude_taken_after_packing_matches_magnitude_scores(seed, amount, scope):
    """``imp_round`` and ``gradual_prune`` prune by magnitude from the params themselves
    (``absolute=True``: ``|w|`` taken after packing): the same masks as pruning
    ``scores.magnitude(params)``, over signed values with ties across signs, both zeros
    and NaN, on the packed path and, under a mesh, on the path that keeps leaves apart."""
    rng = np.random.default_rng(seed)
    values = np.float32([np.nan, -0.0, 0.0, -0.25, 0.25, -0.5, 1.0, -1.0])
    shapes, treedef = jax.tree.flatten(SHAPES, is_leaf=_is_shape)
    params = jax.tree.unflatten(treedef, [jnp.asarray(rng.choice(values, s)) for s in shapes])
    mask = jax.tree.unflatten(treedef, [jnp.asarray(rng.random(s) < 0.8) for s in shapes])
    want = _PRUNE[scope](js.scores.magnitude(params), mask, jnp.float32(amount))
    after = _PRUNE_ABS[scope]
    assert_leaves_equal(after(params, mask, jnp.float32(amount)), jax.tree.leaves(want))
    mesh = jax.make_mesh((2,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):  # a mesh is set: the selection keeps the leaves apart
        assert_leaves_equal(after(params, mask, jnp.float32(amount)), jax.tree.leaves(want))


# --- jit: masks and scores are data ----------------------------------------------------


def test_no_retrace_with_new_masks_and_scores():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(scores, mask):
        return js.prune(scores, mask, 0.2, scope="global")

    chex.clear_trace_counter()
    mask = js.mask_like(SHAPES_P)
    ref = jax.tree.leaves(mask)
    for r in range(4):
        scores = _scores(200 + r)
        mask = step(scores, mask)
        ref = ref_global(jax.tree.leaves(scores), ref, 0.2)
        assert_leaves_equal(mask, ref)


def test_no_retrace_with_traced_amount():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(scores, mask, amount):
        return js.prune(scores, mask, amount)

    chex.clear_trace_counter()
    mask = js.mask_like(SHAPES_P)
    for amount in (0.1, 0.2, 0.5):
        mask = step(_scores(1), mask, jnp.float32(amount))
    alive = [int(jnp.sum(x)) for x, c in zip(jax.tree.leaves(mask), KERNEL) if c]
    want = []
    for n in (72, 128, 80):
        for a in (0.1, 0.2, 0.5):
            n -= round(float(np.float32(a)) * n)
        want.append(n)
    assert alive == want


# --- errors ----------------------------------------------------------------------------


def test_invalid_scope():
    s = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="scope"):
        js.prune(s, js.mask_like(s), 0.2, scope="per-layer")


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, float("nan")])
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_amount_outside_unit_interval(amount, scope):
    s = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        js.prune(s, js.mask_like(s), amount, scope=scope)


def test_bad_rate_and_bad_target():
    s = {"enc": {"w": jnp.ones((2, 2))}}
    with pytest.raises(ValueError, match=r"rates\['enc'\]"):
        js.prune(s, js.mask_like(s), 0.2, rates={"enc": 1.0})
    with pytest.raises(ValueError, match="enc/w"):
        js.prune(s, js.mask_like(s), {"enc": {"w": 1.2}})
    with pytest.raises(ValueError, match="enc/v"):
        js.prune(s, js.mask_like(s), {"enc": {"v": 0.2}})


def test_int_scores_type_error_names_path():
    s = {"enc": {"w": jnp.ones((2, 2), jnp.int32)}}
    with pytest.raises(TypeError, match=r"enc/w.*int32"):
        js.prune(s, js.mask_like(s), 0.2, where=lambda path, leaf: True)


def test_int_leaves_are_never_pruned_by_default():
    # e.g. a step counter kept in the params: IMP prunes around it
    p = {"w": jnp.arange(1.0, 17.0).reshape(4, 4), "count": jnp.zeros((4, 4), jnp.int32)}
    m = js.prune(js.scores.magnitude(p), js.mask_like(p), 0.25, scope="global")
    assert int(m["w"].sum()) == 12 and bool(m["count"].all())


def test_mismatched_mask_and_scores_name_path():
    s = {"enc": {"w": jnp.ones((2, 2)), "u": jnp.ones((3, 2))}}
    with pytest.raises(ValueError, match="enc/u"):
        js.prune(s, {"enc": {"w": jnp.ones((2, 2), bool)}}, 0.2)
    with pytest.raises(ValueError, match="enc/u"):
        js.prune(s, {"enc": {"w": jnp.ones((2, 2), bool), "u": jnp.ones((2, 3), bool)}}, 0.2)
    with pytest.raises(TypeError, match="enc/w"):
        js.prune(s, {"enc": {"w": jnp.ones((2, 2)), "u": jnp.ones((3, 2), bool)}}, 0.2)


def test_global_scope_with_pytree_amount():
    s = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="layerwise"):
        js.prune(s, js.mask_like(s), {"w": 0.5}, scope="global")


def test_where_filter_selects_leaves():
    s = _scores(9)
    mask = js.mask_like(SHAPES_P)
    new = js.prune(s, mask, 0.5, where="bias")
    bias = ["bias" in p for p in LEAF_PATHS]
    assert_leaves_equal(new, ref_layerwise(jax.tree.leaves(s), jax.tree.leaves(mask), 0.5, bias))
    allp = js.prune(s, mask, 0.5, scope="global", where=js.all_leaves)
    assert_leaves_equal(
        allp, ref_global(jax.tree.leaves(s), jax.tree.leaves(mask), 0.5, [True] * 8)
    )


def test_float64_scores_keep_their_order_under_x64():
    # 1 + 1e-12 and 1.0 are one float32; with x64 the keys are 64-bit and tell them apart
    with jax.enable_x64(True):
        w = {"w": jnp.array([[1.0 + 1e-12, 1.0, 3.0, 0.5]], jnp.float64)}
        m = js.prune(js.scores.magnitude(w), js.mask_like(w), 0.5)
        np.testing.assert_array_equal(m["w"], [[True, False, True, False]])
