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
from jaxsparse import _packed
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


def _kernels(n_leaves: int, scope: str) -> tuple[int, int]:
    """(fused computations, distinct ones up to names) in the CPU-compiled prune over
    ``n_leaves``: XLA:CPU compiles one kernel per distinct fused computation."""
    p = {f"l{i:03d}": jnp.ones(SHAPES[i % len(SHAPES)]) for i in range(n_leaves)}
    text = jax.jit(lambda s, m: js.prune(s, m, 0.2, scope=scope)).lower(p, js.mask_like(p))
    text = text.compile().as_text()
    bodies = re.findall(r"^%fused_computation[\w.]* (\(.*?^\})", text, re.M | re.S)
    names = r"%?[A-Za-z_][\w\-]*(\.\d+)+|, metadata=\{[^}]*\}"
    return len(bodies), len({re.sub(names, "_", b) for b in bodies})


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's kernels")
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_equal_leaves_share_compiled_kernels(scope):
    """Ten times the leaves of the same four shapes, no more distinct kernels: each
    leaf's mask is sliced at an offset XLA cannot fold, so equal-shaped leaves compile
    to one kernel. With constant offsets: 47 -> 226 distinct kernels (global), about
    9 ms of compiling each."""
    (small, small_distinct), (big, big_distinct) = _kernels(20, scope), _kernels(200, scope)
    assert big > small > 0  # fused computations were found: every leaf has its own
    assert big_distinct <= small_distinct + 8, (small_distinct, big_distinct)


def _narrow_resnet(seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    shapes = model_trees.narrow_resnet50()

    def value(x):
        v = rng.standard_normal(x.shape).astype(np.float32)
        return np.round(v * 4) / 4 if ties else v  # ties: a few dozen distinct values

    return jax.tree.map(value, shapes)


@pytest.fixture(params=["count", "rows", "sort"])
def path(request, monkeypatch):
    """Each selection path on this CPU: the counting search as the CPU runs it (group
    by group), as a TPU (or a GPU past ``_SORT_MAX``) runs it (row sums over the whole
    buffer), and the sort a GPU takes, through the branch ``platform_dependent`` gives
    "cpu"."""
    if request.param == "rows":
        monkeypatch.setattr(_packed, "_GROUP_PLATFORMS", ())
    if request.param == "sort":
        monkeypatch.setattr(_packed, "_SORT_PLATFORMS", ("cpu", "cuda", "rocm"))
    return request.param


def test_each_platform_lowers_only_its_own_selection():
    """Lowered for the CPU the prune is the counting search (its while loop) and the sort
    branch costs no compile; lowered for a GPU (possible without one) it is the sort and
    no loop, whose predicate the host would wait for."""
    p = {"a": jnp.ones((64, 48)), "b": jnp.ones((100, 7))}
    fn = jax.jit(lambda s, m: js.prune(s, m, 0.2, scope="layerwise"))
    traced = fn.trace(p, js.mask_like(p))
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    assert "stablehlo.while" in cpu and "stablehlo.sort" in cpu  # the sampled bracket
    for gpu in ("cuda", "rocm"):
        text = traced.lower(lowering_platforms=(gpu,)).as_text()
        assert "stablehlo.while" not in text and "stablehlo.sort" in text, gpu
        # two sorts of one key and one payload each (a radix sort on a GPU; a sort by
        # (group, key) takes a comparison sort, 6x slower on BERT-base on an H200), and
        # no cumsum: a group id per entry built from a constant (jnp.repeat) is folded
        # by XLA at compile time, minutes for ResNet-50
        sorts = re.findall(r"%\S+ = \"stablehlo.sort\"\(([^)]*)\)", text)
        assert len(sorts) == 2 and all(o.count(",") == 1 for o in sorts), sorts
        assert "reduce_window" not in text, gpu


@pytest.mark.parametrize(
    ("scope", "ties"), [("global", False), ("layerwise", True), ("global", True)]
)
def test_resnet50_tree_matches_numpy(scope, ties, path):
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


@pytest.mark.parametrize("seed", [0, 3])  # float32 scores with wide ties; bf16 scores
def test_sort_path_equals_counting_search_on_hard_cases(seed, monkeypatch):
    """NaN, -0.0 and +0.0, heavy ties, dead entries, bf16 scores, groups of very
    different sizes, largest-first, and every way of giving k (fractions of the alive
    or of the whole group, exact counts, traced or static): the GPU's sort marks what
    the counting search marks."""
    rng = np.random.default_rng(seed)
    shapes = [[(17, 5), (3,)], [(40, 30)], [(2, 2), (9, 1, 4), (1,)], [(300,)]]
    scores, cands = [], []
    for group in shapes:
        gs, gc = [], []
        for shape in group:
            v = np.round(rng.standard_normal(shape) * (2 if seed % 2 else 50)) / 4
            v[rng.random(shape) < 0.05] = np.nan
            v[rng.random(shape) < 0.05] = -0.0
            dtype = jnp.bfloat16 if seed == 3 else jnp.float32
            gs.append(jnp.asarray(v, dtype))
            gc.append(jnp.asarray(rng.random(shape) < 0.8))
        scores.append(gs)
        cands.append(gc)
    modes = ["alive", "target", "given", "alive"]
    amounts = [0.3, 0.9, 7, jnp.float32(0.55)]

    def run(largest):
        return _packed.select(scores, cands, modes, amounts, largest=largest)

    for largest in (False, True):
        want = run(largest)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_packed, "_SORT_PLATFORMS", ("cpu",))
            got = run(largest)
        for gw, gg, gc in zip(want, got, cands, strict=True):
            for w, g, c in zip(gw, gg, gc, strict=True):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
                assert not np.any(np.asarray(g) & ~np.asarray(c))
    # all of a group's candidates: the count search once also marked its dead entries
    # (their key tied at the threshold), here and on a mesh
    every = sum(int(np.sum(c)) for c in cands[3])
    # group 2: more than its alive entries asked for marks every alive one, no dead one
    more = sum(int(np.sum(c)) for c in cands[2]) + 4
    counts = jnp.asarray([3, 0, more, every], jnp.int32)
    want = _packed.select(scores, cands, "given", counts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_packed, "_SORT_PLATFORMS", ("cpu",))
        got = _packed.select(scores, cands, "given", counts)
    with jax.set_mesh(jax.make_mesh((2,), ("x",))):  # the leaves kept apart
        apart = _packed.select(scores, cands, "given", counts)
    for gw, gg, ga, gc, n in zip(want, got, apart, cands, [3, 0, more - 4, every], strict=True):
        assert sum(int(np.sum(w)) for w in gw) == n
        for w, g, a, c in zip(gw, gg, ga, gc, strict=True):
            assert not np.any(np.asarray(w) & ~np.asarray(c))
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
            np.testing.assert_array_equal(np.asarray(a), np.asarray(w))
