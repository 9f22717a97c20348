"""``jaxsparse bench --quick``: sections run and write their JSON and markdown; the
ratios are positive finite numbers (their values are timings: never asserted).

The test runs the two cheapest sections (the training and IMP sections compile whole
training programs, tens of seconds on 2 shared cores); ``jaxsparse bench --quick``
runs them all.
"""

import json
import math
import sys
import types

import pytest

from experiments import bench
from experiments.bench import BenchConfig, run_study


def _numbers(rows, word):
    for row in rows:
        for key, value in row.items():
            if word in key and value is not None and not isinstance(value, (bool, str)):
                yield key, value


def test_quick_bench_writes_json_with_finite_ratios(tmp_path):
    cfg = BenchConfig(quick=True, out=str(tmp_path), sections="memory,threshold")
    lines = []
    results = run_study(cfg, log=lines.append)
    saved = json.loads((cfg.run_dir() / "bench.json").read_text())
    assert saved["quick"] is True and list(saved["sections"]) == ["memory", "threshold"]
    assert saved["machine"]["jax"] and saved["machine"]["cpu_cores"] >= 1
    md = (cfg.run_dir() / "bench.md").read_text()
    for name, section in saved["sections"].items():
        assert section["title"] and section["rows"], name
        assert section["markdown"] in md and section["markdown"] in "\n".join(lines)
    threshold = saved["sections"]["threshold"]["rows"]
    assert {r["scope"] for r in threshold} == {"global", "layerwise"}
    ratios = dict(_numbers(threshold, "ratio")) | dict(_numbers(threshold, "passes"))
    assert {"speedup_vs_argsort_ratio", "speedup_vs_top_k_ratio", "threshold_in_passes"} <= set(
        ratios
    )
    for key, value in ratios.items():
        assert math.isfinite(value) and value > 0, (key, value)
    memory = saved["sections"]["memory"]["rows"]
    assert memory[0]["bytes_per_param"] == 1.0  # a bool per weight in training
    packed = [r["bits_per_param"] for r in memory if "mask, packed" in r["what"]]
    assert packed and all(0 < b <= 1.01 for b in packed)  # 1 bit, padded to a byte a leaf
    assert results["sections"].keys() == saved["sections"].keys()


def test_a_section_plugs_in_with_one_line(tmp_path, monkeypatch):
    """A module with ``measure(quick) -> {"title", "rows", "markdown"}`` is a section
    (as ``experiments/bench/export.py`` is), skipped rows included."""
    module = types.ModuleType("fake_section")
    module.measure = lambda quick: {
        "title": "Fake",
        "rows": [{"what": "x", "ratio": 2.0}, {"what": "y", "ratio": None, "skipped": True}],
        "markdown": "### Fake\n\n| what | ratio |",
    }
    monkeypatch.setitem(sys.modules, "fake_section", module)
    monkeypatch.setitem(bench.SECTIONS, "fake", "fake_section")
    saved = run_study(BenchConfig(quick=True, out=str(tmp_path), sections="fake"), log=str)
    assert saved["sections"]["fake"]["rows"][0]["ratio"] == 2.0


def test_unknown_section_is_a_flag_error(capsys):
    with pytest.raises(SystemExit):
        bench.STUDY.main(["--sections", "nope"])
    assert "--sections" in capsys.readouterr().err


def test_quick_oneshot_section_agrees_with_numpy(tmp_path):
    """The oneshot section: whole-model rows for each method and width, and SparseGPT
    against the NumPy/SciPy implementation of the same algorithm: the same mask."""
    cfg = BenchConfig(quick=True, out=str(tmp_path), sections="oneshot")
    rows = run_study(cfg, log=str)["sections"]["oneshot"]["rows"]
    methods = [r["what"].split(",")[0] for r in rows[:-1]]
    assert methods == ["magnitude", "wanda", "sparsegpt"] * 2
    assert all(r["ours_ms"] > 0 for r in rows)
    layer = rows[-1]
    assert layer["mask_agreement"] == 1.0 and layer["max_rel_weight_diff"] < 1e-3
    assert math.isfinite(layer["ratio"]) and layer["ratio"] > 0


