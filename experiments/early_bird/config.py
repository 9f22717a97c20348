"""The early-bird study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments import harness
from experiments.harness import StudyConfig

DESCRIPTION = (
    "Early-bird tickets (You et al., ICLR 2020): channel masks from |BN gamma| stop "
    "changing early; the ticket drawn then is shrunk and retrained."
)
RATIOS = (0.3, 0.5, 0.7)  # the paper's channel pruning ratios, tracked together


def parse_floats(text: str) -> tuple[float, ...]:
    return tuple(float(t) for t in text.split(",") if t.strip())


def parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class EarlyBirdConfig(StudyConfig):
    """One early-bird study. Every field is a command-line flag (``--checks-per-epoch``);
    ``seeds``, ``seed``, ``quick``, ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "early-bird"
    QUICK: ClassVar[dict[str, Any]] = {
        "seeds": 2,
        "epochs": 3,
        "widths": "8,8,16,16",
        "pool": 4,
        "batch_size": 128,
        "window": 3,
        "eps": 1.0,  # found as soon as the FIFO is full: a fixed point for the test
        "retrain": "0.5",
    }

    epochs: int = field(default=16, metadata={"help": "training epochs (the budget)", "min": 1})
    checks_per_epoch: int = field(
        default=2,
        metadata={"help": "channel masks computed and pushed to the detector per epoch", "min": 1},
    )
    batch_size: int = field(default=128, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(
        default=0.1, metadata={"help": "SGD (momentum 0.9) peak rate, cosine decay", "gt": 0.0}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "L2 weight decay", "min": 0.0})
    slimming: float = field(
        default=1e-4, metadata={"help": "L1 strength on BN scales (network slimming)", "min": 0.0}
    )
    eps: float = field(
        default=0.1,
        metadata={"help": "early bird when all mask distances in the FIFO are <= eps"},
    )
    window: int = field(default=5, metadata={"help": "masks in the detector's FIFO", "min": 2})
    min_keep: float = field(
        default=0.1,
        metadata={
            "help": "every layer keeps at least this share of its channels (its top |γ|): "
            "global pruning can empty a layer",
            "unit": True,
        },
    )
    widths: str = field(
        default="32,32,64,64", metadata={"help": "channels of the conv layers, comma-separated"}
    )
    pool: int = field(
        default=2,
        metadata={"help": "average-pool MNIST by this factor (2: 14x14)", "choices": (1, 2, 4)},
    )
    retrain: str = field(
        default="0.3,0.5,0.7",
        metadata={"help": "pruning ratios whose tickets are shrunk and retrained (of 0.3,0.5,0.7)"},
    )

    @property
    def width_tuple(self) -> tuple[int, ...]:
        return parse_ints(self.widths)

    @property
    def retrain_ratios(self) -> tuple[float, ...]:
        return parse_floats(self.retrain)

    def steps_per_check(self) -> int:
        from experiments.data import TRAIN_SIZES

        return TRAIN_SIZES["mnist"] // self.batch_size // self.checks_per_epoch

    def validate(self, fail) -> None:
        from experiments.data import TRAIN_SIZES

        try:
            widths = self.width_tuple
        except ValueError:
            fail("widths", f"expected comma-separated ints, got {self.widths!r}")
        if len(widths) < 2 or min(widths) < 1:
            fail("widths", f"needs >= 2 positive widths, got {self.widths!r}")
        try:
            ratios = self.retrain_ratios
        except ValueError:
            fail("retrain", f"expected comma-separated ratios, got {self.retrain!r}")
        if any(r not in RATIOS for r in ratios):
            fail("retrain", f"each ratio must be one of {RATIOS}, got {self.retrain!r}")
        if not 0.0 <= self.eps <= 1.0:
            fail("eps", f"must be in [0, 1], got {self.eps}")
        if self.batch_size > TRAIN_SIZES["mnist"]:
            fail("batch_size", f"must be <= the {TRAIN_SIZES['mnist']} training examples")
        if self.steps_per_check() < 1:
            fail(
                "checks_per_epoch",
                f"an epoch of {TRAIN_SIZES['mnist'] // self.batch_size} steps cannot be "
                f"split into {self.checks_per_epoch} checks",
            )
        if self.epochs * self.checks_per_epoch <= self.window:
            fail(
                "window",
                f"must be < the {self.epochs * self.checks_per_epoch} checks of the run, "
                f"got {self.window}",
            )


QUICK = EarlyBirdConfig.QUICK
build_parser = functools.partial(harness.build_parser, EarlyBirdConfig, DESCRIPTION)
