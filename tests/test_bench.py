"""``jaxsparse bench --quick``: every section runs and writes its JSON and markdown; the
ratios are positive finite numbers (their values are timings: never asserted)."""

import json
import math

from experiments.bench import SECTIONS, BenchConfig, run_study


def _numbers(rows, word):
    for row in rows:
        for key, value in row.items():
            if word in key and value is not None and not isinstance(value, (bool, str)):
                yield key, value


def test_quick_bench_writes_json_with_finite_ratios(tmp_path):
    cfg = BenchConfig(quick=True, out=str(tmp_path))
    lines = []
    results = run_study(cfg, log=lines.append)
    saved = json.loads((cfg.run_dir() / "bench.json").read_text())
    assert saved["quick"] is True and set(saved["sections"]) == set(SECTIONS)
    assert saved["machine"]["jax"] and saved["machine"]["cpu_cores"] >= 1
    md = (cfg.run_dir() / "bench.md").read_text()
    for name, section in saved["sections"].items():
        assert section["title"] and section["rows"], name
        assert section["markdown"] in md and section["markdown"] in "\n".join(lines)
        for row in section["rows"]:
            assert row["what"] if "what" in row else row["n"]
            if row.get("skipped"):
                assert row["note"] and row["ratio"] is None
        ratios = list(_numbers(section["rows"], "ratio"))
        assert ratios or name == "memory", name
        for key, value in ratios:
            assert math.isfinite(value) and value > 0, (name, key, value)
    assert results["sections"].keys() == saved["sections"].keys()
    # the figures the issue asks for are there
    training = saved["sections"]["training"]["rows"]
    assert [r["what"].split(",")[0] for r in training][:1] == ["masked(adam) step / adam step"]
    assert len(training) == 5  # step, gradual every 10 and every step, K = 4 and K = 16
    threshold = saved["sections"]["threshold"]["rows"]
    assert {r["scope"] for r in threshold} == {"global", "layerwise"}
    imp = {r["what"]: r for r in saved["sections"]["imp"]["rows"]}
    compiles = [r for w, r in imp.items() if w.startswith("backend compiles")]
    assert compiles[0]["compiles"] == 1  # new masks and rounds never recompile
    memory = saved["sections"]["memory"]["rows"]
    assert memory[0]["bytes_per_param"] == 1.0  # a bool per weight in training
    assert all(r["bits_per_param"] <= 1.01 for r in memory if "mask, packed" in r["what"])
