"""One-shot pruning rows: the time to prune a whole model per method against its size,
and SparseGPT on one large layer against a NumPy/SciPy implementation of the same
algorithm (same blocks, same exact counts, same masks), measured in the same run."""

from __future__ import annotations

import numpy as np

from experiments.bench import timing


def numpy_sparsegpt(kernel, gram, sparsity, block=128, damp=0.01):
    """SparseGPT in NumPy/SciPy as the reference code does it (lazy block updates), with
    jaxsparse's exact per-block counts and tie rule. ``(new_kernel, mask)``."""
    import scipy.linalg

    w = np.array(kernel, np.float32).T  # (d_out, d_in)
    d_out, d_in = w.shape
    h = 2.0 * np.asarray(gram, np.float32)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += np.float32(damp * np.mean(np.diag(h))) * np.eye(d_in, dtype=np.float32)
    hinv = scipy.linalg.cho_solve(scipy.linalg.cho_factor(h, lower=True), np.eye(d_in))
    u = scipy.linalg.cholesky(hinv.astype(np.float32), lower=False)  # hinv = u.T u
    keep = np.ones_like(w, bool)
    for b0 in range(0, d_in, block):
        b1 = min(b0 + block, d_in)
        w1, u1 = w[:, b0:b1].copy(), u[b0:b1, b0:b1]
        k = round(sparsity * d_out * b1) - round(sparsity * d_out * b0)
        score = (w1**2 / np.diag(u1) ** 2).T.ravel()
        gone = np.zeros(score.size, bool)
        gone[np.argsort(score, kind="stable")[:k]] = True
        keep1 = ~gone.reshape(b1 - b0, d_out).T
        err = np.zeros_like(w1)
        for i in range(b1 - b0):
            q = np.where(keep1[:, i], w1[:, i], 0.0)
            err[:, i] = (w1[:, i] - q) / u1[i, i]
            w1[:, i:] -= np.outer(err[:, i], u1[i, i:])
            w1[:, i] = q
        w[:, b0:b1], keep[:, b0:b1] = w1, keep1
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return w.T, keep.T


def _model(width: int, depth: int = 4):
    import flax.linen as nn
    import jax

    layers = []
    for _ in range(depth - 1):
        layers += [nn.Dense(width), nn.gelu]
    model = nn.Sequential([*layers, nn.Dense(width)])
    x = jax.random.normal(jax.random.key(0), (4, 256, width))
    params = model.init(jax.random.key(1), x[0])["params"]
    return (lambda p, b: model.apply({"params": p}, b)), params, list(x)


def model_rows(widths, repeats: int) -> list[dict]:
    import jaxsparse as js

    rows = []
    for width in widths:
        model = _model(width)

        def call(method, model=model):
            return js.oneshot.prune(*model, method=method, sparsity=0.5)

        calls = {m: lambda m=m: call(m) for m in ("magnitude", "wanda", "sparsegpt")}
        times = timing.interleaved(calls, repeats, warmup=1).wall
        n = 4 * width * width
        for m, t in times.items():
            rows.append(
                {"what": f"{m}, 4 Dense {width}x{width}", "weights": n,
                 "ours_ms": timing.median(t) * 1e3}
            )  # fmt: skip
    return rows


def layer_row(size: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    x = jax.random.normal(jax.random.key(2), (2 * size, size))
    w = jax.random.normal(jax.random.key(3), (size, size))
    gram = x.T @ x
    ours = jax.jit(lambda w, g: js.oneshot.sparsegpt(w, g, 0.5))
    gram_np, w_np = np.asarray(gram), np.asarray(w)
    calls = {"ours": lambda: ours(w, gram), "numpy": lambda: numpy_sparsegpt(w_np, gram_np, 0.5)}
    times = timing.interleaved(calls, repeats, warmup=1).wall
    new, keep = ours(w, gram)
    ref_w, ref_keep = numpy_sparsegpt(w_np, gram_np, 0.5)
    agree = float(np.mean(np.asarray(keep) == ref_keep))
    diff = float(jnp.max(jnp.abs(new - ref_w)) / jnp.max(jnp.abs(ref_w)))
    return timing.row(
        f"SparseGPT 50%, one {size}x{size} layer, blocks of 128",
        timing.median(times["ours"]),
        timing.median(times["numpy"]),
        "NumPy/SciPy, same algorithm",
        mask_agreement=agree,
        max_rel_weight_diff=diff,
    )


def measure(quick: bool) -> dict:
    widths = [32, 64] if quick else [128, 256, 512]
    size = 256 if quick else 4096
    rows = model_rows(widths, 3)
    rows.append(layer_row(size, 3 if quick else 1))
    note = (
        "`js.oneshot.prune` at 50% (sequential; calibration 4 batches of 256 tokens) on a "
        "stack of 4 Dense layers, whole-model time per method (compiled programs cached "
        "after a warm-up call); then SparseGPT on one layer against a NumPy/SciPy "
        "implementation of the same algorithm (lazy block updates, the same exact counts: "
        "mask_agreement is the share of equal mask entries). "
        f"{timing.clock_words().capitalize()}, median of interleaved repeats."
    )
    columns = [
        ("what", "what"),
        ("ours_ms", "jaxsparse ms"),
        ("baseline", "baseline"),
        ("baseline_ms", "baseline ms"),
        ("ratio", "ratio"),
        ("mask_agreement", "mask agreement"),
    ]
    return timing.section("One-shot pruning", rows, note, columns)
