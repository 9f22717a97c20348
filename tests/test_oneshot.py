"""One-shot pruning (``jaxsparse.oneshot``) by value: SparseGPT and Wanda against plain
NumPy references, capture against Gram matrices computed by hand (Linen and NNX),
the sequential mode, bad input, composition with the rest of jaxsparse, meshes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsparse import oneshot

# --- plain NumPy references ---------------------------------------------------------------


def ref_sparsegpt(kernel, gram, sparsity, nm, block, damp=0.01):
    """SparseGPT's OBS sweep written plainly: float64, every later column updated after
    each pruned column (no lazy batching), masks chosen at each block's (group's) start."""
    w = np.asarray(kernel, np.float64).T.copy()  # (d_out, d_in)
    d_out, d_in = w.shape
    h = 2.0 * np.asarray(gram, np.float64) / 1.0
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * np.mean(np.diag(h)) * np.eye(d_in)
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: inv(h) = u.T u
    keep = np.ones_like(w, bool)
    for b0 in range(0, d_in, block):
        b1 = min(b0 + block, d_in)
        if nm is None:
            k = round(sparsity * d_out * b1) - round(sparsity * d_out * b0)
            score = (w[:, b0:b1] ** 2 / np.diag(u)[b0:b1] ** 2).T.ravel()  # kernel order
            gone = np.zeros(score.size, bool)
            gone[np.argsort(score, kind="stable")[:k]] = True
            keep[:, b0:b1] = ~gone.reshape(b1 - b0, d_out).T
        for i in range(b0, b1):
            if nm is not None and (i - b0) % nm[1] == 0:
                n, m = nm
                s = w[:, i : i + m] ** 2 / np.diag(u)[i : i + m] ** 2
                for r in range(d_out):
                    keep[r, i + np.argsort(s[r], kind="stable")[: m - n]] = False
            q = np.where(keep[:, i], w[:, i], 0.0)
            err = (w[:, i] - q) / u[i, i]
            w[:, i:] -= np.outer(err, u[i, i:])
            w[:, i] = q
    return w.T, keep.T


def ref_wanda(kernel, sq_norms, sparsity):
    k = np.asarray(kernel, np.float64)
    score = np.abs(k) * np.sqrt(np.asarray(sq_norms, np.float64))[:, None]
    keep = np.ones(k.shape, bool)
    n_pruned = round(sparsity * k.shape[0])
    for j in range(k.shape[1]):  # per output, ties: the earlier input first
        keep[np.argsort(score[:, j], kind="stable")[:n_pruned], j] = False
    return keep


def rel_err(x, w, new):
    return np.linalg.norm(x @ w - x @ new) / np.linalg.norm(x @ w)


def _layer(seed, d_in=32, d_out=16, n=128):
    kx, kw = jax.random.split(jax.random.key(seed))
    # correlated inputs with unequal scales, as real activations
    x = jax.random.normal(kx, (n, d_in)) @ (jnp.eye(d_in) + 0.3 * jax.random.normal(kw, (d_in,)))
    x = x * jnp.linspace(0.2, 3.0, d_in)
    w = jax.random.normal(jax.random.fold_in(kw, 1), (d_in, d_out))
    return np.array(x), np.array(w)


# --- layer functions ----------------------------------------------------------------------


@pytest.mark.parametrize("nm, sparsity", [(None, 0.5), (None, 0.7), ((2, 4), None), ((4, 8), None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_sparsegpt_equals_numpy_reference(nm, sparsity, seed):
    x, w = _layer(seed)
    gram = x.T @ x
    new, keep = oneshot.sparsegpt(w, gram, sparsity, nm=nm, blocksize=8)
    ref_w, ref_keep = ref_sparsegpt(w, gram, sparsity, nm, 8)
    np.testing.assert_array_equal(np.asarray(keep), ref_keep)
    np.testing.assert_allclose(np.asarray(new), ref_w, rtol=2e-4, atol=2e-4)
    assert np.all(np.asarray(new)[~ref_keep] == 0.0)


@pytest.mark.parametrize("nm, sparsity", [(None, 0.3), (None, 0.5), (None, 0.8), ((2, 4), None)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparsegpt_properties(nm, sparsity, seed):
    x, w = _layer(seed, d_in=48, d_out=24)
    gram = x.T @ x
    new, keep = map(np.asarray, oneshot.sparsegpt(w, gram, sparsity, nm=nm, blocksize=16))
    mag = np.asarray(oneshot.magnitude(w, sparsity, nm=nm))
    assert rel_err(x, w, new) <= rel_err(x, w, w * mag) + 1e-6
    if nm is None:  # exact count over the layer
        assert (~keep).sum() == round(sparsity * w.size)
    else:  # exactly n alive in every group of m inputs
        groups = keep.reshape(-1, nm[1], w.shape[1]).sum(axis=1)
        assert np.all(groups == nm[0])
    assert np.all(new[~keep] == 0.0)


def test_sparsegpt_at_sparsity_zero_is_the_identity():
    x, w = _layer(3, d_in=40)  # 40 inputs: a last block of 8 with blocksize 16
    new, keep = oneshot.sparsegpt(w, x.T @ x, 0.0, blocksize=16)
    np.testing.assert_array_equal(np.asarray(new), w)
    assert np.asarray(keep).all()


def test_sparsegpt_dead_inputs_are_zeroed_and_pruned_first():
    x, w = _layer(4)
    x[:, 3] = 0.0
    new, keep = oneshot.sparsegpt(w, x.T @ x, 0.25, blocksize=8)
    assert np.all(np.asarray(new)[3] == 0.0) and not np.asarray(keep)[3].any()
    assert np.isfinite(np.asarray(new)).all()


def test_wanda_equals_numpy_reference_with_ties():
    x, w = _layer(5)
    w = np.round(w * 2) / 2  # many ties: broken by position, the earlier input pruned first
    sq = (x**2).sum(axis=0)
    sq[:4] = sq[4:8]  # equal norms too
    for sparsity in (0.25, 0.5, 0.6):
        keep = np.asarray(oneshot.wanda(w, sq, sparsity))
        np.testing.assert_array_equal(keep, ref_wanda(w, sq, sparsity))


def test_wanda_with_equal_norms_is_per_output_magnitude():
    _, w = _layer(6)
    for sparsity in (0.5, 0.75):
        a = oneshot.wanda(w, jnp.full(w.shape[0], 7.0), sparsity)
        b = oneshot.magnitude(w, sparsity, compare="output")
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    a = oneshot.wanda(w, jnp.ones(w.shape[0]), nm=(2, 4))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(oneshot.magnitude(w, nm=(2, 4))))


def test_sparsegpt_runs_under_jit():
    x, w = _layer(7)
    f = jax.jit(lambda w, g: oneshot.sparsegpt(w, g, 0.5, blocksize=8))
    new, keep = f(w, x.T @ x)
    ref_w, ref_keep = ref_sparsegpt(w, x.T @ x, 0.5, None, 8)
    np.testing.assert_array_equal(np.asarray(keep), ref_keep)
    np.testing.assert_allclose(np.asarray(new), ref_w, rtol=2e-4, atol=2e-4)
