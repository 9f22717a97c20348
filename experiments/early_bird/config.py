"""The early-bird study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.early_ticket import QUICK_DETECTOR, EarlyTicketConfig

RATIOS = (0.3, 0.5, 0.7)  # the paper's channel pruning ratios, tracked together


def parse_floats(text: str) -> tuple[float, ...]:
    return tuple(float(t) for t in text.split(",") if t.strip())


def parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class EarlyBirdConfig(EarlyTicketConfig):
    """One early-bird study. Every field is a command-line flag (``--checks-per-epoch``);
    the detector's and the harness's come from the base classes."""

    NAME: ClassVar[str] = "early-bird"
    QUICK: ClassVar[dict[str, Any]] = {
        **QUICK_DETECTOR,
        "epochs": 3,
        # two conv layers: each width compiles its training, evaluation and init programs
        # (a new width per seed's ticket), at 2.8 CPU-s a width against 4.7 for four layers
        "widths": "8,16",
        "pool": 4,
        "retrain": "0.5",
    }

    seeds: int = field(default=5, metadata={"help": "independent seeds (paired)", "min": 1})
    epochs: int = field(default=16, metadata={"help": "training epochs (the budget)", "min": 1})
    batch_size: int = field(default=128, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(
        default=0.1, metadata={"help": "SGD (momentum 0.9) peak rate, cosine decay", "gt": 0.0}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "L2 weight decay", "min": 0.0})
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
        default="0.5",
        metadata={
            "help": "pruning ratios whose tickets are shrunk and retrained against every "
            "control (of 0.3,0.5,0.7; each costs about 0.8 of a dense run a seed)"
        },
    )

    @property
    def width_tuple(self) -> tuple[int, ...]:
        return parse_ints(self.widths)

    @property
    def retrain_ratios(self) -> tuple[float, ...]:
        return parse_floats(self.retrain)

    def validate(self, fail) -> None:
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
        super().validate(fail)
