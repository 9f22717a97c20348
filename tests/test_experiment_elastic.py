"""Tests of the elastic study (``jaxsparse elastic``): the model and its numpy init, the
arms' starting points and masks, how arms share calls, and the quick run end to end
(equal updates for every arm, every pruned arm from the step-k weights, the paired
differences, resume, and bad flags)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import harness
from experiments.elastic.arms import COPIED, distinct, plan, target_arms
from experiments.elastic.config import CONTROLS, ElasticConfig
from experiments.elastic.model import ALPHA_INIT, PRUNABLE, ResNet, init_params
from experiments.stats import paired
from jaxsparse.filters import leaf_paths


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("elastic")


def _params(blocks: int, width: int = 8):
    """Shapes only (jax.eval_shape)."""
    init = ResNet(blocks=blocks, width=width).init
    return jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 196)))["params"]


def _n_prunable(blocks: int, width: int) -> int:
    params = _params(blocks, width)
    leaves = jax.tree.leaves(params)
    return sum(x.size for p, x in zip(leaf_paths(params), leaves) if re.search(PRUNABLE, p))


def test_model_names_its_blocks_for_the_default_regex():
    params = _params(2)
    paths = leaf_paths(params)
    assert "stage0_block1/conv2/kernel" in paths and "stage2_block0/shortcut/kernel" in paths
    assert "stage0_block0/shortcut/kernel" not in paths  # stage 0 keeps its resolution
    out = jax.eval_shape(ResNet(blocks=2).apply, {"params": params}, jnp.ones((3, 196)))
    assert out.shape == (3, 10)
    assert params["stage1_block0"]["conv1"]["kernel"].shape == (3, 3, 8, 16)


def test_numpy_init_draws_the_modules_initialisers():
    model = ResNet(blocks=2, width=8)
    keys = jax.random.split(jax.random.key(0), 3)
    params = init_params(model, keys)
    shapes = _params(2)
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shapes)):
        assert p.shape == (3, *s.shape) and p.dtype == jnp.float32
    np.testing.assert_array_equal(params["stage0_block0"]["alpha"], np.float32(ALPHA_INIT))
    np.testing.assert_array_equal(params["head"]["bias"], 0.0)
    k = np.asarray(params["stage2_block1"]["conv1"]["kernel"])  # fan-in 9 * 32
    assert k.std() == pytest.approx(np.sqrt(2 / (9 * 32)), rel=0.05)
    assert np.abs(k).max() <= 2 * np.sqrt(2 / (9 * 32)) / 0.8796 + 1e-6  # truncated at 2 std
    assert not np.array_equal(k[0], k[1])  # seeds differ
    again = init_params(model, keys)
    np.testing.assert_array_equal(k, again["stage2_block1"]["conv1"]["kernel"])


def _ticket(n_source: int, width: int = 2, seeds: int = 2):
    """A source ticket with a random mask, and target-shaped params."""
    keys = jax.random.split(jax.random.key(1), seeds)
    src = init_params(ResNet(blocks=n_source, width=width), keys)
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda x: jnp.asarray(rng.random(x.shape) < 0.4), src)
    return src, mask, keys


@pytest.mark.parametrize("n_source, n_target", [(3, 5), (3, 2)])
def test_every_mapped_arm_starts_from_the_source_step_k_weights(n_source, n_target):
    src, mask, keys = _ticket(n_source)
    target = init_params(ResNet(blocks=n_target, width=2), keys)
    strategies = ["interleave", "cycle"] if n_target > n_source else ["interleave", "keep_last"]
    arms = target_arms(src, mask, target, strategies, keys)
    assert set(arms) == {*strategies, *CONTROLS}
    _, m_int, w_int = arms["interleave"]
    for name, (params, m, start) in arms.items():
        for path, p, mm, w in zip(leaf_paths(params), *map(jax.tree.leaves, (params, m, start))):
            # the arm's weights are its start's where alive and zero elsewhere
            np.testing.assert_array_equal(np.asarray(p), np.where(mm, w, 0.0), err_msg=path)
        if name in CONTROLS:  # the controls take the interleaved ticket's very weights
            for w, wi in zip(jax.tree.leaves(start), jax.tree.leaves(w_int)):
                np.testing.assert_array_equal(w, wi)
    # the interleaved start is the source's weights copied block by block (block 1 of a
    # stretch from block 1, the stem as it is)
    np.testing.assert_array_equal(w_int["stem"]["kernel"], src["stem"]["kernel"])
    np.testing.assert_array_equal(
        w_int["stage1_block1"]["conv2"]["kernel"], src["stage1_block1"]["conv2"]["kernel"]
    )
    paths = leaf_paths(m_int)
    m_shuf, m_rand = arms["shuffle"][1], arms["random"][1]
    for path, mi, ms, mr in zip(paths, *map(jax.tree.leaves, (m_int, m_shuf, m_rand))):
        mi, ms, mr = (np.asarray(x).reshape(2, -1) for x in (mi, ms, mr))
        # both controls keep the interleaved ticket's alive count in every layer and seed
        np.testing.assert_array_equal(ms.sum(-1), mi.sum(-1), err_msg=path)
        np.testing.assert_array_equal(mr.sum(-1), mi.sum(-1), err_msg=path)
        if not re.search(COPIED, path):  # shuffle moves only the copied blocks' masks
            np.testing.assert_array_equal(ms, mi, err_msg=path)
        if not re.search(PRUNABLE, path):  # stem, head, alphas: never shuffled
            np.testing.assert_array_equal(mr, mi, err_msg=path)
    moved = [p for p, a, b in zip(paths, jax.tree.leaves(m_int), jax.tree.leaves(m_rand))
             if not np.array_equal(a, b)]  # fmt: skip
    assert moved and all(re.search(PRUNABLE, p) for p in moved)


def test_distinct_strategies_share_a_training():
    assert distinct(["interleave", "keep_first", "keep_last"], 3, 2) == {
        "interleave": "interleave",
        "keep_first": "interleave",  # [0, 1] both
        "keep_last": "keep_last",
    }
    stretch = ["interleave", "cycle", "replicate_last"]
    assert set(distinct(stretch, 2, 3).values()) == {"interleave"}  # [0, 1, 1] all three
    assert distinct(stretch, 3, 5) == {s: s for s in stretch}


@pytest.mark.parametrize("rounds, n_arms", [(1, 3), (2, 5), (3, 4)])
def test_plan_puts_every_arm_once_in_equal_calls(rounds, n_arms):
    arms = [f"a{i}" for i in range(n_arms)]
    calls = plan(arms, rounds)
    assert len(calls) == rounds + 1 and len({len(c) for c in calls}) == 1
    assert [c[0] for c in calls] == [("imp", r) for r in range(rounds + 1)]
    assert ("dense", 0) in calls[1]  # it needs the step-k weights call 0 records
    items = [s for c in calls for s in c[1:] if s[0] != "pad"]
    expect = [("dense", 0)] + [(a, r) for r in range(1, rounds + 1) for a in arms]
    assert sorted(items) == sorted(expect)
    assert sum(s[0] == "pad" for c in calls for s in c) < rounds + 1  # < one slot a call


def _records(res):
    """Every (depth, arm@round, record) of a run's history."""
    for r, rec in enumerate(res["history"]["source"]["rounds"]):
        yield "source", f"imp@{r}", rec
    for n, t in res["history"]["targets"].items():
        for name, rec in t["arms"].items():
            yield n, name, rec


