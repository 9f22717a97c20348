"""Tests run on 8 fake CPU devices, so pmap and sharding are tested on every machine.

The flag is set in the repository's root ``conftest.py``, which pytest loads first (before
JAX starts); this file checks it took effect. It also holds what the study tests share:
each study's ``--quick`` run, made once a session (:func:`quick_run_of`), and the check
that a bad flag is named (:func:`flag_error`).
"""

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import pytest


def pytest_configure(config):
    del config
    n = jax.device_count()
    if jax.default_backend() == "cpu" and n < 8:
        raise RuntimeError(f"expected 8 fake CPU devices, found {n}: was JAX imported early?")


@dataclass
class QuickRun:
    """A finished ``jaxsparse <study> --quick`` run: its ``--out`` root, its run directory
    and its ``results.json``."""

    argv: list[str]
    root: Path
    dir: Path
    results: dict

    def resume(self, stages: list[str]) -> dict:
        """Runs it again with ``--resume``: every one of ``stages`` is loaded, not
        computed again (its message logged, no time in ``timing.json``); returns the
        ``results.json`` written then."""
        from experiments import cli

        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            assert cli.main([*self.argv, "--out", str(self.root), "--resume"]) == 0
        timing = json.loads((self.dir / "timing.json").read_text())
        for stage in stages:
            assert f"resumed stage {stage!r}" in log.getvalue(), stage
            assert f"{stage}_s" not in timing, stage
        return json.loads((self.dir / "results.json").read_text())

    def resume_seeds(self) -> None:
        """:meth:`resume` of a study whose stages are its seeds (the early-ticket
        studies): every seed loaded, the same summary and seeds written again."""
        again = self.resume([f"seed_{s}" for s in range(self.config.seeds)])
        for key in ("summary", "seeds"):
            assert again[key] == self.results[key], key

    def assert_written(self, *figures: str) -> None:
        """Every study's files are there, the figures PNGs, all named by the config."""
        cfg = type(self.config)
        assert self.dir.name == f"{cfg.NAME}-{self.config.digest()}"
        assert self.results["config_hash"] == self.config.digest()
        for name in ("results.json", "results.csv", "table.md", "timing.json", "config.json"):
            assert (self.dir / name).stat().st_size > 0, name
        for name in figures:
            assert (self.dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    @property
    def config(self):
        """The run's configuration: the study's ``--quick`` preset."""
        from experiments import cli

        (study,) = [s for s in cli.studies() if s.name == self.argv[0]]
        return study.config(**study.config.QUICK)


@pytest.fixture(scope="session")
def quick_run_of(tmp_path_factory):
    """``quick_run_of(study, *flags)``: the study's quick run, computed the first time a
    test asks for it and shared by every test file after (compiling is most of it)."""
    from experiments import cli

    runs: dict[tuple, QuickRun] = {}

    def get(study: str, *flags: str) -> QuickRun:
        if (study, flags) not in runs:
            root = tmp_path_factory.mktemp(study)
            argv = [study, "--quick", *flags]
            assert cli.main([*argv, "--out", str(root)]) == 0
            (d,) = sorted(root.glob(f"{study}-*"))
            results = json.loads((d / "results.json").read_text())
            runs[study, flags] = QuickRun(argv, root, d, results)
        return runs[study, flags]

    return get


@pytest.fixture
def flag_error(capsys):
    """``flag_error(argv)``: runs the ``jaxsparse`` command, which must reject a flag
    (exit status 2); returns what it wrote to stderr, where the flag is named."""
    from experiments import cli

    def run(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        return capsys.readouterr().err

    return run
