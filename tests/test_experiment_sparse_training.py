"""End-to-end tests of the sparse-training study (``jaxsparse sparse-training``) in
quick mode: every method's outputs and sparsity, resuming, and bad flags."""

import json

import numpy as np
import pytest

from experiments import cli, sparse_training

QUICK = ["--compile-cache", "off", "sparse-training", "--quick"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    assert cli.main([*QUICK, "--out", str(root)]) == 0
    (d,) = sorted(root.glob("sparse-training-*"))
    return root, d, json.loads((d / "results.json").read_text())


def test_quick_run_outputs(quick_run):
    _, d, res = quick_run
    cfg = sparse_training.SparseTrainingConfig(**sparse_training.QUICK)
    assert d.name == f"sparse-training-{cfg.digest()}"
    for name in ("results.json", "results.csv", "table.md", "timing.json", "config.json"):
        assert (d / name).stat().st_size > 0, name
    assert (d / "sparse_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recs = {r["method"]: r for r in res["records"]}
    assert tuple(recs) == sparse_training.METHODS
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


def test_resume_skips_done_methods(quick_run, capsys):
    root, d, res = quick_run
    assert cli.main([*QUICK, "--out", str(root), "--resume"]) == 0
    assert capsys.readouterr().out.count("resumed stage") == len(sparse_training.METHODS)
    assert json.loads((d / "results.json").read_text())["rows"] == res["rows"]
    timing = json.loads((d / "timing.json").read_text())
    assert not any(k[: -len("_s")] in sparse_training.METHODS for k in timing)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--methods", "dense,magic"], "--methods"),
        (["--update-every", "7"], "--update-every"),
        (["--sparsity", "1.2"], "--sparsity"),
        (["--update-end", "1.5"], "--update-end"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["sparse-training", *argv])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
