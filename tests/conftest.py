"""Tests run on 8 fake CPU devices, so pmap and sharding are tested on every machine.

The flag is set in the repository's root ``conftest.py``, which pytest loads first (before
JAX starts); this file checks it took effect. It also holds what the study tests share:
each study's ``--quick`` run, made once a session (:func:`quick_run_of`), and the check
that a bad flag is named (:func:`flag_error`).
"""

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

    def resume(self) -> tuple[dict, dict]:
        """Runs it again with ``--resume``: ``(timing.json, results.json)`` after."""
        from experiments import cli

        assert cli.main([*self.argv, "--out", str(self.root), "--resume"]) == 0
        return (
            json.loads((self.dir / "timing.json").read_text()),
            json.loads((self.dir / "results.json").read_text()),
        )


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
