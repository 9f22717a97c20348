"""Small Flax Linen models for the structured-sparsity tests, with NumPy-filled variables."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxsparse as js
from jaxsparse import structured


class MLP(nn.Module):
    widths: Sequence[int]

    @nn.compact
    def __call__(self, x):
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(3)(x)


class CNN(nn.Module):
    widths: Sequence[int]

    @nn.compact
    def __call__(self, x, train: bool = False):
        for w in self.widths:
            x = nn.Conv(w, (3, 3))(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.5)(x))
        return nn.Dense(5)(jnp.mean(x, axis=(1, 2)))  # global average pooling


def init_variables(model, x, seed=0):
    """Random variables for ``model`` filled by NumPy: Flax's initialisers compile slowly."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = js.filters.path_str(path)
        n = rng.standard_normal(s.shape).astype(np.float32)
        if len(s.shape) >= 2:
            return jnp.asarray(n / np.sqrt(np.prod(s.shape[:-1])))
        if name.endswith(("scale", "var")):  # BN scale and variance: positive, not 1
            return jnp.asarray(1.0 + 0.3 * np.abs(n))
        return jnp.asarray(0.1 * n)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def prune_groups(tree, spec, fraction, scope="global", *, how="l2", score_where=None, **kw):
    """``(group_mask, param_mask)`` from group scores, jitted: eager ``prune`` compiles op
    by op, which costs seconds on a loaded 2-core machine."""

    @jax.jit
    def run(tree):
        gs = structured.group_scores(tree, spec, how, where=score_where)
        gmask = js.prune(gs, js.mask_like(gs), fraction, scope=scope, where=js.all_leaves, **kw)
        return gmask, structured.expand(gmask, spec, tree)

    return run(tree)
