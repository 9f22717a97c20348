"""Mask pytrees: construction, filters, statistics, distances, packing, checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxsparse as js
from jaxsparse.filters import prunable


def _params():
    return {
        "Dense_0": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)},
        "Conv_0": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.zeros(4)},
        "LayerNorm_0": {"scale": jnp.ones(3)},
        "step": jnp.zeros((2, 2), jnp.int32),
        "embed": [jnp.ones((5, 2), jnp.bfloat16)],
    }


def _random_mask(key, tree, p=0.5):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    out = [jax.random.bernoulli(k, p, jnp.shape(x)) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, out)


# --- mask_like ------------------------------------------------------------------------


@pytest.mark.parametrize("where", [None, js.all_leaves, "kernel", lambda p, x: False])
def test_mask_like_mirrors_params(where):
    params = _params()
    mask = js.mask_like(params, where=where)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)):
        assert m.dtype == jnp.bool_
        assert m.shape == p.shape
        assert bool(jnp.all(m))


def test_mask_like_rejects_bad_filter():
    with pytest.raises(TypeError, match="where="):
        js.mask_like(_params(), where=3)


# --- filters ---------------------------------------------------------------------------


def test_default_filter_selects_float_kernels():
    sel = prunable(_params())
    assert sel == {
        "Dense_0": {"kernel": True, "bias": False},
        "Conv_0": {"kernel": True, "bias": False},
        "LayerNorm_0": {"scale": False},
        "step": False,  # ndim 2 but integer
        "embed": [True],  # bfloat16 counts as floating
    }


def test_default_filter_leaves_out_multi_head_biases():
    """Flax attention keeps the query/key/value biases as (heads, head_dim): two
    dimensions, still biases, never pruned by default (Linen and NNX paths)."""
    from flax import linen as nn
    from flax import nnx

    x = jnp.ones((1, 3, 8))
    linen = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)
    sel = prunable(linen.init(jax.random.key(0), x))["params"]
    for name in ("query", "key", "value", "out"):
        assert sel[name] == {"kernel": True, "bias": False}, name
    mha = nnx.MultiHeadAttention(2, 8, qkv_features=8, decode=False, rngs=nnx.Rngs(0))
    _, state = nnx.split(mha, nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(prunable(state))[0]
    by_path = {js.filters.path_str(p): v for p, v in flat}
    assert by_path["query/bias/value"] is False and by_path["query/kernel/value"] is True
    assert sum(by_path.values()) == 4  # the four kernels
    # a regex or callable still selects them when asked
    assert prunable({"q": {"bias": jnp.ones((2, 4))}}, where="bias") == {"q": {"bias": True}}


def test_regex_filter_searches_joined_path():
    sel = prunable(_params(), where=r"Dense_0/(kernel|bias)")
    assert jax.tree.leaves(sel) == [False, False, True, True, False, False, False]
    assert sel["Dense_0"] == {"kernel": True, "bias": True}
    assert sel["Conv_0"] == {"kernel": False, "bias": False}
    # list indices appear in the path; integer leaves are never selected by a regex
    assert prunable(_params(), where=r"embed/0")["embed"] == [True]
    assert prunable(_params(), where="step")["step"] is False


def test_callable_filter_gets_path_and_leaf():
    seen = []

    def where(path, leaf):
        seen.append((path, tuple(jnp.shape(leaf))))
        return path.endswith("bias")

    sel = prunable(_params(), where=where)
    assert sel["Dense_0"] == {"kernel": False, "bias": True}
    assert sel["Conv_0"]["bias"] is True and sel["LayerNorm_0"]["scale"] is False
    assert ("Conv_0/kernel", (3, 3, 2, 4)) in seen
    assert ("LayerNorm_0/scale", (3,)) in seen
    assert len(seen) == 7


def test_all_leaves_filter():
    sel = prunable(_params(), where=js.all_leaves)
    assert jax.tree.leaves(sel) == [True, True, True, True, True, True, False]


# --- apply_mask ------------------------------------------------------------------------


def test_apply_mask_zeroes_exactly_pruned():
    key = jax.random.key(0)
    params = {"a": jax.random.normal(key, (5, 7)), "b": [jnp.arange(4.0) - 1.5]}
    mask = _random_mask(jax.random.key(1), params)
    out = js.apply_mask(params, mask)
    for o, p, m in zip(jax.tree.leaves(out), jax.tree.leaves(params), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(np.asarray(o), np.where(np.asarray(m), np.asarray(p), 0.0))
        assert o.dtype == p.dtype
    assert jax.tree.structure(out) == jax.tree.structure(params)


def test_apply_mask_checks_mask():
    with pytest.raises(ValueError, match="'a'"):
        js.apply_mask({"a": jnp.ones((2, 2))}, {"a": jnp.ones((2, 3), bool)})


# --- sparsity / density / leaf_sparsity --------------------------------------------------


def _stat_mask():
    return {
        "Dense_0": {
            "kernel": jnp.array([[True, False, True], [True, True, True]]),
            "bias": jnp.array([False, False, True]),
        },
        "Dense_1": {"kernel": jnp.zeros((3, 1), bool)},
    }


def test_sparsity_and_density_values():
    m = _stat_mask()
    # default filter: kernels only, 5 alive of 9
    assert float(js.sparsity(m)) == pytest.approx(4 / 9)
    assert float(js.density(m)) == pytest.approx(5 / 9)
    # all leaves: 6 alive of 12
    assert float(js.sparsity(m, where=js.all_leaves)) == pytest.approx(0.5)
    assert float(js.sparsity(m, where="Dense_1")) == pytest.approx(1.0)
    assert float(js.density(m, where="bias")) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no leaf"):
        js.sparsity(m, where="nothing_matches")


def test_sparsity_under_jit():
    m = _stat_mask()
    assert float(jax.jit(js.sparsity)(m)) == pytest.approx(4 / 9)


def test_leaf_sparsity_values():
    ls = js.leaf_sparsity(_stat_mask())
    assert float(ls["Dense_0"]["kernel"]) == pytest.approx(1 / 6)
    assert float(ls["Dense_0"]["bias"]) == pytest.approx(2 / 3)
    assert float(ls["Dense_1"]["kernel"]) == pytest.approx(1.0)


# --- report ----------------------------------------------------------------------------


def test_report_exact_text():
    expected = (
        "path            shape    alive   total  sparsity\n"
        "Dense_0/kernel  (2, 3)       5       6    16.67%\n"
        "Dense_1/kernel  (3, 1)       0       3   100.00%\n"
        "total                        5       9    44.44%"
    )
    assert js.report(_stat_mask()) == expected


def test_report_with_all_leaves():
    expected = (
        "path            shape    alive   total  sparsity\n"
        "Dense_0/bias    (3,)         1       3    66.67%\n"
        "Dense_0/kernel  (2, 3)       5       6    16.67%\n"
        "Dense_1/kernel  (3, 1)       0       3   100.00%\n"
        "total                        6      12    50.00%"
    )
    assert js.report(_stat_mask(), where=js.all_leaves) == expected


# --- hamming / overlap -----------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), p1=st.floats(0.0, 1.0), p2=st.floats(0.0, 1.0))
def test_hamming_and_overlap_match_numpy(seed, p1, p2):
    tree = {"k": jnp.ones((6, 5)), "b": jnp.ones(5), "c": [jnp.ones((2, 3, 4))]}
    k1, k2 = jax.random.split(jax.random.key(seed))
    m1, m2 = _random_mask(k1, tree, p1), _random_mask(k2, tree, p2)
    sel = [False, True, True]  # jax.tree.leaves order: b, c/0, k (kernels: ndim >= 2)
    a = np.concatenate([np.ravel(x) for x, s in zip(jax.tree.leaves(m1), sel) if s])
    b = np.concatenate([np.ravel(x) for x, s in zip(jax.tree.leaves(m2), sel) if s])
    assert float(js.hamming(m1, m2)) == pytest.approx(np.mean(a != b), abs=1e-6)
    union = np.sum(a | b)
    iou = 1.0 if union == 0 else np.sum(a & b) / union
    assert float(js.overlap(m1, m2)) == pytest.approx(iou, abs=1e-6)
    assert float(js.hamming(m1, m1)) == 0.0
    assert float(js.overlap(m1, m1)) == 1.0


def test_hamming_overlap_small_values():
    m1 = {"w": jnp.array([[1, 1], [0, 0]], bool), "b": jnp.array([True, False])}
    m2 = {"w": jnp.array([[1, 0], [1, 0]], bool), "b": jnp.array([False, True])}
    assert float(js.hamming(m1, m2)) == pytest.approx(0.5)
    assert float(js.overlap(m1, m2)) == pytest.approx(1 / 3)
    assert float(js.hamming(m1, m2, where=js.all_leaves)) == pytest.approx(4 / 6)
    assert float(js.overlap(m1, m2, where=js.all_leaves)) == pytest.approx(1 / 5)
    empty = {"w": jnp.zeros((2, 2), bool), "b": jnp.zeros(2, bool)}
    assert float(js.overlap(empty, empty)) == 1.0
    assert float(js.overlap(m1, empty)) == 0.0


def test_distances_check_structure():
    with pytest.raises(ValueError, match="'w'"):
        js.hamming({"w": jnp.ones((2, 2), bool)}, {"w": jnp.ones((2, 3), bool)})
    with pytest.raises(ValueError, match="missing"):
        js.overlap({"w": jnp.ones((2, 2), bool)}, {"v": jnp.ones((2, 2), bool)})


# --- pack / unpack ---------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    a=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
    b=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=1, max_dims=1, min_side=1, max_side=20)),
)
def test_pack_unpack_round_trip(a, b):
    mask = {"a": jnp.asarray(a), "nested": [jnp.asarray(b)]}
    packed = js.pack(mask)
    for p, m in zip(jax.tree.leaves(packed), jax.tree.leaves(mask)):
        assert p.dtype == jnp.uint8
        assert p.shape == (math.ceil(m.size / 8),)
        assert p.nbytes == math.ceil(m.size / 8)
    back = js.unpack(packed, mask)
    assert jax.tree.structure(back) == jax.tree.structure(mask)
    for x, m in zip(jax.tree.leaves(back), jax.tree.leaves(mask)):
        assert x.dtype == jnp.bool_ and x.shape == m.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(m))
    # params may serve as the shape template too
    like = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.float32), mask)
    np.testing.assert_array_equal(np.asarray(js.unpack(packed, like)["a"]), a)


def test_pack_bit_layout():
    packed = js.pack({"w": jnp.array([1, 0, 1, 1, 0, 0, 0, 0, 1], bool)})
    np.testing.assert_array_equal(np.asarray(packed["w"]), [0b10110000, 0b10000000])


def test_unpack_wrong_length_names_path():
    like = {"enc": {"w": jnp.ones((3, 5), bool)}}
    with pytest.raises(ValueError, match="enc/w"):
        js.unpack({"enc": {"w": jnp.zeros(3, jnp.uint8)}}, like)


# --- check_mask ------------------------------------------------------------------------


def test_check_mask_accepts_mirror():
    params = _params()
    js.check_mask(js.mask_like(params), params)  # must not raise


def test_check_mask_structure_mismatch_names_path():
    params = {"enc": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}}
    mask = {"enc": {"w": jnp.ones((2, 2), bool)}}
    with pytest.raises(ValueError, match="enc/b"):
        js.check_mask(mask, params)
    extra = {"enc": {"w": jnp.ones((2, 2), bool), "b": jnp.ones(2, bool), "z": jnp.ones(1, bool)}}
    with pytest.raises(ValueError, match="enc/z"):
        js.check_mask(extra, params)


def test_check_mask_shape_mismatch_names_path():
    params = {"enc": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}}
    mask = {"enc": {"w": jnp.ones((2, 3), bool), "b": jnp.ones(2, bool)}}
    with pytest.raises(ValueError, match=r"enc/w.*\(2, 3\)"):
        js.check_mask(mask, params)


def test_check_mask_dtype_names_path():
    params = {"enc": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}}
    mask = {"enc": {"w": jnp.ones((2, 2), bool), "b": jnp.ones(2, jnp.float32)}}
    with pytest.raises(TypeError, match=r"enc/b.*float32"):
        js.check_mask(mask, params)
    with pytest.raises(TypeError, match="custom leaf 'enc/b'"):
        js.check_mask(mask, params, name="custom")


def test_distances_refuse_an_empty_selection():
    m = {"b": jnp.ones(3, bool)}  # a bias only: nothing prunable by default
    with pytest.raises(ValueError, match="hamming: no leaf"):
        js.hamming(m, m)
    with pytest.raises(ValueError, match="overlap: no leaf"):
        js.overlap(m, m)
