"""The ``jaxsparse`` command: one subcommand per study.

A study is a module with ``build_parser(parser)`` (adds its flags to ``parser``) and
``run_from_args(args, parser) -> int``; registering it is one line in :data:`STUDIES`.
A study describes itself as a dataclass; :func:`add_dataclass_arguments` turns its
fields into typed flags (help, choices and bounds from each field's metadata), so a bad
value is an argparse error that names the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing
from collections.abc import Sequence

# subcommand -> (module, one-line help)
STUDIES: dict[str, tuple[str, str]] = {
    "lottery": (
        "experiments.lottery",
        "iterative magnitude pruning on real digits with random-reinit and "
        "random-reprune controls (Frankle & Carbin 2019)",
    ),
}


def _bounded(kind: type, meta: dict):
    """An argparse ``type=`` that parses ``kind`` and checks the metadata's bounds
    (``min``, ``gt``, ``unit`` for [0, 1)); argparse names the flag in the error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if "min" in meta and value < meta["min"]:
            raise argparse.ArgumentTypeError(f"must be >= {meta['min']}, got {text}")
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
        help_text = f"{meta.get('help', '')} (default: {f.default})"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsparse",
        description="Sparse-training and lottery-ticket studies built on jaxsparse.",
    )
    sub = parser.add_subparsers(dest="command", metavar="STUDY", required=True)
    for name, (module, help_text) in STUDIES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_study=(module, p))
        importlib.import_module(module).build_parser(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxsparse`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, sub_parser = args._study
    del args._study, args.command
    return importlib.import_module(module_name).run_from_args(args, sub_parser)


if __name__ == "__main__":
    sys.exit(main())
