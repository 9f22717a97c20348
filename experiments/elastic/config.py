"""The elastic study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig

STRETCH = ("interleave", "cycle", "replicate_last")
SQUEEZE = ("interleave", "keep_first", "keep_last")
SOURCE_ARMS = ("imp", "random")


def arms_for(n_source: int, n_target: int) -> tuple[str, ...]:
    """The arms trained at a target depth, in program slot order (IMP first)."""
    strategies = STRETCH if n_target > n_source else SQUEEZE
    return ("imp", *strategies, "shuffle", "random")


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


@dataclass(frozen=True)
class ElasticConfig(StudyConfig):
    """One elastic study. Every field is a command-line flag; ``seeds``, ``seed``,
    ``quick``, ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "elastic"
    QUICK: ClassVar[dict[str, Any]] = {
        "source_blocks": 2,
        "targets": "1,3",
        "width": 4,
        "rounds": 1,
        "steps": 30,
        "eval_every": 15,
        "rewind_step": 5,
        "seeds": 2,
    }

    source_blocks: int = field(
        default=3, metadata={"help": "N of the source network (ResNet-(6N+2))", "min": 1}
    )
    targets: str = field(
        default="2,5,7", metadata={"help": "comma-separated target N (blocks per stage)"}
    )
    width: int = field(default=8, metadata={"help": "channels of stage 0 (x2, x4 after)", "min": 1})
    rounds: int = field(
        default=3, metadata={"help": "IMP prunings (sparsity 1 - (1 - fraction)^r)", "min": 1}
    )
    fraction: float = field(
        default=0.4,
        metadata={"help": "share of the remaining block weights pruned a round", "unit": True},
    )
    steps: int = field(default=150, metadata={"help": "updates per training", "min": 1})
    eval_every: int = field(
        default=50, metadata={"help": "updates between evaluations (divides --steps)", "min": 1}
    )
    batch_size: int = field(default=32, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(default=2e-3, metadata={"help": "Adam learning rate", "gt": 0.0})
    rewind_step: int = field(
        default=10, metadata={"help": "late rewinding: rewind to the weights at step k", "min": 0}
    )

    def target_list(self) -> list[int]:
        return _ints(self.targets)

    def validate(self, fail) -> None:
        try:
            targets = self.target_list()
        except ValueError:
            fail("targets", f"must be comma-separated integers, got {self.targets!r}")
        if not targets or min(targets) < 1 or len(set(targets)) != len(targets):
            fail("targets", f"must be distinct integers >= 1, got {self.targets!r}")
        if self.source_blocks in targets:
            fail("targets", f"must not repeat the source depth {self.source_blocks}")
        if self.source_blocks == 1 and max(targets) > 1:
            fail("source_blocks", "a stage with only block 0 cannot be stretched; use >= 2")
        if self.steps % self.eval_every:
            fail("eval_every", f"must divide --steps ({self.steps}), got {self.eval_every}")
        if self.rewind_step >= self.steps:
            fail("rewind_step", f"must be < --steps ({self.steps}), got {self.rewind_step}")
        if self.batch_size > 3500:
            fail("batch_size", f"must be <= the 3500 training examples, got {self.batch_size}")
        if not self.fraction > 0.0:
            fail("fraction", f"must be > 0, got {self.fraction}")
