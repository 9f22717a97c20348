"""elastic: block mappings by value, where each source leaf lands, the shuffle control, errors."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsparse as js
from jaxsparse.elastic import SQUEEZE, STRETCH, block_mapping, elastic

STRATEGIES = sorted(set(STRETCH + SQUEEZE))


@pytest.mark.parametrize(
    ("n", "m", "strategy", "expected"),
    [
        # the paper's ResNet-32 -> 56 stretch, 5 -> 9 blocks a stage
        (5, 9, "interleave", [0, 1, 1, 2, 2, 3, 3, 4, 4]),
        (5, 9, "cycle", [0, 1, 2, 3, 4, 1, 2, 3, 4]),
        (5, 9, "replicate_last", [0, 1, 2, 3, 4, 4, 4, 4, 4]),
        # M - 1 not a multiple of N - 1: the earlier blocks get the extra copy
        (3, 6, "interleave", [0, 1, 1, 1, 2, 2]),
        (4, 6, "interleave", [0, 1, 1, 2, 2, 3]),
        (3, 6, "cycle", [0, 1, 2, 1, 2, 1]),
        # squeezes
        (6, 3, "interleave", [0, 1, 4]),
        (8, 4, "interleave", [0, 1, 4, 6]),
        (9, 3, "interleave", [0, 1, 5]),  # ElasticLTH's ResNet-56 -> 20 "interleave"
        (6, 3, "keep_first", [0, 1, 2]),
        (6, 3, "keep_last", [0, 4, 5]),
        (6, 1, "keep_last", [0]),
    ],
)
def test_block_mapping_by_value(n, m, strategy, expected):
    assert block_mapping(n, m, strategy) == expected


def test_block_mapping_invariants_exhaustively():
    for n, m, strategy in itertools.product(range(1, 10), range(1, 10), STRATEGIES):
        stretch, squeeze = m > n, m < n
        if (stretch and strategy not in STRETCH) or (squeeze and strategy not in SQUEEZE):
            continue
        if n == 1 and m > 1:
            continue
        got = block_mapping(n, m, strategy)
        assert len(got) == m and got[0] == 0 and all(0 <= b < n for b in got)
        if n == m:
            assert got == list(range(n))  # N -> N is the identity, any strategy
        if squeeze:  # a subset, in order
            assert all(a < b for a, b in itertools.pairwise(got))
        if stretch and strategy in ("interleave", "cycle"):
            assert set(got) == set(range(n))  # every source block is used
        if strategy == "interleave":
            assert all(a <= b for a, b in itertools.pairwise(got))
            if stretch:  # copies per block differ by at most one, earlier blocks first
                counts = [got[1:].count(b) for b in range(1, n)]
                assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True)
                # squeezing the stretched net back recovers each source block
                back = block_mapping(m, n, "interleave")
                assert [got[j] for j in back] == list(range(n))


def make_tree(blocks, *, stages=(1, 2), width=4, seed=0, extra_role=False):
    """A ResNet-like params dict: a stem, stages of blocks (block 0 has a projection of
    another shape), a head. Every leaf of block b in stage s is filled with 100 s + b."""
    rng = np.random.default_rng(seed)
    tree = {"stem": {"kernel": jnp.asarray(rng.normal(size=(8, width)), jnp.float32)}}
    for s in stages:
        for b in range(blocks):
            v = 100.0 * s + b
            blk = {
                "conv": {"kernel": jnp.full((width, width), v)},
                "bn": {"scale": jnp.full((width,), v)},
            }
            if b == 0:
                blk["proj"] = {"kernel": jnp.full((width, width // 2), v)}
            if extra_role:
                blk["conv2"] = {"kernel": jnp.full((width, width), v)}
            tree[f"stage{s}_block{b}"] = blk
    tree["head"] = {"kernel": jnp.asarray(rng.normal(size=(width, 2)), jnp.float32)}
    return tree


def make_mask(tree, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.random(x.shape) < 0.5), tree)


CASES = [(n, m, s) for n, m in [(3, 5), (3, 6), (4, 7)] for s in STRETCH] + [
    (n, m, s) for n, m in [(5, 3), (7, 3), (4, 2)] for s in SQUEEZE
]


@pytest.mark.parametrize(("n", "m", "strategy"), CASES)
def test_each_target_block_holds_its_mapped_source_block(n, m, strategy):
    src, tgt = make_tree(n), make_tree(m, seed=1)
    mask = make_mask(src)
    params, new_mask = elastic(src, mask, tgt, strategy=strategy)
    expected = block_mapping(n, m, strategy)
    for s in (1, 2):
        for b in range(m):
            got_p, got_m = params[f"stage{s}_block{b}"], new_mask[f"stage{s}_block{b}"]
            from_p, from_m = (
                src[f"stage{s}_block{expected[b]}"],
                mask[f"stage{s}_block{expected[b]}"],
            )
            chex.assert_trees_all_equal(got_m, from_m)
            # the rewind weights come along, zero where pruned: value 100 s + source block
            chex.assert_trees_all_equal(got_p, js.apply_mask(from_p, from_m))
            alive = np.asarray(got_p["conv"]["kernel"])[np.asarray(got_m["conv"]["kernel"])]
            assert (alive == 100 * s + expected[b]).all()
    for name in ("stem", "head"):  # copied as they are
        chex.assert_trees_all_equal(new_mask[name], mask[name])
        chex.assert_trees_all_equal(params[name], js.apply_mask(src[name], mask[name]))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_n_to_n_is_the_identity_for_every_strategy(strategy):
    src = make_tree(4)
    mask = make_mask(src, 3)
    params, new_mask = elastic(src, mask, make_tree(4, seed=9), strategy=strategy)
    chex.assert_trees_all_equal(new_mask, mask)
    chex.assert_trees_all_equal(params, js.apply_mask(src, mask))


def test_explicit_mapping_overrides_its_stages_only():
    src, tgt = make_tree(3), make_tree(4)
    params, _ = elastic(src, make_mask(src), tgt, mapping={"2": [0, 2, 2, 1]})
    kernel = {b: float(params[f"stage2_block{b}"]["bn"]["scale"].max()) for b in range(4)}
    assert kernel == {0: 200.0, 1: 202.0, 2: 202.0, 3: 201.0}
    # stage 1 uses the strategy (interleave: 0, 1, 1, 2)
    scale = [float(params[f"stage1_block{b}"]["bn"]["scale"].max()) for b in range(4)]
    assert scale == [100.0, 101.0, 101.0, 102.0]


def test_a_custom_block_regex_on_nested_paths():
    src = {
        "layers": {
            f"res{s}": {str(b): {"w": jnp.full((2, 2), 10.0 * s + b)} for b in range(2)}
            for s in range(2)
        }
    }
    tgt = {
        "layers": {
            f"res{s}": {str(b): {"w": jnp.zeros((2, 2))} for b in range(4)} for s in range(2)
        }
    }
    mask = jax.tree.map(lambda x: jnp.ones(x.shape, bool), src)
    params, _ = elastic(
        src, mask, tgt, block=r"res(?P<stage>\d+)/(?P<block>\d+)/", strategy="cycle"
    )
    got = [
        [float(params["layers"][f"res{s}"][str(b)]["w"][0, 0]) for b in range(4)] for s in range(2)
    ]
    assert got == [[0.0, 1.0, 1.0, 1.0], [10.0, 11.0, 11.0, 11.0]]


def test_shuffle_control_keeps_each_leaf_count_and_moves_positions():
    width = 16
    src, tgt = make_tree(3, width=width), make_tree(5, width=width)
    mask = make_mask(src, 4)
    plain = jax.device_get(elastic(src, mask, tgt)[1])
    params, shuffled = jax.device_get(elastic(src, mask, tgt, shuffle_key=jax.random.key(0)))
    moved = 0
    for name in plain:
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(plain[name])[0], jax.tree.leaves(shuffled[name])
        ):
            assert int(a.sum()) == int(b.sum()), (name, path)  # the same density, exactly
            if name.endswith("block0") or name in ("stem", "head") or a.ndim < 2:
                np.testing.assert_array_equal(a, b)  # not shuffled: block 0, stem, head, bn
            else:
                moved += int((a != b).any())
    assert moved == 2 * 4  # the conv kernel of blocks 1..4 in both stages
    # two copies of the same source block get different shuffles
    assert not np.array_equal(
        shuffled["stage1_block1"]["conv"]["kernel"], shuffled["stage1_block2"]["conv"]["kernel"]
    )
    for w, m in zip(jax.tree.leaves(params), jax.tree.leaves(shuffled)):
        assert (w[~m] == 0).all()
    # the same key gives the same control; where= picks what is shuffled
    chex.assert_trees_all_equal(elastic(src, mask, tgt, shuffle_key=jax.random.key(0))[1], shuffled)
    _, bn_too = elastic(src, mask, tgt, shuffle_key=jax.random.key(0), where=js.all_leaves)
    assert not np.array_equal(
        bn_too["stage2_block3"]["bn"]["scale"], plain["stage2_block3"]["bn"]["scale"]
    )
    assert int(bn_too["stage2_block3"]["bn"]["scale"].sum()) == int(
        plain["stage2_block3"]["bn"]["scale"].sum()
    )


def test_jit_and_target_sharding():
    src, tgt = make_tree(2), make_tree(3)
    mask = make_mask(src, 5)
    eager = elastic(src, mask, tgt)
    jitted = jax.jit(lambda p, m, t: elastic(p, m, t))(src, mask, tgt)
    chex.assert_trees_all_equal(jitted, eager)
    # outputs take the target leaves' sharding
    mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
    rows = NamedSharding(mesh, P("x"))
    tgt_sharded = jax.tree.map(lambda x: jax.device_put(x, rows), tgt)
    params, new_mask = elastic(src, mask, tgt_sharded)
    assert all(x.sharding == rows for x in jax.tree.leaves((params, new_mask)))


def test_errors_name_the_paths_blocks_and_arguments():
    src, tgt = make_tree(3), make_tree(5)
    mask = make_mask(src)
    with pytest.raises(ValueError, match=r"needs the named groups .*; it has \[\]"):
        elastic(src, mask, tgt, block=r"stage(\d+)_block(\d+)/")
    with pytest.raises(ValueError, match="matches no source path"):
        elastic(src, mask, tgt, block=r"layer(?P<stage>\d+)_(?P<block>\d+)/")
    with pytest.raises(ValueError, match="strategy must be one of"):
        elastic(src, mask, tgt, strategy="random")
    with pytest.raises(ValueError, match="strategy must be one of"):
        elastic(src, mask, tgt, strategy="nope", mapping={1: [0] * 5, 2: [0] * 5})
    with pytest.raises(ValueError, match="'keep_first' squeezes only"):
        elastic(src, mask, tgt, strategy="keep_first")
    with pytest.raises(ValueError, match="'cycle' stretches only"):
        elastic(tgt, make_mask(tgt), src, strategy="cycle")
    with pytest.raises(ValueError, match=r"mapping\[1\]\[3\] names source block 5.*blocks 0..2"):
        elastic(src, mask, tgt, mapping={1: [0, 1, 2, 5, 1]})
    with pytest.raises(ValueError, match=r"mapping\[1\] has 3 entries.*5 blocks"):
        elastic(src, mask, tgt, mapping={1: [0, 1, 2]})
    with pytest.raises(ValueError, match="mapping names stage 7"):
        elastic(src, mask, tgt, mapping={7: [0, 1, 2, 2, 2]})
    # block 0 taken from block 1, which has no projection: the target's is left unfilled
    with pytest.raises(
        ValueError, match=r"fills the target leaves \['stage1_block0/proj/kernel'\]"
    ):
        elastic(src, mask, tgt, mapping={1: [1, 1, 1, 1, 1]})
    wide = make_tree(5, width=6)
    wide["stem"] = tgt["stem"]
    with pytest.raises(
        ValueError,
        match=r"source leaf 'head/kernel' has shape \(4, 2\) but target leaf "
        r"'head/kernel' has shape \(6, 2\)",
    ):
        elastic(src, mask, wide)
    with pytest.raises(
        ValueError, match=r"no source leaf fills the target leaves \['stage1_block0/conv2"
    ):
        elastic(src, mask, make_tree(5, extra_role=True))
    with pytest.raises(ValueError, match=r"target stages \[1\]"):
        elastic(src, mask, make_tree(5, stages=(1,)))
    gap = {k: v for k, v in src.items() if k != "stage2_block1"}
    with pytest.raises(ValueError, match=r"source stage 2 has blocks \[0, 2\]"):
        elastic(gap, make_mask(gap), tgt)
    more = src | {"pool": {"w": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"outside the blocks are not in the target: \['pool/w'\]"):
        elastic(more, make_mask(more), tgt)
    with pytest.raises(ValueError, match="cannot stretch a stage with only block 0"):
        elastic(make_tree(1), make_mask(make_tree(1)), tgt)
    with pytest.raises(ValueError, match="elastic: mask"):
        elastic(src, make_mask(tgt), tgt)