def test_quick_run_writes_its_files(quick_run):
    quick_run.assert_written("elastic.png")
    assert "− IMP here" in (quick_run.dir / "table.md").read_text()


def test_quick_compiles_fast_and_the_mode_names_the_run(quick_run):
    assert quick_run.config.compile == "fast" and ElasticConfig().compile == "optimized"
    assert quick_run.results["config"]["compile"] == "fast"
    assert ElasticConfig(compile="fast").digest() != ElasticConfig().digest()


def test_every_arm_takes_the_same_updates_from_step_0(quick_run):
    cfg, res = quick_run.config, quick_run.results
    seen = list(_records(res))
    # source IMP rounds; target IMP rounds, dense, and (1 elastic + 2 controls) a round
    assert len(seen) == (cfg.rounds + 1) + (cfg.rounds + 1) + 1 + 3 * cfg.rounds
    for depth, name, rec in seen:
        assert rec["updates"] == [cfg.steps] * cfg.seeds, (depth, name)
        assert rec["start_step"] == [0] * cfg.seeds, (depth, name)


def test_every_pruned_arm_starts_from_the_step_k_weights(quick_run):
    """start_gap: the largest |initial weight - the step-k weights| over alive block
    weights; only IMP's round 0 starts from the initialisation (gap to it: 0 too)."""
    for depth, name, rec in _records(quick_run.results):
        assert rec["start_gap"] == [0.0] * len(rec["start_gap"]), (depth, name)


