"""A study's flags: a frozen dataclass whose fields are the command-line flags, the
``--quick`` preset layered under the flags given, and the hash that names a run."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from experiments.harness.clock import COMPILE_MODES


@dataclass(frozen=True)
class StudyConfig:
    """Fields every study has. Subclasses add theirs (all with defaults).

    Fields marked ``run_only`` say how to run, not what to compute: they are left out of
    the hash that names the output directory, so ``--resume`` or another ``--out`` finds
    the same run. Fields marked ``hash_if_changed`` enter the hash only at a value other
    than their default: a field added after runs were published (such as ``compile``)
    keeps their names, and a run that sets it gets its own.
    """

    NAME: ClassVar[str] = "study"
    QUICK: ClassVar[dict[str, Any]] = {}

    seeds: int = field(default=3, metadata={"help": "independent seeds", "min": 1})
    seed: int = field(default=0, metadata={"help": "base PRNG seed", "min": 0})
    quick: bool = field(
        default=False,
        metadata={"help": "smoke test: a small preset (explicit flags win)", "run_only": True},
    )
    out: str = field(
        default="runs",
        metadata={"help": "root of the output directory <study>-<hash8>/", "run_only": True},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "continue from the last checkpoint of this run", "run_only": True},
    )

    def hashed(self) -> dict[str, Any]:
        """The fields that decide the results (what the output directory is named by)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not f.metadata.get("run_only")
            and not (f.metadata.get("hash_if_changed") and getattr(self, f.name) == f.default)
        }

    def digest(self) -> str:
        blob = json.dumps(self.hashed(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def run_dir(self) -> Path:
        return Path(self.out) / f"{self.NAME}-{self.digest()}"

    def validate(self, fail: Callable[[str, str], typing.NoReturn]) -> None:
        """Checks across fields; ``fail(field, message)`` raises an argparse error naming
        the flag and where its value came from. Override in a study."""


def compile_field() -> Any:
    """The ``--compile {optimized,fast}`` field of a study config: how its main programs
    compile (:func:`experiments.harness.compiler_options`). A study whose ``--quick``
    should compile fast sets ``"compile": "fast"`` in its ``QUICK`` preset and passes
    ``compiler_options=harness.compiler_options(cfg.compile)`` to ``jax.jit``. In the hash
    only when ``fast`` (``hash_if_changed``): the default runs keep the names they had.

    Example::

        compile: str = compile_field()
    """
    return field(
        default="optimized",
        metadata={
            "help": "'fast': the main programs at XLA's backend optimisation level 0, about "
            "half their compile time, steps about 2x slower, last bits may differ "
            "(--quick sets it)",
            "choices": tuple(COMPILE_MODES),
            "hash_if_changed": True,
        },
    )


def _bounded(kind: type, meta: dict):
    """An argparse ``type=`` that parses ``kind`` and checks the metadata's bounds
    (``min``, ``max``, ``gt``, ``unit`` for [0, 1)); argparse names the flag in the error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if "min" in meta and value < meta["min"]:
            raise argparse.ArgumentTypeError(f"must be >= {meta['min']}, got {text}")
        if "max" in meta and value > meta["max"]:
            raise argparse.ArgumentTypeError(f"must be <= {meta['max']}, got {text}")
        if "gt" in meta and not value > meta["gt"]:
            raise argparse.ArgumentTypeError(f"must be > {meta['gt']}, got {text}")
        if meta.get("unit") and not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse shows it in "invalid ... value" messages
    return parse


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one flag per field of the dataclass ``cls``: ``rewind_step`` -> ``--rewind-step``.

    Types come from the annotations (``bool`` fields become switches), help, ``choices``
    and bounds from ``field(metadata=...)``. Defaults are left out of the namespace
    (``argparse.SUPPRESS``), so ``vars(args)`` holds only the flags actually given and
    the caller can layer presets under them.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, meta = hints[f.name], f.metadata
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{meta.get('help', '')} (default: {f.default})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(
                flag, action="store_true", default=argparse.SUPPRESS, help=help_text
            )
            continue
        parser.add_argument(
            flag,
            type=_bounded(kind, meta),
            choices=meta.get("choices"),
            default=argparse.SUPPRESS,
            metavar=None if "choices" in meta else kind.__name__.upper(),
            help=help_text,
        )


def build_parser(
    cls: type[StudyConfig], description: str, parser: argparse.ArgumentParser | None = None
) -> argparse.ArgumentParser:
    """The study's argument parser (a new one, or flags added to a subcommand's)."""
    parser = parser or argparse.ArgumentParser(prog=f"jaxsparse {cls.NAME}")
    parser.description = parser.description or description
    add_dataclass_arguments(parser, cls)
    return parser


def config_from_args(
    cls: type[StudyConfig], args: argparse.Namespace, parser: argparse.ArgumentParser
) -> StudyConfig:
    """Defaults, then the ``--quick`` preset, then the flags given explicitly; then the
    study's cross-field checks, whose errors name the flag and the value's origin."""
    given = vars(args).copy()
    values = dict(cls.QUICK) if given.get("quick") else {}
    values.update(given)
    cfg = cls(**values)

    def fail(name: str, message: str) -> typing.NoReturn:
        origin = (
            "" if name in given else (" (from --quick)" if name in values else " (the default)")
        )
        parser.error(f"argument --{name.replace('_', '-')}: {message}{origin}")

    cfg.validate(fail)
    return cfg
