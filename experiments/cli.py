"""The ``jaxsparse`` command: one subcommand per study.

A study's package holds ``STUDY``, a :class:`experiments.harness.Study` (its config
class, run function and help); registering it is one line in :data:`STUDIES`, and its
name (``STUDY.name``) is the subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from experiments.harness import Study

STUDIES: tuple[str, ...] = (
    "experiments.lottery",
    "experiments.early_bird",
    "experiments.early_bert",
    "experiments.random_pruning",
    "experiments.sparse_training",
    "experiments.bench",
    "experiments.transfer",
    "experiments.elastic",
    "experiments.oneshot",
)


def studies() -> list[Study]:
    """The registered studies, in :data:`STUDIES` order."""
    return [importlib.import_module(module).STUDY for module in STUDIES]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsparse",
        description="Sparse-training and lottery-ticket studies built on jaxsparse.",
    )
    parser.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="JAX's persistent compilation cache, so a second run skips compiling "
        "(default: $JAXSPARSE_CACHE or ~/.cache/jaxsparse/xla; 'off' disables it)",
    )
    sub = parser.add_subparsers(dest="command", metavar="STUDY", required=True)
    for study in studies():
        p = sub.add_parser(
            study.name, help=study.summary.replace("%", "%%"), description=study.description
        )
        p.set_defaults(_study=(study, p))
        study.build_parser(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxsparse`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    study, sub_parser = args._study
    if args.compile_cache != "off":
        from experiments.harness import enable_compilation_cache

        enable_compilation_cache(args.compile_cache)
    del args._study, args.command, args.compile_cache
    return study.run_from_args(args, sub_parser)


if __name__ == "__main__":
    sys.exit(main())
