"""The study harness: flags from a dataclass, presets, hashed run directories, stage
resume, writers and the compilation cache."""

import argparse
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import harness


@dataclass(frozen=True)
class ToyConfig(harness.StudyConfig):
    NAME: ClassVar[str] = "toy"
    QUICK: ClassVar[dict] = {"steps": 10, "seeds": 1}

    steps: int = field(default=100, metadata={"help": "steps", "min": 1})
    width: int = field(default=10, metadata={"help": "width", "min": 1, "max": 64})
    lr: float = field(default=0.1, metadata={"help": "rate", "gt": 0.0})
    frac: float = field(default=0.5, metadata={"help": "a share", "unit": True})
    kind: str = field(default="a", metadata={"help": "kind", "choices": ("a", "b")})

    def validate(self, fail):
        if self.steps % self.width:
            fail("width", f"must divide --steps ({self.steps}), got {self.width}")


def _parse(argv):
    parser = harness.build_parser(ToyConfig, "a toy study")
    return harness.config_from_args(ToyConfig, parser.parse_args(argv), parser)


def test_defaults_preset_then_flags():
    assert _parse([]) == ToyConfig()
    cfg = _parse(["--quick"])
    assert (cfg.steps, cfg.seeds, cfg.quick) == (10, 1, True)
    cfg = _parse(["--quick", "--steps", "40", "--width", "4", "--kind", "b"])
    assert (cfg.steps, cfg.seeds, cfg.width, cfg.kind) == (40, 1, 4, "b")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps: must be >= 1"),
        (["--width", "65"], "--width: must be <= 64"),
        (["--lr", "0"], "--lr: must be > 0.0"),
        (["--frac", "1.0"], "--frac: must be in [0, 1)"),
        (["--kind", "c"], "--kind: invalid choice"),
        (["--steps", "x"], "--steps: expected int"),
        (["--steps", "35"], "--width: must divide --steps (35), got 10 (the default)"),
        (["--quick", "--width", "3"], "--width: must divide --steps (10), got 3"),
        (["--quick", "--width", "20", "--steps", "30"], "must divide --steps (30), got 20"),
    ],
)
def test_bad_flags_name_the_flag_and_origin(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_preset_origin_in_errors(capsys):
    @dataclass(frozen=True)
    class Preset(ToyConfig):
        QUICK: ClassVar[dict] = {"steps": 10, "width": 3}

    parser = harness.build_parser(Preset, "x")
    with pytest.raises(SystemExit):
        harness.config_from_args(Preset, parser.parse_args(["--quick"]), parser)
    assert "got 3 (from --quick)" in capsys.readouterr().err


def test_hash_ignores_run_only_fields(tmp_path):
    a = ToyConfig(out=str(tmp_path), resume=True, quick=True)
    b = ToyConfig()
    assert a.digest() == b.digest() and len(a.digest()) == 8
    assert a.run_dir().name == f"toy-{a.digest()}"
    assert ToyConfig(steps=50).digest() != b.digest()
    assert "out" not in a.hashed() and "steps" in a.hashed()


def test_help_escapes_percent_and_shows_defaults(capsys):
    @dataclass(frozen=True)
    class Pct(harness.StudyConfig):
        NAME: ClassVar[str] = "pct"
        share: float = field(default=0.2, metadata={"help": "ends at 3.6% of weights"})

    parser = harness.build_parser(Pct, "x")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "ends at 3.6% of weights (default: 0.2)" in out


def test_run_stage_computes_saves_and_resumes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"w": jnp.arange(3.0)}, {"acc": 0.5}

    like = {"w": jnp.zeros(3)}
    run = harness.start(ToyConfig(out=str(tmp_path)), log=lambda s: None)
    _, extra = run.stage("pretrain", like, compute)
    assert extra == {"acc": 0.5} and len(calls) == 1
    assert json.loads((run.dir / "config.json").read_text())["steps"] == 100

    resumed = harness.start(ToyConfig(out=str(tmp_path), resume=True), log=lambda s: None)
    tree2, extra2 = resumed.stage("pretrain", like, compute)
    assert len(calls) == 1 and extra2 == {"acc": 0.5}
    np.testing.assert_array_equal(np.asarray(tree2["w"]), [0.0, 1.0, 2.0])
    timing = run.finish(note="x")
    assert timing["pretrain_s"] >= 0 and timing["note"] == "x" and timing["total_s"] > 0

    # a fresh (non-resume) start clears old checkpoints, so the stage runs again
    fresh = harness.start(ToyConfig(out=str(tmp_path)), log=lambda s: None)
    fresh.stage("pretrain", like, compute)
    assert len(calls) == 2


