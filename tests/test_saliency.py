"""SNIP, GraSP, SynFlow and movement against hand-written gradients, Hessian-vector
products and NumPy finite differences on tiny networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsparse import scores

# --- a 2-layer linear net with MSE: L = 1/(2B) Σ ||x W1 W2 - y||² ------------------------

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 2))
Y = RNG.normal(size=(5, 2))
W1 = RNG.normal(size=(2, 3))
W2 = RNG.normal(size=(3, 2))


def loss_fn(p, batch):
    x, y = batch
    r = x @ p["W1"] @ p["W2"] - y
    return 0.5 * jnp.mean(jnp.sum(r**2, axis=1))


def params():
    return {"W1": jnp.asarray(W1, jnp.float32), "W2": jnp.asarray(W2, jnp.float32),
            "count": jnp.array(7)}  # fmt: skip


BATCH = (jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32))


def np_grad(w1, w2):
    """The gradient written out: r = x W1 W2 - y; dW2 = (xW1)ᵀr/B; dW1 = xᵀ r W2ᵀ/B."""
    b = len(X)
    r = X @ w1 @ w2 - Y
    return X.T @ r @ w2.T / b, (X @ w1).T @ r / b


def np_hvp(w1, w2, v1, v2):
    """The directional derivative of the gradient along (v1, v2), by the product rule."""
    b = len(X)
    r = X @ w1 @ w2 - Y
    dr = X @ v1 @ w2 + X @ w1 @ v2
    return (X.T @ dr @ w2.T + X.T @ r @ v2.T) / b, ((X @ v1).T @ r + (X @ w1).T @ dr) / b


def test_snip_by_hand():
    s = scores.snip(loss_fn, params(), BATCH)
    g1, g2 = np_grad(W1, W2)
    np.testing.assert_allclose(s["W1"], np.abs(g1 * W1), rtol=1e-5)
    np.testing.assert_allclose(s["W2"], np.abs(g2 * W2), rtol=1e-5)
    assert int(s["count"]) == 7 and s["count"].dtype == jnp.int32  # passed through


def test_grasp_by_hand_and_by_finite_differences():
    s = jax.jit(lambda p, b: scores.grasp(loss_fn, p, b))(params(), BATCH)
    g1, g2 = np_grad(W1, W2)
    h1, h2 = np_hvp(W1, W2, g1, g2)
    np.testing.assert_allclose(s["W1"], W1 * h1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s["W2"], W2 * h2, rtol=1e-4, atol=1e-6)
    # Hg by central finite differences of the NumPy gradient along g
    eps = 1e-5
    gp, gm = np_grad(W1 + eps * g1, W2 + eps * g2), np_grad(W1 - eps * g1, W2 - eps * g2)
    fd1, fd2 = (gp[0] - gm[0]) / (2 * eps), (gp[1] - gm[1]) / (2 * eps)
    np.testing.assert_allclose(s["W1"], W1 * fd1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s["W2"], W2 * fd2, rtol=1e-4, atol=1e-6)
    assert int(s["count"]) == 7


def test_grasp_sign_low_score_means_removal_raises_gradient_norm():
    """d/dt ||g(θ - t·w_i e_i)||² at t = 0 is -2·score_i: the lowest scores are the
    weights whose removal raises gradient flow most, the ones GraSP removes."""
    s = scores.grasp(loss_fn, params(), BATCH)
    h = 1e-5
    for name, w in (("W1", W1), ("W2", W2)):
        for idx in np.ndindex(w.shape):

            def gnorm(t, name=name, idx=idx):
                w1, w2 = W1.copy(), W2.copy()
                (w1 if name == "W1" else w2)[idx] *= 1 - t
                g1, g2 = np_grad(w1, w2)
                return np.sum(g1**2) + np.sum(g2**2)

            slope = (gnorm(h) - gnorm(-h)) / (2 * h)
            np.testing.assert_allclose(slope, -2 * float(s[name][idx]), rtol=1e-3, atol=1e-6)


def test_batch_that_does_not_fit_names_batch():
    bad = (jnp.ones((5, 4)), jnp.ones((5, 2)))
    for fn in (scores.snip, scores.grasp):
        with pytest.raises(ValueError, match=r"batch"):
            fn(loss_fn, params(), bad)
    with pytest.raises(ValueError, match="scalar"):
        scores.snip(lambda p, b: b[0] @ p["W1"], params(), BATCH)


# --- SynFlow -------------------------------------------------------------------------


def chain(p, x):
    return x @ p["W1"] @ p["W2"] + p["b"]


def test_synflow_by_hand():
    p = {"W1": jnp.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]]),
         "W2": jnp.array([[2.0], [-1.0], [4.0]]), "b": jnp.zeros(1), "n": jnp.array(3)}  # fmt: skip
    # R = 1ᵀ|W1||W2|: dR/d|W1|_ij = |W2|_j, dR/d|W2|_j = Σ_i |W1|_ij = (4, 3, 1.5)
    want1 = np.array([[2.0, 2.0, 2.0], [6.0, 1.0, 4.0]])
    want2 = np.array([[8.0], [3.0], [6.0]])
    s = scores.synflow(chain, p, (1, 2), rescale=False)
    np.testing.assert_array_equal(s["W1"], want1)
    np.testing.assert_array_equal(s["W2"], want2)
    assert int(s["n"]) == 3
    # rescaled: each kernel divided by its mean fan-in sum, every score by their product
    c = (8.5 / 3) * 7.0
    r = jax.jit(lambda q: scores.synflow(chain, q, (1, 2)))(p)
    np.testing.assert_allclose(r["W1"], want1 / c, rtol=1e-6)
    np.testing.assert_allclose(r["W2"], want2 / c, rtol=1e-6)


def test_synflow_deep_chain_does_not_overflow():
    depth, width = 40, 16
    rng = np.random.default_rng(1)
    ws = [rng.uniform(0.5, 1.5, size=(width, width)) for _ in range(depth)]
    p = [jnp.asarray(w, jnp.float32) for w in ws]

    def apply(q, x):
        for w in q:
            x = x @ w
        return x

    # float64 reference: score of W_l[i, j] = fwd_l[i] · |W_l[i, j]| · bwd_l[j]
    fwd = [np.ones(width)]
    for w in ws[:-1]:
        fwd.append(fwd[-1] @ w)
    bwd = [np.ones(width)]
    for w in ws[:0:-1]:
        bwd.insert(0, w @ bwd[0])
    want = [f[:, None] * w * b[None, :] for f, w, b in zip(fwd, ws, bwd)]
    assert max(x.max() for x in want) > 1e39  # beyond float32

    plain = scores.synflow(apply, p, (1, width), rescale=False)
    assert not all(np.isfinite(np.asarray(x)).all() for x in plain)
    got = scores.synflow(apply, p, (1, width))
    ratio = np.concatenate([(w / np.asarray(g, np.float64)).ravel() for w, g in zip(want, got)])
    assert np.isfinite(ratio).all()
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # one common factor


def test_synflow_names_input_shape():
    p = {"W1": jnp.ones((2, 3)), "W2": jnp.ones((3, 1)), "b": jnp.zeros(1)}
    with pytest.raises(ValueError, match="input_shape"):
        scores.synflow(chain, p, (1, 5))


def np_iterative_synflow(ws, density, rounds):
    """NumPy reference: global SynFlow rounds on a bias-free linear chain."""
    masks = [np.ones(w.shape, bool) for w in ws]
    n = sum(w.size for w in ws)
    for k in range(1, rounds + 1):
        d = np.float32(density) ** np.float32(k / rounds) if k < rounds else density
        dead = round(float(1 - np.float32(d)) * n) if k < rounds else round((1 - density) * n)
        a = [np.abs(w) * m for w, m in zip(ws, masks)]
        fwd = [np.ones(a[0].shape[0])]
        for w in a[:-1]:
            fwd.append(fwd[-1] @ w)
        bwd = [np.ones(a[-1].shape[1])]
        for w in a[:0:-1]:
            bwd.insert(0, w @ bwd[0])
        s = np.concatenate([(f[:, None] * w * b[None, :]).ravel()
                            for f, w, b in zip(fwd, a, bwd)])  # fmt: skip
        flat = np.concatenate([m.ravel() for m in masks])
        alive = np.flatnonzero(flat)
        k_drop = max(dead - (n - len(alive)), 0)
        flat[alive[np.argsort(s[alive], kind="stable")[:k_drop]]] = False
        masks, i = [], 0
        for w in ws:
            masks.append(flat[i : i + w.size].reshape(w.shape))
            i += w.size
    return masks


def test_iterative_synflow_matches_numpy_and_hits_density():
    rng = np.random.default_rng(2)
    ws = [rng.normal(size=s) for s in ((4, 6), (6, 5), (5, 3))]
    p = {f"W{i}": jnp.asarray(w, jnp.float32) for i, w in enumerate(ws)}

    def apply(q, x):
        return x @ q["W0"] @ q["W1"] @ q["W2"]

    run = jax.jit(lambda q: scores.iterative_synflow(apply, q, (1, 4), 0.2, rounds=5))
    m = run(p)
    want = np_iterative_synflow(ws, 0.2, 5)
    for i in range(3):
        np.testing.assert_array_equal(m[f"W{i}"], want[i])
    assert int(sum(x.sum() for x in jax.tree.leaves(m))) == round(0.2 * 69)


def test_iterative_synflow_bad_arguments():
    p = {"W1": jnp.ones((2, 3)), "W2": jnp.ones((3, 1)), "b": jnp.zeros(1)}
    with pytest.raises(ValueError, match="density"):
        scores.iterative_synflow(chain, p, (1, 2), 0.0)
    with pytest.raises(ValueError, match="rounds"):
        scores.iterative_synflow(chain, p, (1, 2), 0.5, rounds=0)


# --- movement --------------------------------------------------------------------------


def test_movement_values_and_errors():
    p = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "step": jnp.array(4)}
    g = {"w": jnp.array([[-1.0, -1.0], [2.0, 0.0]]), "step": jnp.array(0)}
    s = scores.movement(g, p)
    np.testing.assert_array_equal(s["w"], [[1.0, -2.0], [-1.0, 0.0]])
    assert int(s["step"]) == 4
    # descent moves 1.0 up, away from zero (kept), and 0.5 down, towards zero (pruned)
    assert float(s["w"][0, 0]) > 0 > float(s["w"][1, 0])
    with pytest.raises(ValueError, match="grads_sum"):
        scores.movement({"v": jnp.ones(2)}, {"w": jnp.ones(2)})
