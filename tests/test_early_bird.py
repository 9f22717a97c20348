"""The early-bird detector on constructed mask sequences, against a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse as js
from jaxsparse import early_bird

RNG = np.random.default_rng(0)
BASE = RNG.random(40) < 0.5  # 40 entries: leaf "a" (4, 8) then leaf "b" (8,)


def _tree(flat: np.ndarray) -> dict:
    return {"a": jnp.asarray(flat[:32].reshape(4, 8)), "b": jnp.asarray(flat[32:])}


def _flip(idx) -> np.ndarray:
    out = BASE.copy()
    out[list(idx)] ^= True
    return out


# By construction (40 entries, eps = 0.1 allows 4 differing entries):
# m0, m1, m2 are far from BASE; m3..m7 stay within 2 flips of it, and m2 differs from
# every later one by >= 5 entries. With window 5 the rule first holds when m7 is pushed
# (FIFO m3..m7); m8 is far again.
SEQUENCE = [
    ~BASE,
    _flip(range(20, 30)),
    _flip(range(10, 15)),
    _flip([0, 1]),
    _flip([2, 3]),
    _flip([]),
    _flip([0, 1]),
    _flip([35, 36]),
    ~BASE,
]
FIRST_FOUND = 7


def _reference(seq, window, eps):
    """Per push: distances (oldest first, inf unfilled) and found, by NumPy."""
    dists, flags = [], []
    for t in range(len(seq)):
        d = []
        for back in range(window - 1, 0, -1):
            d.append(np.mean(seq[t] != seq[t - back]) if t - back >= 0 else np.inf)
        dists.append(np.float32(d))
        flags.append(t >= window - 1 and all(x <= eps for x in d))
    return np.stack(dists), np.array(flags)


def test_finds_exactly_the_first_push_where_the_rule_holds():
    eb = early_bird.init(_tree(SEQUENCE[0]), window=5)
    flags, dists = [], []
    for m in SEQUENCE:
        eb = early_bird.update(eb, _tree(m))
        flags.append(bool(early_bird.found(eb, 0.1)))
        dists.append(np.asarray(early_bird.distances(eb)))
    assert flags.index(True) == FIRST_FOUND
    assert flags == [False] * FIRST_FOUND + [True, False]
    # at the push where it holds: m7 vs m3, m4, m5, m6 differ in 4, 4, 2, 4 entries
    np.testing.assert_array_equal(dists[FIRST_FOUND], np.float32([4, 4, 2, 4]) / 40)
    ref_d, ref_f = _reference(SEQUENCE, 5, 0.1)
    np.testing.assert_allclose(np.stack(dists), ref_d, rtol=1e-6)
    assert flags == list(ref_f)


def test_never_found_before_the_fifo_is_full():
    m = _tree(BASE)
    eb = early_bird.init(m, window=5)
    for t in range(7):
        eb = early_bird.update(eb, m)  # identical masks: distance 0 from the start
        d = np.asarray(early_bird.distances(eb))
        assert int(eb.count) == t + 1
        # the newest is compared with the t older masks pushed so far, the rest is inf
        assert np.all(d[: max(4 - t, 0)] == np.inf) and np.all(d[max(4 - t, 0) :] == 0)
        assert bool(early_bird.found(eb, eps=1.0)) == (t >= 4)


@pytest.mark.parametrize("window", [2, 3, 6])
def test_random_sequences_match_the_reference(window):
    rng = np.random.default_rng(window)
    seq = [BASE.copy()]
    for _ in range(11):  # flip a few entries each push: distances cross eps now and then
        nxt = seq[-1].copy()
        nxt[rng.choice(40, rng.integers(0, 4), replace=False)] ^= True
        seq.append(nxt)
    ref_d, ref_f = _reference(seq, window, 0.1)
    eb = early_bird.init(_tree(seq[0]), window=window)
    for t, m in enumerate(seq):
        eb = early_bird.update(eb, _tree(m))
        np.testing.assert_allclose(np.asarray(early_bird.distances(eb)), ref_d[t], rtol=1e-6)
        assert bool(early_bird.found(eb)) == ref_f[t]
    assert ref_f.any() and not ref_f.all()  # the sequence exercises both answers


def test_distances_agree_with_hamming():
    eb = early_bird.init(_tree(SEQUENCE[0]), window=3)
    for m in SEQUENCE[:5]:
        eb = early_bird.update(eb, _tree(m))
    want = [js.hamming(_tree(SEQUENCE[4]), _tree(SEQUENCE[i]), where=js.all_leaves) for i in (2, 3)]
    np.testing.assert_allclose(np.asarray(early_bird.distances(eb)), np.float32(want))


def test_runs_in_jit_without_recompiling():
    traces = []

    @jax.jit
    def step(eb, mask, eps):
        traces.append(None)
        eb = early_bird.update(eb, mask)
        return eb, early_bird.found(eb, eps), early_bird.distances(eb)

    eb = early_bird.init(_tree(SEQUENCE[0]), window=5)
    flags = []
    for m in SEQUENCE:
        eb, f, _ = step(eb, _tree(m), 0.1)
        flags.append(bool(f))
    assert len(traces) == 1  # nine pushes, one compile
    assert flags.index(True) == FIRST_FOUND


def test_runs_in_lax_scan():
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[_tree(m) for m in SEQUENCE])

    @jax.jit
    def run(stacked):
        def body(eb, mask):
            eb = early_bird.update(eb, mask)
            return eb, (early_bird.found(eb), early_bird.distances(eb))

        eb0 = early_bird.init(jax.tree.map(lambda x: x[0], stacked), window=5)
        return jax.lax.scan(body, eb0, stacked)

    eb, (flags, dists) = run(stacked)
    ref_d, ref_f = _reference(SEQUENCE, 5, 0.1)
    np.testing.assert_array_equal(np.asarray(flags), ref_f)
    np.testing.assert_allclose(np.asarray(dists), ref_d, rtol=1e-6)
    assert int(np.argmax(np.asarray(flags))) == FIRST_FOUND
    assert int(eb.count) == len(SEQUENCE)


def test_where_restricts_the_compared_leaves():
    # a param mask: the bias leaf changes, yet with where=kernels only "w" counts
    m1 = {"w": jnp.array([[True, True], [False, False]]), "b": jnp.array([True, True])}
    m2 = {"w": jnp.array([[True, False], [False, False]]), "b": jnp.array([False, False])}
    eb = early_bird.init(m1, window=2, where=js.kernels)
    assert int(eb.size) == 4 and eb.masks["b"].shape == (2, 0)
    eb = early_bird.update(early_bird.update(eb, m1), m2)
    np.testing.assert_allclose(np.asarray(early_bird.distances(eb)), [0.25])
    eb_all = early_bird.init(m1, window=2)
    eb_all = early_bird.update(early_bird.update(eb_all, m1), m2)
    np.testing.assert_allclose(np.asarray(early_bird.distances(eb_all)), [3 / 6])


def test_bad_input_names_the_place():
    mask = _tree(BASE)
    eb = early_bird.init(mask)
    with pytest.raises(ValueError, match=r"missing paths \['b'\]"):
        early_bird.update(eb, {"a": mask["a"]})
    with pytest.raises(ValueError, match="leaf 'b' has shape"):
        early_bird.update(eb, {"a": mask["a"], "b": jnp.ones(20, bool)})
    with pytest.raises(TypeError, match="leaf 'a' has dtype float32"):
        early_bird.update(eb, {"a": jnp.ones((4, 8)), "b": mask["b"]})
    for eps in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"eps must be in \[0, 1\]"):
            early_bird.found(eb, eps)
    early_bird.found(eb, 0.0), early_bird.found(eb, 1.0)  # the bounds are allowed
    for window in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="window must be an int >= 2"):
            early_bird.init(mask, window=window)
    with pytest.raises(ValueError, match="selects no mask entry"):
        early_bird.init({"b": jnp.ones(3, bool)}, where=js.kernels)