def test_writers(tmp_path):
    run = harness.start(ToyConfig(out=str(tmp_path)), log=lambda s: None)
    run.write_csv("r.csv", [{"a": 1, "b": 2.5}, {"a": 3, "c": "x"}])
    with (run.dir / "r.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"a": "1", "b": "2.5", "c": ""}, {"a": "3", "b": "", "c": "x"}]
    run.write_json("r.json", {"x": np.float32(0.5), "y": np.arange(2)})
    assert json.loads((run.dir / "r.json").read_text()) == {"x": 0.5, "y": [0, 1]}
    plt = harness.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = run.save_figure("f.png", fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_statistics_and_markdown():
    assert harness.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert harness.mean_std([0.7]) == (0.7, 0.0)
    assert harness.pm([0.9, 0.92]) == "91.0 ± 1.4"
    table = harness.markdown_table(["name", "acc %"], [["dense", "91.0 ± 1.4"], ["sparse", 90]])
    assert table.splitlines() == [
        "| name | acc % |",
        "|---|---:|",
        "| dense | 91.0 ± 1.4 |",
        "| sparse | 90 |",
    ]


def test_seed_keys_are_independent_streams():
    import jax

    cfg = ToyConfig(seeds=3)
    a, b = harness.seed_keys(cfg, 0), harness.seed_keys(cfg, 1)
    assert a.shape == (3,)
    da, db = jax.random.key_data(a), jax.random.key_data(b)
    assert not np.array_equal(da, db)
    assert np.array_equal(da, jax.random.key_data(harness.seed_keys(cfg, 0)))


@pytest.mark.processes
def test_compilation_cache_fills_its_directory(tmp_path):
    """A fresh process with the cache on writes compiled programs there."""
    code = (
        "import jax, jax.numpy as jnp\n"
        "from experiments.harness import enable_compilation_cache\n"
        f"enable_compilation_cache({str(tmp_path)!r})\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)\n"
        "print(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((4, 4))).sum())\n"
    )
    env = {**os.environ, "XLA_FLAGS": ""}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert any(tmp_path.iterdir())


def test_cli_compile_cache_flag_is_parsed():
    from experiments import cli

    parser = cli.build_parser()
    args = parser.parse_args(["--compile-cache", "off", "lottery", "--quick"])
    assert args.compile_cache == "off"
    assert isinstance(args, argparse.Namespace)


def test_timed_waits_for_the_result_and_compiled_is_ahead_of_time():
    import time

    import jax

    out, seconds = harness.timed(lambda x: (time.sleep(0.05), x + 1)[1], jnp.arange(3))
    np.testing.assert_array_equal(out, [1, 2, 3])
    assert 0.05 <= seconds < 5

    traces = []

    @jax.jit
    def f(x):
        traces.append(1)
        return 2 * x

    exe, seconds = harness.compiled(f, jnp.zeros(4))
    assert seconds > 0 and len(traces) == 1
    np.testing.assert_array_equal(exe(jnp.arange(4.0)), [0, 2, 4, 6])
    np.testing.assert_array_equal(exe(jnp.ones(4)), [2, 2, 2, 2])
    assert len(traces) == 1  # new values, no new trace
    with pytest.raises(TypeError):
        exe(jnp.zeros(5))  # an executable is for its shapes only


def test_compile_field_enters_the_hash_only_when_changed(capsys):
    @dataclass(frozen=True)
    class Compiled(ToyConfig):
        QUICK: ClassVar[dict] = {"steps": 10, "compile": "fast"}
        compile: str = harness.compile_field()

    # a field added later keeps the published runs' names at its default
    assert Compiled().digest() == ToyConfig().digest()
    assert "compile" not in Compiled().hashed()
    fast = Compiled(compile="fast")
    assert fast.hashed()["compile"] == "fast" and fast.digest() != Compiled().digest()
    parser = harness.build_parser(Compiled, "toy")
    cfg = harness.config_from_args(Compiled, parser.parse_args(["--quick"]), parser)
    assert cfg.compile == "fast"  # the preset's
    args = parser.parse_args(["--quick", "--compile", "optimized"])
    assert harness.config_from_args(Compiled, args, parser).compile == "optimized"
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "slow"])
    assert "--compile: invalid choice: 'slow'" in capsys.readouterr().err


