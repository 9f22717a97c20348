"""End-to-end tests of the EarlyBERT study (``jaxsparse early-bert``) in quick mode:
outputs and their fields by value, resuming from the seed stages, and bad flags."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.models import SlimEncoder


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("early-bert")


def test_quick_outputs_by_value(quick_run):
    d, res = quick_run.dir, quick_run.results
    cfg = quick_run.config
    quick_run.assert_written("early_bert.png")

    n_checks = cfg.epochs * cfg.checks_per_epoch
    e, dense = res["summary"]["earlybert"], res["summary"]["dense"]
    assert len(res["seeds"]) == cfg.seeds and e["found"] == cfg.seeds
    # eps = 1: drawn on the push that fills the FIFO
    assert e["share"] == [cfg.window / n_checks] * cfg.seeds
    assert e["epoch"] == [cfg.window / cfg.checks_per_epoch] * cfg.seeds
    # 1 of 4 heads in every layer; 40% of all FFN units: round(0.4 * layers * 64) pruned
    assert e["heads"] == [[3] * cfg.layers] * cfg.seeds
    for ffn, params, flops in zip(e["ffn"], e["params"], e["flops"]):
        assert sum(ffn) == cfg.layers * cfg.ffn - round(0.4 * cfg.layers * cfg.ffn)
        model = SlimEncoder(
            heads=(3,) * cfg.layers, ffn=tuple(ffn), width=cfg.width, head_dim=cfg.width // 4
        )
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 784)))
        assert params == sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
        assert flops == model.flops() < dense["flops"]
    for s in res["seeds"]:
        assert len(s["curves"]["dense"]) == len(s["curves"]["earlybert"]) == n_checks
        assert s["acc"]["dense"] == s["curves"]["dense"][-1]
        assert s["time_ratio"] == pytest.approx(s["pipeline_s"] / s["dense_s"])
        dist = np.array(s["distances"], dtype=float)
        assert np.isnan(dist[0]).all()  # nothing to compare with after the first push
        # checks stop once the ticket is drawn
        assert len(s["chunk_s"]["check"]) == cfg.window
        assert len(s["chunk_s"]["dense"]) == len(s["chunk_s"]["pipeline"]) == n_checks
    for a in e["acc"] + dense["acc"]:
        assert 0.0 <= a <= 1.0
    assert np.mean(dense["acc"]) > 0.2  # chance is 0.1
    csv_lines = (d / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + (2 + 3) * cfg.seeds
    assert "EarlyBERT ticket" in (d / "table.md").read_text()


def test_arms_have_equal_step_budgets(quick_run):
    """The ticket after full training and the small dense encoder train for exactly the
    pipeline's steps after the draw; dense for the pipeline's time trains the whole
    chunks that fit in the pipeline's measured time at the measured dense chunk time."""
    res, cfg = quick_run.results, quick_run.config
    spc = 3500 // cfg.batch_size // cfg.checks_per_epoch
    n_checks = cfg.epochs * cfg.checks_per_epoch
    for s in res["seeds"]:
        budget = (n_checks - s["drawn"]["check"] - 1) * spc
        assert s["steps"] == {"dense": n_checks * spc, "earlybert": budget}
        assert s["arms"]["full"]["steps"] == s["arms"]["small"]["steps"] == budget
        k = int(np.clip(round(s["pipeline_s"] / np.mean(s["chunk_s"]["dense"])), 1, n_checks))
        assert s["arms"]["dense_time"]["steps"] == k * spc
        for arm in s["arms"].values():
            assert 0.0 <= arm["acc"] <= 1.0 and 0.0 <= arm["train_acc"] <= 1.0


def test_small_dense_has_the_tickets_widths(quick_run):
    for s in quick_run.results["seeds"]:
        small, drawn = s["arms"]["small"], s["drawn"]
        assert (small["heads"], small["ffn"]) == (drawn["heads"], drawn["ffn"])
        assert small["params"] == drawn["params"]


def test_small_dense_rate_is_the_best_on_validation(quick_run):
    cfg = quick_run.results["config"]
    factors = [float(f) for f in cfg["lr_grid"].split(",")]
    for s in quick_run.results["seeds"]:
        rec = s["arms"]["small"]["lr"]
        assert list(rec["val_acc"]) == [f"{cfg['lr'] * f:g}" for f in factors]
        accs = list(rec["val_acc"].values())
        assert f"{rec['lr']:g}" == list(rec["val_acc"])[int(np.argmax(accs))]
    assert "chosen per seed on the validation split" in (quick_run.dir / "table.md").read_text()


def test_times_with_compile_add_every_program(quick_run):
    res = quick_run.results
    full = res["compile_s"]
    for s in res["seeds"]:
        assert s["dense_compile_s"] == pytest.approx(s["dense_s"] + full["train"])
        want = s["pipeline_s"] + full["train"] + full["check"] + s["drawn"]["compile_s"]
        assert s["pipeline_compile_s"] == pytest.approx(want)
        assert s["time_ratio_compile"] == pytest.approx(want / s["dense_compile_s"])


def test_verdicts_are_the_paired_differences(quick_run):
    from experiments.stats import paired

    summary = quick_run.results["summary"]
    for arm in ("earlybert", "full", "small", "dense_time"):
        d = paired(summary[arm]["acc"], summary["dense"]["acc"])
        v = summary["verdicts"][arm]
        assert v["mean"] == pytest.approx(d.mean)
        assert v["verdict"] == d.verdict(summary["margin"])


def test_resume_loads_the_seed_stages(quick_run):
    quick_run.resume_seeds()


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--eps", "-0.1"], "--eps"),
        (["--heads", "3"], "--heads: must divide --width"),
        (["--head-ratio", "1.0"], "--head-ratio"),
        (["--ffn-ratio", "2"], "--ffn-ratio"),
        (["--quick", "--window", "6"], "--window"),
        (["--layers", "0"], "--layers"),
        (["--lr-grid", "-1"], "--lr-grid"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["early-bert", *argv])
