"""The ``jaxsparse`` console script: the studies' command line, where the studies are.

The studies (``experiments/``) are a folder of the repository, not part of the wheel: a
generic top-level name such as ``experiments`` must not land in ``site-packages``. So the
command runs them when it can find them — in a clone installed with
``pip install -e ".[experiments]"``, or anywhere ``experiments`` is importable — and
otherwise says what to do, with exit code 2 and no traceback.
"""

from __future__ import annotations

import importlib
import pathlib
import sys
from collections.abc import Sequence

HOW_TO = (
    "The `jaxsparse` command runs the studies in the repository's experiments/ folder,\n"
    "which the jaxsparse wheel does not ship. To run them, clone the repository and install\n"
    "it in editable mode with the studies' extra:\n"
    "\n"
    "    git clone <the jaxsparse repository> && cd jaxsparse\n"
    '    pip install -e ".[experiments]"\n'
    "    jaxsparse lottery\n"
    "\n"
    "The library itself (`import jaxsparse`) needs none of this."
)


def _clone_root() -> pathlib.Path | None:
    """The repository this package was imported from, if it is a clone with the studies.

    An editable install imports ``jaxsparse`` from the clone itself, so the folder above
    the package is the repository root; an installed wheel sits in ``site-packages``,
    where no ``experiments/cli.py`` with a ``pyproject.toml`` beside it is found.
    """
    root = pathlib.Path(__file__).resolve().parent.parent
    if (root / "experiments" / "cli.py").is_file() and (root / "pyproject.toml").is_file():
        return root
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the studies' command line, or explain how to get it (exit code 2)."""
    root = _clone_root()
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        cli = importlib.import_module("experiments.cli")
    except ModuleNotFoundError as err:
        if err.name in ("experiments", "experiments.cli"):
            print(f"jaxsparse: the studies are not installed.\n\n{HOW_TO}", file=sys.stderr)
            return 2
        return _missing_dependency(err)
    try:
        return int(cli.main(argv) or 0)
    except ModuleNotFoundError as err:
        # a study's own dependency (mlxtend, scikit-learn, ...) imported when it runs
        if (err.name or "").split(".")[0] in ("jaxsparse", "experiments"):
            raise
        return _missing_dependency(err)


def _missing_dependency(err: ModuleNotFoundError) -> int:
    print(
        f"jaxsparse: the studies need the package {err.name!r}, which is not installed.\n"
        'Install the studies\' dependencies in the clone: pip install -e ".[experiments]"',
        file=sys.stderr,
    )
    return 2
