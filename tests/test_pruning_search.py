"""The exact threshold search behind ``prune`` on sizes where it samples a bracket
first (>= 4096 keys): by value against NumPy's stable sort, with heavy ties and NaN, on
one device and on a mesh with Auto and Explicit axes; and the search's pass count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsparse as js
from jaxsparse import _keys, _search, _select
from tests.test_pruning import ref_global, ref_layerwise

# b, d and e share a shape: one stacked block (under Explicit axes e, laid out
# differently, is a block of its own)
SHAPES = {"a": (96, 64), "b": (40, 32), "c": (8, 8), "d": (40, 32), "e": (40, 32)}
SEL = [True] * len(SHAPES)


def _problem(seed: int, kind: str):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in SHAPES.items():
        if kind == "ties":  # six values, NaN and both zeros among them: thresholds land in ties
            out[name] = rng.choice(np.float32([np.nan, -0.0, 0.0, 0.25, 0.5, 1.0]), shape)
        elif kind == "bf16":  # 8 bits of mantissa: many ties, many distinct values
            out[name] = np.abs(rng.standard_normal(shape)).astype(jnp.bfloat16).astype(np.float32)
        else:
            out[name] = np.abs(rng.standard_normal(shape)).astype(np.float32)
    mask = {k: rng.random(v.shape) < 0.8 for k, v in out.items()}
    return out, mask


_PRUNE = {
    scope: jax.jit(lambda s, m, a, scope=scope: js.prune(s, m, a, scope=scope, where=_every))
    for scope in ("global", "layerwise")
}


def _every(path, x):
    return True


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    amount=st.integers(0, 63).map(lambda i: i / 64),
    scope=st.sampled_from(["layerwise", "global"]),
    kind=st.sampled_from(["ties", "bf16", "normal"]),
)
def test_sampled_search_matches_numpy(seed, amount, scope, kind):
    scores, mask = _problem(seed, kind)
    got = _PRUNE[scope](
        jax.tree.map(jnp.asarray, scores), jax.tree.map(jnp.asarray, mask), jnp.float32(amount)
    )
    nan_lowest = [np.where(np.isnan(x), -np.inf, x) for x in jax.tree.leaves(scores)]
    ref = (ref_global if scope == "global" else ref_layerwise)(
        nan_lowest, jax.tree.leaves(mask), amount, sel=SEL
    )
    for g, r in zip(jax.tree.leaves(got), ref, strict=True):
        np.testing.assert_array_equal(np.asarray(g), r)


def _passes(scores, k: int, by_value: bool = True) -> int:
    """Counting passes of the sampled search for the k-th of ``scores`` (all alive),
    counted at run time through a callback; checks the threshold is exact."""
    keys = _keys._keys(scores, jnp.ones(scores.shape, bool))
    n = scores.size
    passes = []

    def counted(t, live):
        jax.debug.callback(lambda: passes.append(1))
        return jnp.sum(keys < t[0], dtype=jnp.int32)[None]

    kk = jnp.asarray([k])
    _, below, _ = jax.jit(
        lambda keys: _search._search(
            counted,
            kk,
            jnp.asarray([_keys._top(jnp.uint32)], jnp.uint32),
            jnp.asarray([n]),
            jnp.uint32,
            32,
            guesses=_select._sample_brackets([[keys]], kk, jnp.asarray([n])),
            by_value=by_value,
        )
    )(keys)
    assert int(below[0]) == k  # distinct scores: an exact threshold exists
    return len(passes)


def test_smooth_scores_take_few_passes():
    """A bracket from the sample and interpolation: a handful of counting passes where
    a radix select takes 32."""
    rng = np.random.default_rng(0)
    scores = jnp.asarray(np.abs(rng.standard_normal((1000, 100))).astype(np.float32))
    assert _passes(scores, 30_000) <= 10


def test_interpolation_between_scores_not_bit_patterns():
    """Evenly spread scores whose k-th lies just past a power of two: the count is
    linear in the score but bends in the key (a float's bit pattern doubles its scale
    at 2**17), so interpolating between scores takes fewer passes than between keys."""
    n = 2_000_000
    scores = jnp.asarray(np.random.default_rng(1).permutation(n).astype(np.float32))
    k = 2**17 + 2_000
    by_value, by_key = _passes(scores, k), _passes(scores, k, by_value=False)
    assert by_value <= 6, by_value
    assert by_value < by_key, (by_value, by_key)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_sampled_search_on_mesh_equals_one_device(axis_type):
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
    scores, mask = _problem(1, "ties")
    specs = {
        "a": P("data", "model"),
        "b": P(None, "model"),
        "c": P(),
        "d": P(None, "model"),
        "e": P("data", None),
    }
    put = {k: NamedSharding(mesh, s) for k, s in specs.items()}
    want = [_PRUNE[s](scores, mask, 0.3) for s in ("global", "layerwise")]
    with jax.set_mesh(mesh):
        s_m = {k: jax.device_put(jnp.asarray(v), put[k]) for k, v in scores.items()}
        m_m = {k: jax.device_put(jnp.asarray(v), put[k]) for k, v in mask.items()}
        for scope, w in zip(("global", "layerwise"), want):
            got = _PRUNE[scope](s_m, m_m, 0.3)  # the same program as one device's
            for k in SHAPES:
                np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(w[k]))
                if axis_type == AxisType.Explicit:
                    assert got[k].sharding.is_equivalent_to(put[k], 2), (k, got[k].sharding)


@pytest.mark.parametrize("seed", [1, 2])
def test_many_groups_end_their_search_together(seed, monkeypatch):
    """A layerwise prune of 64 leaves searches them all at once, so one group whose
    sample misleads its bracket, or whose last entries the interpolation creeps up on,
    sets every group's pass count. Counted at run time (28 and 19 steps for these seeds
    before the bracket widened and the aim moved to the binomial's mode); the masks
    against NumPy's stable sort."""
    from jaxsparse import _packed

    steps = []
    search = _packed._search

    def counted(count_below, *args, **kw):
        def count(t, live):
            if kw.get("by_value"):
                jax.debug.callback(lambda: steps.append(1))
            return count_below(t, live)

        return search(count, *args, **kw)

    monkeypatch.setattr(_packed, "_search", counted)
    rng = np.random.default_rng(seed)
    scores = [np.abs(rng.standard_normal((256, 512))).astype(np.float32) for _ in range(64)]
    got = js.prune([jnp.asarray(s) for s in scores], [jnp.ones(s.shape, bool) for s in scores], 0.5)
    assert len(steps) <= 14, len(steps)
    for g, s in zip(got, scores, strict=True):
        want = np.zeros(s.size, bool)
        want[np.argsort(s.ravel(), kind="stable")[s.size // 2 :]] = True
        np.testing.assert_array_equal(np.asarray(g).ravel(), want)