def test_compiler_options_by_mode():
    import jax

    assert harness.compiler_options("optimized") is None
    fast = harness.compiler_options("fast")
    assert fast == {"xla_backend_optimization_level": 0}
    fast["x"] = 1  # a fresh dict each call: the module's stays as it was
    assert harness.compiler_options("fast") == {"xla_backend_optimization_level": 0}
    with pytest.raises(ValueError, match=r"compiler_options: mode must be one of .*'slow'"):
        harness.compiler_options("slow")
    # XLA takes the option, and the program computes the same numbers
    x = np.arange(12, dtype=np.float32).reshape(3, 4)

    def f(a):
        return jnp.tanh(a @ a.T).sum(0)

    for mode in harness.COMPILE_MODES:
        out = jax.jit(f, compiler_options=harness.compiler_options(mode))(x)
        np.testing.assert_allclose(out, np.tanh(x @ x.T).sum(0), rtol=1e-6)


def _toy_study(cfg, *, log=print):
    run = harness.start(cfg, log=log)
    timed = run.calls(2, desc="toy", unit="call")
    timed(lambda x: x + 1, jnp.ones(3))
    timed.skip(1)
    timed.close()
    fig, ax = harness.pyplot().subplots()
    ax.plot([0, 1], [1, 0])
    results = {"acc": 0.5, "gap": float("inf"), "runs": [float("nan"), 1.0]}
    return run.publish(
        results, table="| a |", csv=[{"a": 1}], figures={"toy.png": fig}, call_s=timed.seconds
    )


def test_study_template_parses_runs_and_publishes(tmp_path, capsys):
    study = harness.Study(ToyConfig, _toy_study, "a toy study")
    assert study.name == "toy"
    assert study.main(["--quick", "--out", str(tmp_path)]) == 0
    d = ToyConfig(**ToyConfig.QUICK).run_dir().name
    d = tmp_path / d
    want = {"acc": 0.5, "gap": None, "runs": [None, 1.0]}  # non-finite floats: null
    assert json.loads((d / "results.json").read_text()) == want
    assert (d / "results.csv").read_text().splitlines() == ["a", "1"]
    assert (d / "table.md").read_text() == "| a |\n"
    assert (d / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    timing = json.loads((d / "timing.json").read_text())
    assert len(timing["call_s"]) == 1 and timing["total_s"] > 0
    out = capsys.readouterr().out
    assert "| a |" in out
    assert "(config.json, results.csv, results.json, table.md, timing.json, toy.png)" in out
    with pytest.raises(SystemExit):  # its flags, checked as the command checks them
        study.main(["--quick", "--width", "3"])
    assert "--width: must divide --steps (10), got 3" in capsys.readouterr().err


def test_fold_and_pm_of_nothing():
    import jax

    keys = harness.seed_keys(ToyConfig(seeds=2), 0)
    folded = harness.fold(keys, 3)
    want = jax.random.fold_in(keys[1], 3)
    assert np.array_equal(jax.random.key_data(folded[1]), jax.random.key_data(want))
    assert harness.pm([]) == "–"


_FAULTS = """
import ctypes, resource, sys
from experiments.harness.processes import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20  # above glibc's largest mmap threshold (32 MB); as XLA's runtime does
faults = []
for _ in range(11):  # the first block faults in either way: counted from the second
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_faulting_in_each_large_block():
    def faults(mode, **env):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, **env},
        ).stdout.split()
        return out[0] == "True", int(out[1])

    applied, kept = faults("keep")
    assert applied
    _, fresh = faults("default")
    # 10 fresh 64 MB mappings fault in ~16k pages each; kept, the heap's pages are reused
    assert fresh > 100_000 and kept < fresh / 10, (kept, fresh)
    assert faults("keep", JAXSPARSE_MALLOC="default")[0] is False
