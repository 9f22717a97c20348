"""The selection batched across leaves (``jaxsparse/_packed.py``): its program does
not grow with the number of leaves, and on a model-shaped tree (ResNet-50's 161
leaves, narrow) its masks are NumPy's, ties and all."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse as js
from experiments.bench import model_trees
from tests.test_pruning import ref_global, ref_layerwise

SHAPES = [(3, 3, 16, 32), (64, 48), (32, 3, 2, 5), (100, 7)]


def _ops(n_leaves: int, scope: str) -> int:
    """Operations in the lowered program of one jitted prune over ``n_leaves``."""
    p = {f"l{i:03d}": jnp.ones(SHAPES[i % len(SHAPES)]) for i in range(n_leaves)}
    text = jax.jit(lambda s, m: js.prune(s, m, 0.2, scope=scope)).lower(p, js.mask_like(p))
    return sum(1 for line in text.as_text().splitlines() if re.search(r"= \"?\w+\.\w+", line))


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_program_does_not_grow_with_leaves(scope):
    """Ten times the leaves, at most twice the ops: the search, its sample and its
    counts are one program for all leaves; only packing a leaf in and its mask out
    are per leaf (a few ops each). Before the packing: 41211 against 5751 compiled
    instructions (7.2x) for global, 59602 against 6940 (8.6x) for layerwise."""
    small, big = _ops(20, scope), _ops(200, scope)
    assert big <= 2 * small, (small, big)


def _narrow_resnet(seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    shapes = model_trees.narrow_resnet50()

    def value(x):
        v = rng.standard_normal(x.shape).astype(np.float32)
        return np.round(v * 4) / 4 if ties else v  # ties: a few dozen distinct values

    return jax.tree.map(value, shapes)


@pytest.mark.parametrize(
    ("scope", "ties"), [("global", False), ("layerwise", True), ("global", True)]
)
def test_resnet50_tree_matches_numpy(scope, ties):
    params = _narrow_resnet(0, ties)
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 161
    sel = [x.ndim >= 2 for x in leaves]
    ref = ref_global if scope == "global" else ref_layerwise
    prune = jax.jit(lambda s, m: js.prune(s, m, 0.3, scope=scope))
    scores = js.scores.magnitude(params)
    mask = js.mask_like(params)
    want = [np.ones(x.shape, bool) for x in leaves]
    for _ in range(2):  # a second round prunes among the survivors
        mask = prune(scores, mask)
        want = ref([np.abs(x) for x in leaves], want, 0.3, sel=sel)
        for got, w in zip(jax.tree.leaves(mask), want, strict=True):
            np.testing.assert_array_equal(np.asarray(got), w)
