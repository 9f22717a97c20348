"""End-to-end test of the oneshot study (``jaxsparse oneshot --quick``): its outputs by
value (sparsity 0 is the dense model, exact sparsities, SparseGPT's layer errors at most
magnitude's, pruned weights stay zero while fine-tuning), the corpus record, bad flags."""

import hashlib
import importlib.metadata
import json
from pathlib import Path

import pytest

from experiments import cli
from experiments.oneshot.config import OneShotConfig


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("oneshot")
    assert cli.main(["oneshot", "--quick", "--out", str(root)]) == 0
    (d,) = sorted(root.glob("oneshot-[0-9a-f]*[0-9a-f]"))
    return root, d, json.loads((d / "results.json").read_text())


def test_quick_outputs_by_value(quick_run):
    root, d, res = quick_run
    cfg = OneShotConfig(**OneShotConfig.QUICK)
    assert d.name == f"oneshot-{cfg.digest()}" == f"oneshot-{res['config_hash']}"
    for name in ("results.json", "results.csv", "table.md", "timing.json", "config.json"):
        assert (d / name).stat().st_size > 0, name
    assert (d / "oneshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the pre-trained model is cached (orbax) beside the run, for the next run
    assert any(p.is_dir() for p in root.glob("oneshot-pretrained-*/model"))

    grid = {(r["method"], r["pattern"]): r for r in res["grid"]}
    dense = res["dense_ppl"]
    for method in ("magnitude", "wanda", "sparsegpt", "random"):
        assert grid[(method, "0")]["ppl"] == pytest.approx(dense, rel=1e-6)
    for method in ("magnitude", "wanda", "sparsegpt"):
        assert grid[(method, "0.5")]["sparsity"] == 0.5
        assert grid[(method, "2:4")]["sparsity"] == 0.5
        assert grid[(method, "0")]["sparsity"] == 0.0
        assert grid[(method, "0.5")]["ppl"] >= dense * 0.98  # no free lunch
    assert grid[("random", "0.5")]["ppl"] > grid[("sparsegpt", "0.5")]["ppl"]
    # SparseGPT minimises each layer's error on the inputs it sees: never above magnitude's
    for pattern in ("0.5", "2:4"):
        sg, mg = res["errors"][f"sparsegpt@{pattern}"], res["errors"][f"magnitude@{pattern}"]
        assert sg.keys() == mg.keys() and len(sg) == 6 * cfg.layers
        for path in sg:
            assert sg[path] <= mg[path] + 1e-6, path
    assert {r["calib"] for r in res["calib_sweep"]} == {16, 32}
    assert [t["start"] for t in res["finetune"]] == ["magnitude", "wanda", "sparsegpt", "dense"]
    for t in res["finetune"]:
        assert t["pruned_stay_zero"] and t["after"] < t["before"]
    md = (d / "table.md").read_text()
    assert "Held-out perplexity" in md and "LLaMA-2-7B" in md


def test_quick_vision_stage_by_value(quick_run):
    """LeNet-300-100 on the 8x8 digits (--quick): trained, then pruned by every method."""
    _, d, res = quick_run
    vis = res["vision"]
    assert vis["data"] == "digits" and vis["sizes"] == "1257/180/360"
    assert vis["pruned_shapes"] == {"hidden_0/kernel": [64, 300], "hidden_1/kernel": [300, 100]}
    assert vis["train_acc"] > 0.97 and vis["test_acc"] > 0.9  # trained, not chance
    grid = {(r["method"], r["pattern"]): r for r in vis["grid"]}
    assert {p for _, p in grid} == {"0", "0.5", "0.9", "2:4"}
    for method in ("magnitude", "wanda", "sparsegpt", "random"):
        # sparsity 0 is the dense model, to the example (SparseGPT also zeroes the weights
        # of inputs that are 0 on every calibration image, as the reference does: allow
        # one of the 360 test examples to move)
        tol = 1 / 360 + 1e-6 if method == "sparsegpt" else 1e-6
        assert grid[(method, "0")]["test_acc"] == pytest.approx(vis["test_acc"], abs=tol)
        assert grid[(method, "0")]["pruned"] == {"hidden_0/kernel": 0, "hidden_1/kernel": 0}
        # exact counts: half of every layer, and 2 of every 4 inputs (also half)
        for pattern in ("0.5", "2:4"):
            assert grid[(method, pattern)]["pruned"] == {
                "hidden_0/kernel": 64 * 300 // 2,
                "hidden_1/kernel": 300 * 100 // 2,
            }, (method, pattern)
            assert grid[(method, pattern)]["sparsity"] == 0.5
    for method in ("magnitude", "sparsegpt", "random"):  # layer-wide: round(0.9 n)
        assert grid[(method, "0.9")]["pruned"] == {
            "hidden_0/kernel": 17280,
            "hidden_1/kernel": 27000,
        }
    # Wanda compares within each output: round(0.9 * 64) = 58 of 64 inputs, 90 of 100
    assert grid[("wanda", "0.9")]["pruned"] == {
        "hidden_0/kernel": 58 * 300,
        "hidden_1/kernel": 27000,
    }
    for method in ("magnitude", "wanda", "sparsegpt"):
        assert grid[(method, "0.5")]["test_acc"] <= vis["test_acc"] + 0.02
    assert grid[("sparsegpt", "0.5")]["test_acc"] >= grid[("random", "0.5")]["test_acc"]
    assert grid[("sparsegpt", "2:4")]["test_acc"] >= grid[("random", "2:4")]["test_acc"]
    assert grid[("magnitude", "0.9")]["test_acc"] > grid[("random", "0.9")]["test_acc"]
    md = (d / "table.md").read_text()
    assert "## A classifier" in md and "LeNet-300-100" in md and "| sparsegpt |" in md


def test_corpus_is_recorded(quick_run):
    _, _, res = quick_run
    info = res["corpus"]
    assert info["package"] == "optax"
    assert info["version"] == importlib.metadata.version("optax")
    import optax

    root = Path(optax.__file__).parent
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    assert info["files"] == len(files)
    assert info["list_sha256"] == hashlib.sha256("\n".join(files).encode()).hexdigest()


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--heads", "3"], "--heads"),
        (["--sparsities", "0.5,1.0"], "--sparsities"),
        (["--patterns", "3:2"], "--patterns"),
        (["--finetune-at", "0.3"], "--finetune-at"),
        (["--vision-sparsities", "0.5,1"], "--vision-sparsities"),
        (["--vision-data", "cifar"], "--vision-data"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["oneshot", *argv])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
