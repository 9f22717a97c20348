"""Tests of the random-pruning study (``jaxsparse random-pruning``): the quick run's files
and values, that the arms are fair (equal steps, the same start, the learning rate chosen
on validation), exact mask counts, resuming, and bad flags."""

import numpy as np
import pytest

from experiments.random_pruning import compare, nets, run
from experiments.random_pruning.config import RandomPruningConfig, floats


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("random-pruning")


def test_quick_run_outputs(quick_run):
    res, cfg = quick_run.results, quick_run.config
    quick_run.assert_written("gap_vs_width.png")
    assert [r["width"] for r in res["networks"]] == list(floats(cfg.widths)) == [0.5, 1.0]
    L = len(floats(cfg.lrs))
    for rec in res["networks"]:
        arms = [tuple(a) for a in rec["arms"]]
        assert arms[0] == ("dense", 0.0, "-") and arms[-1] == ("small", 0.9, "-")
        sparse = {a for a in arms if a[0] not in ("dense", "small")}
        assert sparse == {
            (r, 0.9, i) for r in ("uniform", "erk", "snip") for i in ("scaled", "dense")
        }
        for key in ("train", "val", "test"):
            acc = np.asarray(rec[key])
            assert acc.shape == (len(arms), L, cfg.seeds)
            assert ((acc >= 0) & (acc <= 1)).all()
        alive, n = np.asarray(rec["alive"]), rec["n_kernel"]
        assert (alive[0] == n).all()  # dense keeps every kernel weight
        for a, (rule, s, _) in enumerate(arms):
            if rule not in ("dense", "small"):
                # exact per-layer counts: the global count is within a weight a layer
                assert np.abs(alive[a] - (1 - s) * n).max() <= cfg.depth + 1, (rule, s)
        hs = rec["small"]["0.9"]
        assert (alive[-1] == nets.kernel_count(cfg.depth, hs)).all()
    dense_x1 = np.asarray(res["networks"][1]["test"])[0]
    assert dense_x1.max() > 0.2  # the dense MLP learns something (chance: 0.1)
    table = (quick_run.dir / "table.md").read_text()
    assert "**Verdicts**" in table and "**Every arm**" in table and "[95% CI]" in table
    assert "ERK − dense, ×1" in table or "ERK 90% scaled init − dense, ×1" in table


def test_every_arm_takes_the_same_steps(quick_run):
    cfg, res = quick_run.config, quick_run.results
    assert res["steps_per_network"] == [cfg.steps]
    for rec in res["networks"]:
        steps = np.asarray(rec["steps"])
        assert steps.shape == (len(rec["arms"]), len(floats(cfg.lrs)), cfg.seeds)
        assert (steps == cfg.steps).all()


def test_learning_rate_is_chosen_on_validation(quick_run):
    cfg, res = quick_run.config, quick_run.results
    lrs = floats(cfg.lrs)
    for rec in res["networks"]:
        val, test = np.asarray(rec["val"]), np.asarray(rec["test"])
        for a, arm in enumerate(res["selected"][str(rec["width"])]):
            best = int(np.argmax(val[a].mean(-1)))
            assert arm["lr"] == lrs[best]
            np.testing.assert_array_equal(arm["test"], test[a, best])


def test_comparisons_are_paired_differences(quick_run):
    comp = quick_run.results["comparisons"]
    sel = quick_run.results["selected"]
    for row in comp["vs_dense"]:
        arms = sel[str(row["width"])]
        key = (row["rule"], row["sparsity"], row["init"])
        (arm,) = [a for a in arms if (a["rule"], a["sparsity"], a["init"]) == key]
        d = np.asarray(arm["test"]) - np.asarray(arms[0]["test"])
        assert row["mean"] == pytest.approx(d.mean())
        assert row["lo"] <= row["mean"] <= row["hi"]
    assert {r["comparison"] for r in comp["pairs"]} >= {
        "ERK - uniform",
        "SNIP-ratio - ERK",
        "ERK: scaled - dense init",
        "ERK wide - small dense",
    }
    (trend,) = [t for t in comp["trend"] if (t["rule"], t["init"]) == ("erk", "scaled")]
    assert (trend["from_width"], trend["to_width"]) == (0.5, 1.0)