def test_models_section_on_a_tiny_tree(tmp_path, monkeypatch):
    """The models section on its few-leaf stand-in: every operation compiles and runs,
    with a compile time, a run time in passes and XLA's peak memory."""
    monkeypatch.setenv("JAXSPARSE_BENCH_TREES", "tiny")
    monkeypatch.setenv("JAXSPARSE_BENCH_SORT", "0")
    saved = run_study(BenchConfig(quick=True, out=str(tmp_path), sections="models"), log=str)
    rows = saved["sections"]["models"]["rows"]
    whats = {r["what"] for r in rows}
    assert {"pass", "prune global", "prune layerwise", "imp_round", "rigl, other step"} <= whats
    assert {"gradual_prune, pruning step", "masked(adam) update", "adam step"} <= whats
    assert {"state pass, SparseTrainState", "imp_round, donated"} <= whats
    ratio = {r["what"]: r["ratio"] for r in rows}
    assert ratio["masked(adam) step"] > 0 and ratio["masked(adam) update"] > 0
    assert ratio["masked(adam, packed) step"] > 0 and ratio["masked(adam, packed) update"] > 0
    # imp_round's rows: its time over the prune's, in state passes (finite, any sign)
    assert math.isfinite(ratio["imp_round"]) and math.isfinite(ratio["imp_round, donated"])
    for r in rows:
        assert r["tree"] == "tiny" and r["leaves"] == 9
        for key in ("compile_s", "run_ms", "passes"):
            assert math.isfinite(r[key]) and r[key] >= 0, (r["what"], key)
        assert r["peak_mb"] is None or r["peak_mb"] > 0
    assert next(r for r in rows if r["what"] == "pass")["passes"] == 1.0


def test_model_trees_have_the_models_shapes():
    """Leaf and parameter counts of the real models (shapes only, nothing allocated)."""
    from experiments.bench import model_trees

    got = {name: model_trees.summary(model_trees.shapes(name)) for name in model_trees.FULL_NAMES}
    assert got["resnet50"] == {"params": 25_557_032, "leaves": 161, "kernels": 54}
    assert got["bert_base"]["params"] == 109_482_240
    assert got["vit_b16"]["params"] == 86_567_656  # NNX: nnx.state(model, nnx.Param)
    assert got["gpt2_small"]["params"] == 124_439_808
    assert 1.2e9 < got["gpt_1p3b"]["params"] < 1.4e9 and got["gpt_1p3b"]["leaves"] == 388


def test_sharded_section_on_a_tiny_tree(tmp_path):
    """The sharded section (8 fake devices here): both axis types, every program
    compiled from shapes, per-device memory read, only the search's samples gathered."""
    saved = run_study(BenchConfig(quick=True, out=str(tmp_path), sections="sharded"), log=str)
    rows = saved["sections"]["sharded"]["rows"]
    assert {(r["axes"], r["what"]) for r in rows} == {
        (a, w)
        for a in ("Auto", "Explicit")
        for w in ("prune global", "prune layerwise", "imp_round", "masked(adam) update")
    }
    for r in rows:
        assert r["devices"] == 8 and r["only_samples_gathered"], r
        assert r["compile_s"] > 0 and r["args_mb"] > 0 and r["temp_mb"] >= 0


def test_optrace_section_on_a_tiny_tree(tmp_path, monkeypatch):
    """The operation-profile section: every program traced, each op's fastest time kept,
    op time their sum, and the ratios against the prune, the state pass and Adam."""
    monkeypatch.setenv("JAXSPARSE_BENCH_TREES", "tiny")
    saved = run_study(BenchConfig(quick=True, out=str(tmp_path), sections="optrace"), log=str)
    rows = {r["what"]: r for r in saved["sections"]["optrace"]["rows"]}
    assert set(rows) == {
        "prune global",
        "state pass",
        "imp_round, donated",
        "imp_round's prune, donated",
        "adam step",
        "masked(adam) step",
        "masked(adam, packed) step",
    }
    for r in rows.values():
        assert r["ops"] and r["op_ms"] == pytest.approx(sum(r["ops"].values()))
        # the sum of per-op minima is at most any one call's op sum
        assert r["op_ms"] <= r["call_min_ms"] + 1e-9
    # the prune counts or sorts inside XLA loops; a masked step is Adam's fusions and more
    assert any(op.startswith(("while", "sort")) for op in rows["prune global"]["ops"])
    assert math.isfinite(rows["imp_round, donated"]["ratio"])
    assert rows["masked(adam) step"]["ratio"] > 0 and rows["masked(adam, packed) step"]["ratio"] > 0
