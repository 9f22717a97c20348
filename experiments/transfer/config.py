"""The transfer study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig

TASKS = ("mnist5-9", "digits28")


@dataclass(frozen=True)
class TransferConfig(StudyConfig):
    """One transfer study. Every field is a command-line flag; ``seeds``, ``seed``,
    ``quick``, ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "transfer"
    QUICK: ClassVar[dict[str, Any]] = {"rounds": 2, "steps": 60, "eval_every": 30, "seeds": 2}

    tasks: str = field(
        default=",".join(TASKS),
        metadata={"help": f"comma-separated downstream tasks among {', '.join(TASKS)}"},
    )
    rounds: int = field(
        default=13,
        metadata={"help": "IMP rounds (sparsity 1 - (1 - fraction)^r; 13 -> 94.5%)", "min": 1},
    )
    steps: int = field(
        default=300,
        metadata={"help": "updates per training (pre-training and every arm)", "min": 1},
    )
    eval_every: int = field(
        default=50, metadata={"help": "updates between evaluations (divides --steps)", "min": 1}
    )
    batch_size: int = field(default=60, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(default=1.2e-3, metadata={"help": "Adam learning rate", "gt": 0.0})
    fraction: float = field(
        default=0.2,
        metadata={"help": "share of the remaining backbone weights pruned a round", "unit": True},
    )

    def task_list(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]

    def validate(self, fail) -> None:
        tasks = self.task_list()
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks or len(set(tasks)) != len(tasks):
            fail("tasks", f"must be distinct names among {', '.join(TASKS)}, got {self.tasks!r}")
        if self.steps % self.eval_every:
            fail("eval_every", f"must divide --steps ({self.steps}), got {self.eval_every}")
        if self.batch_size > 1257:  # the smallest training set (UCI digits)
            fail("batch_size", f"must be <= 1257 (UCI digits' training set), got {self.batch_size}")
        if not self.fraction > 0.0:
            fail("fraction", f"must be > 0, got {self.fraction}")
