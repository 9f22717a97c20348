"""``jaxsparse.export``: sparse kernels give the masked dense model's outputs, exactly stored."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import sparse

import jaxsparse as js
from jaxsparse import export

SPARSE_FORMATS = ["bcoo", "bcsr"]


class MLP(nn.Module):
    widths: tuple = (32, 24, 5)

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths):
            x = nn.Dense(w)(x)
            if i < len(self.widths) - 1:
                x = nn.tanh(x)
        return x


def _mlp(seed=0, n_in=12):
    model = MLP()
    kp, kx = jax.random.split(jax.random.key(seed))
    params = model.init(kp, jnp.zeros((1, n_in)))["params"]
    return model, params, jax.random.normal(kx, (7, n_in))


def _random_mask(params, sparsity, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: (
            jnp.asarray(rng.random(p.shape) >= sparsity)
            if p.ndim == 2
            else jnp.ones_like(p, dtype=bool)
        ),
        params,
    )


@jax.jit(static_argnums=0)
def _masked_outputs(model, params, mask, x):
    return model.apply({"params": js.apply_mask(params, mask)}, x)


@jax.jit
def _tanh_apply(sp, x):
    return export.mlp_apply(sp, x, activation=jnp.tanh)


# --- to_sparse / apply -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", SPARSE_FORMATS)
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.99])
def test_mlp_apply_equals_masked_dense_model(fmt, sparsity):
    model, params, x = _mlp()
    mask = _random_mask(params, sparsity, seed=int(sparsity * 100))
    sp = export.to_sparse(params, mask, format=fmt)
    # jitted, and a {"params": ...} wrapper is looked through
    got = _tanh_apply({"params": sp}, x)
    np.testing.assert_allclose(got, _masked_outputs(model, params, mask, x), atol=1e-5)


@pytest.mark.parametrize("fmt", SPARSE_FORMATS)
def test_dead_rows_and_columns(fmt):
    """Whole dead inputs (rows) and outputs (columns), and one all-dead kernel."""
    model, params, x = _mlp(seed=1)
    mask = js.mask_like(params)
    m0 = np.ones((12, 32), bool)
    m0[::2] = False  # every other input dead
    m0[:, 5:9] = False  # four units get no input at all
    mask["Dense_0"]["kernel"] = jnp.asarray(m0)
    mask["Dense_1"]["kernel"] = jnp.zeros((32, 24), bool)  # 100% pruned
    sp = export.to_sparse(params, mask, format=fmt)
    assert sp["Dense_1"]["kernel"].nse == 0
    got = _tanh_apply(sp, x)
    want = _masked_outputs(model, params, mask, x)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # with Dense_1 dead, the output is the last layer's bias path only: tanh(b1) @ k2 + b2
    p = params
    by_hand = jnp.tanh(p["Dense_1"]["bias"]) @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    np.testing.assert_allclose(got, jnp.broadcast_to(by_hand, got.shape), atol=1e-5)


@pytest.mark.parametrize("fmt", SPARSE_FORMATS)
def test_nse_is_alive_count_and_layout(fmt):
    _, params, _ = _mlp()
    mask = _random_mask(params, 0.7, seed=3)
    # an alive weight that happens to be 0.0 is still stored
    params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[0, :].set(0.0)
    mask["Dense_0"]["kernel"] = mask["Dense_0"]["kernel"].at[0, :].set(True)
    sp = export.to_sparse(params, mask, format=fmt)
    for name in ("Dense_0", "Dense_1", "Dense_2"):
        k, m = sp[name]["kernel"], np.asarray(mask[name]["kernel"])
        assert k.nse == int(m.sum())
        dense_k = np.asarray(k.todense())
        want = np.asarray(params[name]["kernel"]) * m
        np.testing.assert_array_equal(dense_k, want if fmt == "bcoo" else want.T)
        assert isinstance(sp[name]["bias"], jax.Array)
    back = export.to_dense(sp)
    for b, p, m in zip(jax.tree.leaves(back), jax.tree.leaves(params), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(b, np.where(m, p, 0))


def test_non_selected_leaves_are_masked_and_conv_left_dense():
    params = {
        "Conv_0": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
        "Dense_0": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)},
        "step": jnp.int32(7),
    }
    mask = js.mask_like(params)
    mask["Conv_0"]["kernel"] = mask["Conv_0"]["kernel"].at[0].set(False)
    mask["Dense_0"]["bias"] = jnp.array([True, False, True])
    sp = export.to_sparse(params, mask)
    assert isinstance(sp["Dense_0"]["kernel"], sparse.BCOO)
    assert isinstance(sp["Conv_0"]["kernel"], jax.Array)
    assert float(sp["Conv_0"]["kernel"].sum()) == 2 * 3 * 2 * 4
    np.testing.assert_array_equal(sp["Dense_0"]["bias"], [1.0, 0.0, 1.0])
    assert int(sp["step"]) == 7


def test_dense_and_matmul_keep_leading_axes():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(6, 4)).astype(np.float32)
    m = rng.random((6, 4)) > 0.5
    x = jnp.asarray(rng.normal(size=(2, 3, 6)).astype(np.float32))
    b = jnp.arange(4.0)
    want = x @ (k * m) + b
    for fmt in ("bcoo", "bcsr", "nm"):
        mm = m if fmt != "nm" else np.tile([[True], [False]], (3, 4))
        sk = export.to_sparse({"k": jnp.asarray(k)}, {"k": jnp.asarray(mm)}, format=fmt, n=1, m=2)
        got = jax.jit(export.dense)(x, sk["k"], b)
        np.testing.assert_allclose(got, x @ (k * mm) + b, atol=1e-5)
    np.testing.assert_allclose(export.dense(x, jnp.asarray(k * m), b), want, atol=1e-5)


def test_mlp_apply_layer_paths_on_lenet_names():
    from experiments.models import LeNet300

    model = LeNet300(hidden=(16, 8))
    params = model.init(jax.random.key(0), jnp.zeros((1, 20)))["params"]
    mask = _random_mask(params, 0.8, seed=5)
    x = jax.random.normal(jax.random.key(1), (3, 20))
    sp = export.to_sparse(params, mask, format="bcsr")
    layers = ["hidden_0", "hidden_1", "output"]
    got = jax.jit(lambda s, x: export.mlp_apply(s, x, layers=layers))(sp, x)
    np.testing.assert_allclose(got, _masked_outputs(model, params, mask, x), atol=1e-5)
    # paths may name the Linen "params" wrapper too
    wrapped = export.mlp_apply({"params": sp}, x, layers=[f"params/{n}" for n in layers])
    np.testing.assert_allclose(wrapped, got, atol=1e-6)
    with pytest.raises(ValueError, match="no Dense_<i> layers"):
        export.mlp_apply(sp, x)
    with pytest.raises(ValueError, match="'hidden_7'"):
        export.mlp_apply(sp, x, layers=["hidden_0", "hidden_7"])


# --- errors name the place -------------------------------------------------------------


def test_errors_name_the_place():
    _, params, x = _mlp()
    mask = js.mask_like(params)
    bad = js.mask_like(params)
    bad["Dense_1"]["kernel"] = jnp.ones((3, 3), bool)
    with pytest.raises(ValueError, match="Dense_1/kernel"):
        export.to_sparse(params, bad)
    with pytest.raises(ValueError, match="format"):
        export.to_sparse(params, mask, format="csr")
    with pytest.raises(ValueError, match="n= and m="):
        export.to_sparse(params, mask, format="nm")
    conv = {"Conv_0": {"kernel": jnp.ones((3, 3, 2, 4))}}
    with pytest.raises(ValueError, match="'Conv_0/kernel' has shape"):
        export.to_sparse(conv, js.mask_like(conv), where="kernel")
    with pytest.raises(TypeError, match="outside jit"):
        jax.jit(lambda p, m: export.to_sparse(p, m))(params, mask)
    sp = export.to_sparse(params, mask, format="bcsr")
    with pytest.raises(ValueError, match="takes 12 inputs"):
        export.matmul(jnp.ones((2, 5)), sp["Dense_0"]["kernel"])
    with pytest.raises(TypeError, match="unsupported kernel"):
        export.matmul(x, [[1.0]])


# --- N:M packed form --------------------------------------------------------------------


def _nm_mask(rng, shape, n, m, axis):
    """Exactly n alive in every m consecutive entries along axis (built directly)."""
    moved = (shape[axis] // m, m, *shape[:axis], *shape[axis + 1 :])
    keys = rng.random(moved)
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    mg = ranks < n
    full = mg.reshape(shape[axis], *shape[:axis], *shape[axis + 1 :])
    return np.moveaxis(full, 0, axis)


@jax.jit(static_argnums=(2, 3, 4))
def _round_trip(kernel, mask, n, m, axis):
    p = export.nm_compress(kernel, mask, n, m, axis=axis)
    return p, export.nm_decompress(p)


@settings(max_examples=8, deadline=None)
@given(
    nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 4), (2, 8)]),
    axis=st.sampled_from([0, 1, -1]),
    groups=st.integers(1, 2),
    other=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_nm_round_trip_is_exact(nm, axis, groups, other, seed):
    n, m = nm
    rng = np.random.default_rng(seed)
    shape = [other, other + 1]
    shape[axis % 2] = groups * m
    kernel = rng.normal(size=shape).astype(np.float32)
    mask = _nm_mask(rng, tuple(shape), n, m, axis % 2)
    assert (mask.sum() * m) == n * kernel.size
    p, back = _round_trip(kernel, mask, n, m, axis)
    assert p.values.size == n * kernel.size // m and p.indices.dtype == jnp.uint8
    np.testing.assert_array_equal(back, kernel * mask)
    # offsets ascend inside a group and stay below m
    assert (np.diff(np.asarray(p.indices, int), axis=1) > 0).all()
    assert int(p.indices.max()) < m


@pytest.mark.parametrize("axis", [0, 1])
def test_nm_matmul_matches_masked_dense_under_jit(axis):
    rng = np.random.default_rng(axis)
    kernel = rng.normal(size=(16, 8)).astype(np.float32)
    mask = _nm_mask(rng, (16, 8), 2, 4, axis)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    packed = jax.jit(lambda k, m: export.nm_compress(k, m, 2, 4, axis=axis))(kernel, mask)
    got = jax.jit(export.nm_matmul)(jnp.asarray(x), packed)
    np.testing.assert_allclose(got, x @ (kernel * mask), rtol=1e-5, atol=1e-5)


def test_nm_in_to_sparse_and_mlp_apply():
    model, params, x = _mlp(seed=2)
    rng = np.random.default_rng(0)
    mask = jax.tree.map(
        lambda p: (
            jnp.asarray(_nm_mask(rng, p.shape, 2, 4, 0))
            if p.ndim == 2 and p.shape[0] % 4 == 0
            else jnp.ones_like(p, dtype=bool)
        ),
        params,
    )
    sp = export.to_sparse(params, mask, where="Dense_[01]/kernel", format="nm", n=2, m=4)
    assert isinstance(sp["Dense_0"]["kernel"], export.NMPacked)
    assert isinstance(sp["Dense_2"]["kernel"], jax.Array)
    got = _tanh_apply(sp, x)
    np.testing.assert_allclose(got, _masked_outputs(model, params, mask, x), atol=1e-5)


def test_nm_errors_name_path_and_axis():
    k = jnp.ones((8, 6))
    good = jnp.asarray(_nm_mask(np.random.default_rng(0), (8, 6), 2, 4, 0))
    with pytest.raises(ValueError, match="Dense_3/kernel: mask is not 2:4 along axis 0: group 1"):
        export.nm_compress(k, good.at[5, 2].set(~good[5, 2]), 2, 4, name="Dense_3/kernel")
    with pytest.raises(ValueError, match=r"m=4 does not divide axis 1 .* \(length 6\)"):
        export.nm_compress(k, good, 2, 4, axis=1)
    with pytest.raises(ValueError, match="1 <= n <= m"):
        export.nm_compress(k, good, 5, 4)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        export.nm_compress(k, good, 2, 4, axis=2)
    with pytest.raises(TypeError, match="dtype"):
        export.nm_compress(k, good.astype(jnp.float32), 2, 4)
    params = {"Dense_0": {"kernel": k}}
    bad = {"Dense_0": {"kernel": good.at[0, 0].set(~good[0, 0])}}
    with pytest.raises(ValueError, match="Dense_0/kernel: mask is not 2:4 along axis 0: group 0"):
        export.to_sparse(params, bad, format="nm", n=2, m=4)
    packed3 = export.nm_compress(jnp.ones((4, 2, 2)), jnp.ones((4, 2, 2), bool), 4, 4)
    with pytest.raises(ValueError, match="not 2-D"):
        export.nm_matmul(jnp.ones((1, 4)), packed3)
