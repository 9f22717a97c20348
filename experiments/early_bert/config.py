"""The early-bert study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments import harness
from experiments.harness import StudyConfig

DESCRIPTION = (
    "EarlyBERT (Chen et al., ACL 2021): slimming coefficients on attention heads and FFN "
    "units find a structured early-bird ticket; the shrunk encoder trains to the end."
)


@dataclass(frozen=True)
class EarlyBertConfig(StudyConfig):
    """One early-bert study. Every field is a command-line flag (``--ffn-ratio``);
    ``seeds``, ``seed``, ``quick``, ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "early-bert"
    QUICK: ClassVar[dict[str, Any]] = {
        "seeds": 2,
        "epochs": 2,
        "checks_per_epoch": 3,
        "layers": 2,
        "width": 32,
        "ffn": 64,
        "batch_size": 128,
        "window": 3,
        "eps": 1.0,  # found as soon as the FIFO is full: a fixed point for the test
    }

    epochs: int = field(default=20, metadata={"help": "training epochs (the budget)", "min": 1})
    checks_per_epoch: int = field(
        default=2,
        metadata={"help": "masks computed and pushed to the detector per epoch", "min": 1},
    )
    batch_size: int = field(default=64, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(default=1e-3, metadata={"help": "Adam peak rate, cosine decay", "gt": 0.0})
    slimming: float = field(
        default=1e-4, metadata={"help": "L1 strength on the slimming coefficients", "min": 0.0}
    )
    eps: float = field(
        default=0.1,
        metadata={"help": "early bird when all mask distances in the FIFO are <= eps"},
    )
    window: int = field(default=5, metadata={"help": "masks in the detector's FIFO", "min": 2})
    layers: int = field(default=4, metadata={"help": "transformer blocks", "min": 1})
    heads: int = field(default=4, metadata={"help": "attention heads a block", "min": 1})
    width: int = field(default=64, metadata={"help": "model width (heads * head size)", "min": 1})
    ffn: int = field(default=256, metadata={"help": "FFN units a block", "min": 1})
    head_ratio: float = field(
        default=0.25,
        metadata={"help": "share of heads pruned in every layer (layerwise)", "unit": True},
    )
    ffn_ratio: float = field(
        default=0.4,
        metadata={"help": "share of FFN units pruned over all layers (global)", "unit": True},
    )

    def steps_per_check(self) -> int:
        from experiments.data import TRAIN_SIZES

        return TRAIN_SIZES["mnist"] // self.batch_size // self.checks_per_epoch

    def validate(self, fail) -> None:
        from experiments.data import TRAIN_SIZES

        if not 0.0 <= self.eps <= 1.0:
            fail("eps", f"must be in [0, 1], got {self.eps}")
        if self.width % self.heads:
            fail("heads", f"must divide --width ({self.width}), got {self.heads}")
        if round(self.head_ratio * self.heads) >= self.heads:
            fail("head_ratio", f"would prune every one of the {self.heads} heads of a layer")
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


QUICK = EarlyBertConfig.QUICK
build_parser = functools.partial(harness.build_parser, EarlyBertConfig, DESCRIPTION)