def test_squeeze_to_one_block_maps_every_arm_alike(quick_run):
    """2 -> 1 keeps block 0 only: one elastic training serves all three strategies, and
    the shuffle control (no copied block to shuffle) is the elastic ticket exactly."""
    cfg, res = quick_run.config, quick_run.results
    t = res["targets"]["1"]
    assert res["mappings"]["1"] == {"interleave": [0], "keep_first": [0], "keep_last": [0]}
    assert t["aliases"] == {"interleave": "interleave", "keep_first": "interleave",
                            "keep_last": "interleave"}  # fmt: skip
    n = _n_prunable(1, cfg.width)
    for row in t["rounds"][1:]:
        a = row["arms"]
        assert a["shuffle"]["test_acc"] == a["interleave"]["test_acc"]
        assert a["keep_last"]["test_acc"] == a["interleave"]["test_acc"]
        assert a["random"]["pct_remaining"] == pytest.approx(a["interleave"]["pct_remaining"])
        assert a["imp"]["pct_remaining"] == pytest.approx(
            100 * (n - round(cfg.fraction * n)) / n, abs=1e-4
        )
        assert 0 < a["interleave"]["pct_remaining"] < 100
    src = res["source"]["rounds"]
    n2 = _n_prunable(2, cfg.width)
    assert src[1]["arms"]["imp"]["pct_remaining"] == pytest.approx(
        100 * (n2 - round(cfg.fraction * n2)) / n2, abs=1e-4
    )


def test_paired_differences_are_per_seed(quick_run):
    cfg, res = quick_run.config, quick_run.results
    t = res["targets"]["1"]
    dense = t["rounds"][0]["arms"]["dense"]
    for row in t["rounds"][1:]:
        imp = row["arms"]["imp"]
        for arm, st in row["arms"].items():
            for name, ref in (("vs_imp", imp), ("vs_dense", dense)):
                if arm == "imp" and name == "vs_imp":
                    assert name not in st
                    continue
                d = paired(st["test_acc"], ref["test_acc"])
                assert st[name]["mean"] == pytest.approx(d.mean)
                assert st[name]["lo"] == pytest.approx(d.lo) or d.n == 1
                assert st[name]["verdict"] == d.verdict(cfg.margin / 100)
        for arm in ("shuffle", "random"):  # the controls against the elastic ticket
            st, ref = row["arms"][arm], row["arms"]["interleave"]
            d = paired(st["test_acc"], ref["test_acc"])
            assert st["vs_elastic"]["mean"] == pytest.approx(d.mean)
        assert row["arms"]["shuffle"]["vs_elastic"]["mean"] == 0.0  # nothing to shuffle
        for st in row["arms"].values():
            assert len(st["train_acc"]) == cfg.seeds
            assert all(0.0 <= a <= 1.0 for a in st["train_acc"] + st["test_acc"])


def test_resume_skips_saved_stages(quick_run):
    assert quick_run.resume(["source", "depth_1"]) == quick_run.results


def test_seed_keys_pair_arms():
    """Every arm of a seed trains on the same data order: one key a seed, stream 1."""
    cfg = ElasticConfig(seeds=3)
    a, b = harness.seed_keys(cfg, 1), harness.seed_keys(cfg, 1)
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--targets", "2,2"], "--targets"),
        (["--targets", "x"], "--targets: must be comma-separated integers"),
        (["--targets", "2"], "must not repeat the source depth"),
        (["--source-blocks", "1", "--targets", "3"], "--source-blocks"),
        (["--rewind-step", "700"], "--rewind-step"),
        (["--rewind-step", "0"], "--rewind-step"),
        (["--batch-size", "4000"], "--batch-size"),
        (["--margin", "0"], "--margin"),
        (["--quick", "--steps", "2"], "got 2 (from --quick)"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["elastic", *argv])
