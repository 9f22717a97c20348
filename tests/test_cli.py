"""The ``jaxsparse`` command lives in the library and finds the studies in a clone."""

import os
import shutil
import subprocess
import sys

import pytest

import jaxsparse
from jaxsparse import _cli


def test_version_is_one_string():
    assert isinstance(jaxsparse.__version__, str)
    assert jaxsparse.__version__ == jaxsparse._version.__version__


def test_command_finds_the_studies_in_the_clone(capsys):
    assert _cli._clone_root() is not None
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["lottery", "--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_command_without_the_studies_explains_and_exits_2(tmp_path):
    # The package alone, as a wheel installs it: no experiments/ beside it.
    shutil.copytree(
        os.path.dirname(jaxsparse.__file__),
        tmp_path / "jaxsparse",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # Hide any other installed copy of the studies (an older editable install maps them).
    script = (
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'experiments':\n"
        "            raise ModuleNotFoundError(name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from jaxsparse._cli import main\n"
        "sys.exit(main(['lottery', '--help']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert 'pip install -e ".[experiments]"' in done.stderr


def test_command_names_a_missing_study_dependency(monkeypatch, capsys):
    import experiments.cli

    def needs_mlxtend(argv=None):
        raise ModuleNotFoundError("No module named 'mlxtend'", name="mlxtend")

    monkeypatch.setattr(experiments.cli, "main", needs_mlxtend)
    assert _cli.main(["lottery"]) == 2
    err = capsys.readouterr().err
    assert "'mlxtend'" in err and 'pip install -e ".[experiments]"' in err
