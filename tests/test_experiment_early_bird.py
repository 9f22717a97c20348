"""End-to-end tests of the early-bird study (``jaxsparse early-bird``) in quick mode:
outputs and their fields by value, resuming from the seed stages, and bad flags."""

import math

import numpy as np
import pytest

from experiments.early_bird.config import RATIOS
from experiments.early_bird.report import distance_matrix


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("early-bird")


def _vgg_params(widths, cin=1, classes=10):
    total = 0
    for w in widths:
        total += 9 * cin * w + 2 * w  # conv kernel (no bias), BN scale and bias
        cin = w
    return total + cin * classes + classes


def _vgg_flops(widths, side, pool_after=(1,), classes=10):
    total, cin = 0, 1
    for i, w in enumerate(widths):
        total += 2 * side * side * 9 * cin * w
        cin = w
        if i in pool_after:
            side //= 2
    return total + 2 * cin * classes


def test_quick_outputs_by_value(quick_run):
    d, res = quick_run.dir, quick_run.results
    cfg = quick_run.config
    quick_run.assert_written("early_bird.png")

    n_checks = cfg.epochs * cfg.checks_per_epoch
    assert res["ratios"] == list(RATIOS) and len(res["seeds"]) == cfg.seeds
    # eps = 1: the detector fires on the push that fills the FIFO, never before
    for ratio in RATIOS:
        f = res["summary"]["found"][str(ratio)]
        assert f["check"] == [cfg.window - 1] * cfg.seeds
        assert f["share"] == [cfg.window / n_checks] * cfg.seeds
    for s in res["seeds"]:
        dist = np.array(s["distances"], dtype=float)  # (checks, ratios, window - 1)
        assert dist.shape == (n_checks, len(RATIOS), cfg.window - 1)
        assert np.isnan(dist[0]).all() and np.isnan(dist[1, :, 0]).all()  # unfilled: inf
        assert not np.isnan(dist[cfg.window - 1 :]).any()
        assert ((dist[cfg.window - 1 :] >= 0) & (dist[cfg.window - 1 :] <= 1)).all()

    widths0, side = list(cfg.width_tuple), 28 // cfg.pool
    dense = res["summary"]["dense"]
    assert dense["params"] == _vgg_params(widths0)
    assert dense["flops"] == _vgg_flops(widths0, side)
    row = res["summary"]["ratios"]["0.5"]
    floor = [math.ceil(0.1 * w) for w in widths0]
    for arm in ("eb", "full", "random", "small"):
        for w, p, f, acc in zip(
            row[arm]["widths"], row[arm]["params"], row[arm]["flops"], row[arm]["acc"]
        ):
            # global pruning keeps half the channels; the per-layer floor may add a few
            kept = sum(widths0) - round(0.5 * sum(widths0))
            assert kept <= sum(w) <= kept + sum(floor)
            assert all(fl <= x <= w0 for x, fl, w0 in zip(w, floor, widths0))
            assert p == _vgg_params(w) and f == _vgg_flops(w, side)
            assert 0.0 <= acc <= 1.0
    assert row["random"]["widths"] == row["eb"]["widths"]  # same widths, random channels
    # the small dense net from scratch has exactly the ticket's widths (read off its arrays)
    assert row["small"]["widths"] == row["eb"]["widths"]
    assert row["small"]["params"] == row["eb"]["params"]
    for key in ("acc", "time_s"):
        assert len(dense[key]) == cfg.seeds
    assert all(0.0 <= a <= 1.0 for a in dense["acc"] + res["summary"]["search"]["acc"])
    assert all(t > 0 for t in row["pipeline_s"] + row["dense_s"])
    np.testing.assert_allclose(
        row["time_ratio"], np.divide(row["pipeline_s"], row["dense_s"]), rtol=1e-9
    )
    csv_lines = (d / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + cfg.seeds * (2 + 5)
    table = (d / "table.md").read_text()
    assert "early-bird ticket" in table and "±" in table and "random channels" in table


def test_arms_have_equal_step_budgets(quick_run):
    """Every shrunk arm retrains for exactly the early-bird ticket's steps (the rest of
    the budget after the draw); dense for the pipeline's time trains the whole chunks
    that fit in the pipeline's measured time at the measured dense chunk time."""
    res, cfg = quick_run.results, quick_run.config
    spc = 3500 // cfg.batch_size // cfg.checks_per_epoch
    n_checks = cfg.epochs * cfg.checks_per_epoch
    for s in res["seeds"]:
        assert s["steps"] == {"dense": n_checks * spc, "search": n_checks * spc}
        for ratio, row in s["ratios"].items():
            check = s["eb_check"][RATIOS.index(float(ratio))]
            budget = (n_checks - check - 1) * spc
            for arm in ("eb", "full", "random", "small"):
                assert row[arm]["steps"] == budget, arm
                assert len(row[arm]["chunk_s"]) == n_checks - check - 1, arm
            per_chunk = np.mean(s["chunk_s"]["dense"])
            k = int(np.clip(round(row["pipeline_s"] / per_chunk), 1, n_checks))
            assert row["dense_time"]["steps"] == k * spc
            for arm in row.values():
                if isinstance(arm, dict):
                    assert 0.0 <= arm["acc"] <= 1.0 and 0.0 <= arm["train_acc"] <= 1.0


def test_times_with_compile_add_every_program(quick_run):
    """'With compile' = the measured time + the compile of each program the arm needs."""
    res = quick_run.results
    full = res["compile_s"]
    for s in res["seeds"]:
        assert s["dense_compile_s"] == pytest.approx(s["dense_s"] + full["train"])
        for row in s["ratios"].values():
            want = row["pipeline_s"] + full["train"] + full["check"] + row["eb"]["compile_s"]
            assert row["pipeline_compile_s"] == pytest.approx(want)
            assert row["eb"]["compile_s"] > 0


def test_verdicts_are_the_paired_differences(quick_run):
    from experiments.stats import paired

    row = quick_run.results["summary"]["ratios"]["0.5"]
    margin = quick_run.results["summary"]["margin"]
    for arm in ("eb", "full", "random", "small", "dense_time"):
        d = paired(row[arm]["acc"], row["dense_acc"])
        v = row["verdicts"][arm]
        assert v["mean"] == pytest.approx(d.mean) and v["verdict"] == d.verdict(margin)


def test_best_on_val_keeps_the_first_of_the_best_rates():
    from experiments.early_bird.config import EarlyBirdConfig
    from experiments.early_ticket import best_on_val

    cfg = EarlyBirdConfig(lr=0.1, lr_grid="0.5,1,2,4")
    val = {0.05: 0.7, 0.1: 0.9, 0.2: 0.9, 0.4: 0.2}
    tried = []

    def train_at(lr):
        tried.append(lr)
        return {"lr": lr}

    carry, record = best_on_val(cfg, train_at, lambda c: val[round(c["lr"], 6)])
    assert [round(lr, 6) for lr in tried] == [0.05, 0.1, 0.2, 0.4]
    assert carry == {"lr": 0.1} and record["lr"] == 0.1
    assert record["val_acc"] == {"0.05": 0.7, "0.1": 0.9, "0.2": 0.9, "0.4": 0.2}


def test_small_dense_rate_is_the_best_on_validation(quick_run):
    cfg = quick_run.results["config"]
    factors = [float(f) for f in cfg["lr_grid"].split(",")]
    for s in quick_run.results["seeds"]:
        for row in s["ratios"].values():
            rec = row["small"]["lr"]
            assert list(rec["val_acc"]) == [f"{cfg['lr'] * f:g}" for f in factors]
            accs = list(rec["val_acc"].values())
            assert f"{rec['lr']:g}" == list(rec["val_acc"])[int(np.argmax(accs))]
    assert "chosen per seed on the validation split" in (quick_run.dir / "table.md").read_text()


def test_distance_matrix_by_hand():
    masks = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]], bool)
    np.testing.assert_allclose(
        distance_matrix(masks), [[0, 0.25, 1], [0.25, 0, 0.75], [1, 0.75, 0]]
    )


def test_resume_loads_the_seed_stages(quick_run):
    quick_run.resume_seeds()


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--eps", "1.5"], "--eps: must be in [0, 1]"),
        (["--retrain", "0.4"], "--retrain"),
        (["--widths", "8"], "--widths"),
        (["--widths", "a,b"], "--widths"),
        (["--pool", "3"], "--pool"),
        (["--quick", "--window", "6"], "--window"),
        (["--min-keep", "1.5"], "--min-keep"),
        (["--checks-per-epoch", "100"], "--checks-per-epoch"),
        (["--lr-grid", "0,1"], "--lr-grid"),
        (["--lr-grid", "a"], "--lr-grid"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["early-bird", *argv])
