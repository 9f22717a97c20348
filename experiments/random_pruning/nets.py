"""The study's MLP, its random masks, and every arm's initial weights.

* The network: :class:`experiments.models.LeNet300` with ``depth`` hidden layers of
  ``h`` units on MNIST-1D's 40 inputs (Glorot-normal kernels, zero biases).
* A sparse arm starts from its seed's dense init at the alive positions
  (:func:`initial_params`): as it is (``init="dense"``), or with every alive kernel
  weight multiplied by ``1/sqrt(d)``, ``d`` the layer's density (``init="scaled"``,
  Evci et al. 2022), which gives each unit's pre-activation the variance of the dense
  net's: zeroing a fraction ``1 - d`` of the weights alone shrinks it by ``d``.
* A small dense network is trained *inside* the wide one: its weights (its own
  Glorot-normal init, matched to its own width) are copied into the first units of every
  layer and the mask keeps exactly those (:func:`embed`). The wide network then computes
  exactly the small network's function and trains as it does (Adam is per weight),
  while every arm of a width shares one compiled program.
"""

from __future__ import annotations

import jax
import numpy as np

from experiments import models

IN_FEATURES = 40  # MNIST-1D signal length
NUM_CLASSES = 10


def build(depth: int, h: int):
    """The MLP: ``depth`` hidden layers of ``h`` units, 10 outputs."""
    return models.LeNet300(hidden=(h,) * depth)


def glorot_params(rng: np.random.Generator, depth: int, h: int) -> dict:
    """:func:`build`'s params drawn on the host (NumPy), as flax's Glorot-normal init
    draws them: kernels from a normal truncated at 2 standard deviations, rescaled to
    standard deviation ``sqrt(2 / (fan_in + fan_out))``; biases zero. Drawing on the host
    needs no compilation (each narrow net would otherwise compile its own init)."""
    sizes = [IN_FEATURES, *([h] * depth), NUM_CLASSES]
    names = [f"hidden_{i}" for i in range(depth)] + ["output"]
    out = {}
    for name, fan_in, fan_out in zip(names, sizes[:-1], sizes[1:]):
        z = rng.standard_normal((fan_in, fan_out))
        while (bad := np.abs(z) > 2).any():
            z[bad] = rng.standard_normal(int(bad.sum()))
        std = np.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978  # truncation
        out[name] = {
            "kernel": (z * std).astype(np.float32),
            "bias": np.zeros(fan_out, np.float32),
        }
    return out


def kernel_count(depth: int, h: int) -> int:
    """Kernel weights (the prunable parameters) of :func:`build`'s network."""
    return IN_FEATURES * h + (depth - 1) * h * h + NUM_CLASSES * h


def small_width(depth: int, h: int, alive: float) -> int:
    """The hidden width (at most ``h``) of the dense MLP whose kernel count is closest
    to ``alive``."""
    return min(range(1, h + 1), key=lambda k: abs(kernel_count(depth, k) - alive))


def embed(small, wide_like):
    """Copies ``small``'s leaves into the leading corner of zero leaves shaped like
    ``wide_like`` (NumPy, on the host)."""
    return jax.tree.map(
        lambda s, w: np.pad(np.asarray(s), [(0, a - b) for a, b in zip(w.shape, s.shape)]),
        small,
        wide_like,
    )


def random_mask(rng: np.random.Generator, like, targets):
    """A mask with ``n - round(t * n)`` alive weights at uniformly random positions in
    every leaf (``t`` its target sparsity, ``n`` its size): the exact counts of
    :func:`jaxsparse.prune`. Built on the host with NumPy (no compilation)."""

    def one(x, t):
        n = int(np.prod(x.shape))
        alive = n - round(float(t) * n)
        return (rng.permutation(n) < alive).reshape(x.shape)

    return jax.tree.map(one, like, targets)


def global_top_densities(scores, shapes, kernel, sparsity: float) -> list[float]:
    """Per-leaf sparsities of keeping the ``N - round(sparsity N)`` highest scores over
    all kernel leaves (``N`` their total): SNIP's global selection, by layer."""
    flat = np.concatenate([np.ravel(s) for s, k in zip(scores, kernel) if k])
    n_dead = round(sparsity * flat.size)
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[: flat.size - n_dead]] = True
    out, i = [], 0
    for shape, k in zip(shapes, kernel):
        if not k:
            out.append(0.0)
            continue
        n = int(np.prod(shape))
        out.append(1.0 - keep[i : i + n].sum() / n)
        i += n
    return out


def init_scale(mask, init: str):
    """Per-leaf factor for the alive weights: 1 (``"dense"``: the dense init as it is),
    or ``1/sqrt(d)`` on kernels (``"scaled"``), ``d`` the leaf's alive fraction in
    ``mask``; biases (1-D leaves) keep factor 1."""
    if init not in ("dense", "scaled"):
        raise ValueError(f"init_scale: init must be 'dense' or 'scaled', got {init!r}")

    def one(m):
        m = np.asarray(m)
        if init == "dense" or m.ndim < 2 or not m.any():
            return 1.0
        return float(1.0 / np.sqrt(m.mean()))

    return jax.tree.map(one, mask)


def initial_params(dense, mask, init: str):
    """A sparse arm's initial weights: the dense init ``dense`` zeroed where ``mask`` is
    ``False``, its alive kernel weights times :func:`init_scale` (NumPy, float32).

    Example::

        >>> import numpy as np
        >>> w = {"k": np.ones((2, 2), np.float32)}
        >>> m = {"k": np.array([[True, False], [False, False]])}
        >>> initial_params(w, m, "scaled")["k"]  # density 1/4: alive weight x 2
        array([[2., 0.],
               [0., 0.]], dtype=float32)
    """
    scale = init_scale(mask, init)
    return jax.tree.map(
        lambda w, m, c: np.where(m, np.asarray(w) * np.float32(c), 0).astype(np.float32),
        dense,
        mask,
        scale,
    )
