"""The ``jaxsparse`` command: one subcommand per study.

A study is a module with ``build_parser(parser)`` (adds its flags to ``parser``) and
``run_from_args(args, parser) -> int``; registering it is one line in :data:`STUDIES`.
What studies share (flags from a dataclass, run directory, resume, writers) lives in
:mod:`experiments.harness`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help)
STUDIES: dict[str, tuple[str, str]] = {
    "lottery": (
        "experiments.lottery",
        "iterative magnitude pruning on real digits with random-reinit and "
        "random-reprune controls (Frankle & Carbin 2019)",
    ),
    "early-bird": ("experiments.early_bird", "early-bird channel tickets (You et al. 2020)"),
    "early-bert": (
        "experiments.early_bert",
        "EarlyBERT: structured early tickets of a transformer encoder (Chen et al. 2021)",
    ),
    "random-pruning": (
        "experiments.random_pruning",
        "random masks with layer-wise ratios vs dense and a smaller dense net (Liu et al. 2022)",
    ),
    "sparse-training": (
        "experiments.sparse_training",
        "sparse-training baselines at one sparsity and an equal step budget "
        "(SNIP, GraSP, SynFlow, SET, RigL, GMP, STE, IMP)",
    ),
    "bench": ("experiments.bench", "benchmarks against baselines measured in the same run"),
    "transfer": (
        "experiments.transfer",
        "pre-trained tickets carried to other tasks (Chen 2020/21)",
    ),
    "elastic": ("experiments.elastic", "tickets stretched/squeezed across ResNet depths (E-LTH)"),
    "oneshot": ("experiments.oneshot", "one-shot pruning of a pre-trained LM: SparseGPT, Wanda"),
}


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
    if args.compile_cache != "off":
        from experiments.harness import enable_compilation_cache

        enable_compilation_cache(args.compile_cache)
    del args._study, args.command, args.compile_cache
    return importlib.import_module(module_name).run_from_args(args, sub_parser)


if __name__ == "__main__":
    sys.exit(main())
