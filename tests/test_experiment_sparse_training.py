"""End-to-end tests of the sparse-training study (``jaxsparse sparse-training``) in
quick mode: every method's outputs and sparsity, resuming, and bad flags."""

import numpy as np
import pytest

from experiments.sparse_training.config import METHODS


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("sparse-training")


def test_quick_run_outputs(quick_run):
    d, res = quick_run.dir, quick_run.results
    cfg = quick_run.config
    quick_run.assert_written("sparse_training.png")
    recs = {r["method"]: r for r in res["records"]}
    assert tuple(recs) == METHODS
    n = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 kernels
    for method, r in recs.items():
        assert len(r["test_acc"]) == cfg.seeds
        assert all(0.0 <= a <= 1.0 for a in r["test_acc"] + r["val_acc"])
        want = 0.0 if method == "dense" else 0.9
        if method == "imp":  # p = 1 - 0.1 ** (1 / rounds) a round, rounded each round
            np.testing.assert_allclose(r["sparsity"], want, atol=2e-4)
        else:  # exact counts: layerwise rounding (ERK, GMP) is within a weight a layer
            np.testing.assert_allclose(r["sparsity"], want, atol=3 / n)
        assert r["train_s"] > 0
    assert recs["imp"]["search_steps"] == cfg.imp_rounds * cfg.steps
    assert recs["dense"]["search_steps"] == 0
    assert np.mean(recs["dense"]["test_acc"]) > 0.5  # chance is 0.1
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["dense"]["minus_dense"] == 0.0
    table = (d / "table.md").read_text()
    assert "| IMP ticket |" in table and "± " in table


def test_resume_skips_done_methods(quick_run):
    assert quick_run.resume(list(METHODS))["rows"] == quick_run.results["rows"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--methods", "dense,magic"], "--methods"),
        (["--update-every", "7"], "--update-every"),
        (["--sparsity", "1.2"], "--sparsity"),
        (["--update-end", "1.5"], "--update-end"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["sparse-training", *argv])
