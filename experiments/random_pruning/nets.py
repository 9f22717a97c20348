"""The study's networks and the "smaller dense network with as many parameters".

* ``mlp``: :class:`experiments.models.LeNet300` with ``depth`` hidden layers of ``h``
  units, on the 784 pixels.
* ``conv``: :class:`SmallConv` on the digits average-pooled to 14x14: two 3x3
  convolutions of ``c`` channels, each followed by ReLU and a 2x2 max-pool (14 -> 7 -> 3),
  then a dense layer of ``h`` units and the output. The convolutions are written as nine
  shifted matrix products (the same function as ``nn.Conv`` with SAME padding), because
  XLA's CPU convolution is slow when ``vmap`` stacks dozens of networks, while batched
  matrix products are fast.

A small dense network is trained *inside* the wide one: its weights (drawn with its own
Glorot-normal init) are copied into the first units of every layer and the mask keeps
exactly those (:func:`embed`). The units outside get zero weights, zero biases and zero
gradients, so the wide network computes exactly the small network's function and its
training (Adam is per weight) is the small network's, while every arm of a width shares
one compiled program.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments import models

_glorot = nn.initializers.glorot_normal()
FLAT_SPATIAL = 9  # 3x3 positions after two 2x2 pools of 14x14


class PatchConv(nn.Module):
    """A 3x3 SAME convolution (kernel ``(3, 3, c_in, features)``) as 9 shifted matmuls."""

    features: int

    @nn.compact
    def __call__(self, x):
        k = self.param("kernel", _glorot, (3, 3, x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        h, w = x.shape[1:3]
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = b
        for i in range(3):
            for j in range(3):
                out = out + xp[:, i : i + h, j : j + w, :] @ k[i, j]
        return out


def _pool(x):
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class SmallConv(nn.Module):
    """conv3(c)-pool-conv3(c)-pool-dense(h)-dense(10) on 14x14 digits."""

    channels: int
    hidden: int
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], 14, 14, 1)
        x = _pool(nn.relu(PatchConv(self.channels, name="conv_0")(x)))
        x = _pool(nn.relu(PatchConv(self.channels, name="conv_1")(x)))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, kernel_init=_glorot, name="hidden_0")(x))
        return nn.Dense(self.num_classes, kernel_init=_glorot, name="output")(x)


def build(family: str, depth: int, c: int, h: int) -> nn.Module:
    """The network: ``mlp`` (``depth`` hidden layers of ``h``) or ``conv`` (``c``, ``h``)."""
    if family == "mlp":
        return models.LeNet300(hidden=(h,) * depth)
    return SmallConv(channels=c, hidden=h)


def in_features(family: str) -> int:
    return 784 if family == "mlp" else 196


def kernel_count(family: str, depth: int, c: int, h: int) -> int:
    """Kernel weights (the prunable parameters) of :func:`build`'s network."""
    if family == "mlp":
        return 784 * h + (depth - 1) * h * h + 10 * h
    return 9 * c + 9 * c * c + FLAT_SPATIAL * c * h + 10 * h


def small_size(family: str, depth: int, c: int, h: int, alive: float) -> tuple[int, int]:
    """The (channels, hidden) of the narrower dense net of the same family whose kernel
    count is closest to ``alive``: one scale ``r`` for every layer (``max(1, round(r c))``
    channels, ``max(1, round(r h))`` units), searched on a fine grid."""
    best, best_err = (1, 1), float("inf")
    for r in np.linspace(0.0, 1.0, 4001)[1:]:
        cc, hh = max(1, round(r * c)), max(1, round(r * h))
        err = abs(kernel_count(family, depth, cc, hh) - alive)
        if err < best_err:
            best, best_err = (cc, hh), err
    return best


def embed(small, wide_like, family: str, xp=jnp):
    """Copies ``small``'s leaves into the leading corner of zero leaves shaped like
    ``wide_like`` (the conv net's flattened dense layer block by spatial position);
    ``xp`` is ``jax.numpy`` (traced) or ``numpy`` (masks, on the host)."""

    def one(path, s, w):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if family == "conv" and name == "hidden_0/kernel":
            s = s.reshape(FLAT_SPATIAL, -1, s.shape[-1])
            n_c = w.shape[0] // FLAT_SPATIAL
            pad = [(0, 0), (0, n_c - s.shape[1]), (0, w.shape[1] - s.shape[2])]
            return xp.pad(s, pad).reshape(w.shape)
        return xp.pad(s, [(0, a - b) for a, b in zip(w.shape, s.shape)])

    return jax.tree_util.tree_map_with_path(one, small, wide_like)


def random_mask(rng, like, targets):
    """A mask with ``n - round(t * n)`` alive weights at uniformly random positions in
    every leaf (``t`` its target sparsity, ``n`` its size): the exact counts of
    :func:`jaxsparse.prune`. Built on the host with NumPy (no compilation per network)."""

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
