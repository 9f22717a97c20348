"""The sparse-training study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig

METHODS = ("dense", "erk", "snip", "grasp", "synflow", "set", "rigl", "gmp", "ste", "imp")


def method_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class SparseTrainingConfig(StudyConfig):
    """One sparse-training comparison. Every field is a flag (``--update-every``)."""

    NAME: ClassVar[str] = "sparse-training"
    QUICK: ClassVar[dict[str, Any]] = {
        "steps": 60,
        "seeds": 2,
        "imp_rounds": 2,
        "update_every": 10,
        "synflow_rounds": 5,
    }

    methods: str = field(
        default=",".join(METHODS),
        metadata={"help": f"comma-separated methods, from {', '.join(METHODS)}"},
    )
    sparsity: float = field(
        default=0.9, metadata={"help": "target sparsity of the kernels", "unit": True}
    )
    steps: int = field(
        default=1000, metadata={"help": "training iterations (every method)", "min": 1}
    )
    batch_size: int = field(default=60, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(default=1.2e-3, metadata={"help": "Adam learning rate", "gt": 0.0})
    update_every: int = field(
        default=50,
        metadata={"help": "steps between mask updates (SET, RigL, gradual pruning)", "min": 1},
    )
    update_end: float = field(
        default=0.75,
        metadata={"help": "share of training after which masks stop changing", "gt": 0.0},
    )
    drop_fraction: float = field(
        default=0.3, metadata={"help": "SET's zeta and RigL's alpha", "gt": 0.0, "max": 1.0}
    )
    imp_rounds: int = field(
        default=5,
        metadata={"help": "IMP rounds to reach --sparsity (each a full training)", "min": 1},
    )
    synflow_rounds: int = field(default=100, metadata={"help": "SynFlow's rounds", "min": 1})
    grasp_temperature: float = field(
        default=200.0, metadata={"help": "GraSP's softmax temperature", "gt": 0.0}
    )
    per_class: int = field(
        default=10, metadata={"help": "examples a class in SNIP's / GraSP's batch", "min": 1}
    )

    def validate(self, fail) -> None:
        from experiments.data import TRAIN_SIZES

        bad = [m for m in method_list(self.methods) if m not in METHODS]
        if bad or not method_list(self.methods):
            fail("methods", f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if self.sparsity <= 0:
            fail("sparsity", f"must be in (0, 1), got {self.sparsity}")
        if self.update_end > 1:
            fail("update_end", f"must be in (0, 1], got {self.update_end}")
        if self.steps % self.update_every:
            fail("update_every", f"must divide --steps ({self.steps}), got {self.update_every}")
        if int(self.update_end * self.steps) <= self.update_every:
            fail("update_end", "leaves no mask update before the end of the schedule")
        if self.batch_size > TRAIN_SIZES["mnist"]:
            fail("batch_size", f"must be <= {TRAIN_SIZES['mnist']}, got {self.batch_size}")