def test_initial_weights_are_the_dense_init_at_alive_positions():
    """Every sparse arm starts from its seed's dense init: unchanged (dense init) or
    times exactly 1/sqrt(layer density) (scaled init); both inits share one mask."""
    cfg = RandomPruningConfig(seeds=2, widths="1", sparsities="0.9,0.97", ratios="uniform,erk")
    p = run.plan(cfg, 1.0)
    seeds = [nets.glorot_params(np.random.default_rng(i), cfg.depth, p["h"]) for i in range(2)]
    params = {k: {n: np.stack([s[k][n] for s in seeds]) for n in v} for k, v in seeds[0].items()}
    init, masks = run.initial_arms(cfg, p, params, snip=None)
    arms = p["arms"]
    for a, (rule, s, how) in enumerate(arms):
        for i in range(cfg.seeds):
            for layer in params:
                q, m = init[layer]["kernel"][a, i], masks[layer]["kernel"][a, i]
                w = seeds[i][layer]["kernel"]
                if rule == "dense":
                    assert m.all() and np.array_equal(q, w)
                elif rule == "small":
                    hs = p["small"][s]
                    assert m.sum() == np.count_nonzero(q) and m[: min(hs, m.shape[0]), :hs].all()
                else:
                    factor = 1.0 if how == "dense" else 1 / np.sqrt(m.mean())
                    assert np.array_equal(q[~m], np.zeros((~m).sum(), np.float32))
                    np.testing.assert_array_equal(
                        q[m], (w[m] * np.float32(factor)).astype(np.float32)
                    )
                    assert 0 < m.mean() < 1
                    twin = arms.index((rule, s, "scaled" if how == "dense" else "dense"))
                    assert np.array_equal(m, masks[layer]["kernel"][twin, i])
                dead_bias = ~masks[layer]["bias"][a, i]
                np.testing.assert_array_equal(init[layer]["bias"][a, i][dead_bias], 0)


def test_glorot_params_match_flax_init_statistics():
    rng = np.random.default_rng(0)
    p = nets.glorot_params(rng, 2, 256)
    k = p["hidden_1"]["kernel"]
    target = np.sqrt(2 / (256 + 256))
    assert k.std() == pytest.approx(target, rel=0.02)
    assert np.abs(k).max() <= 2 * target / 0.87962566103423978 + 1e-6
    assert sorted(p) == ["hidden_0", "hidden_1", "output"] and not p["output"]["bias"].any()
    assert nets.kernel_count(2, 256) == sum(v["kernel"].size for v in p.values())


def test_selection_and_trend_on_known_numbers():
    """Hand-made accuracies: the arm picks the rate with the best validation mean even
    when another rate tests better, and a gap that shrinks reads as 'closes'."""
    cfg = RandomPruningConfig(
        seeds=3, widths="1,4", sparsities="0.9", ratios="erk", inits="scaled", lrs="0.001,0.01"
    )
    arms = [["dense", 0.0, "-"], ["erk", 0.9, "scaled"]]
    val = [[[0.8] * 3, [0.9] * 3], [[0.7] * 3, [0.6] * 3]]  # dense -> lr 0.01, ERK -> 0.001
    recs = []
    for w, gap in ((1.0, 0.10), (4.0, 0.02)):
        dense = [[0.5, 0.5, 0.5], [0.80, 0.81, 0.82]]
        erk = [[0.80 - gap, 0.81 - gap - 0.01, 0.82 - gap], [0.99] * 3]
        test = [dense, erk]
        recs.append(
            {
                "width": w,
                "hidden": int(64 * w),
                "arms": arms,
                "val": val,
                "test": test,
                "train": test,
                "alive": [[1, 1, 1]] * 2,
                "small": {},
            }
        )
    sel = compare.select(recs[0], (0.001, 0.01))
    assert [a["lr"] for a in sel] == [0.01, 0.001]
    comp = compare.comparisons(cfg, recs)
    (trend,) = comp["trend"]
    assert trend["mean"] == pytest.approx(0.08) and trend["verdict"] == "closes"


def test_resume_skips_done_networks(quick_run):
    again = quick_run.resume([r["network"] for r in quick_run.results["networks"]])
    assert again["comparisons"] == quick_run.results["comparisons"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--sparsities", "0.9,1.5"], "--sparsities"),
        (["--ratios", "erk,magic"], "--ratios"),
        (["--inits", "scaled,lucky"], "--inits"),
        (["--widths", "2,1"], "--widths"),
        (["--lrs", "0.01,-1"], "--lrs"),
        (["--n-train", "1005"], "--n-train"),
        (["--batch-size", "99999"], "--batch-size"),
        (["--fit-threshold", "1.5"], "--fit-threshold"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["random-pruning", *argv])
