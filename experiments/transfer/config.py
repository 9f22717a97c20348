"""The transfer study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig, compile_field

TASKS = ("reversed", "noisy")  # MNIST-1D variants (experiments.data.MNIST1D_VARIANTS)

# slot order of the arms in the evaluation program and in results.json
DENSE_ARMS = ("dense", "scratch")
SPARSE_ARMS = ("transfer", "imp", "oneshot", "random", "reinit")
LABELS = {
    "dense": "(a) dense, fine-tuned",
    "scratch": "dense from scratch",
    "transfer": "(b) transferred source ticket",
    "imp": "(c) IMP on the target",
    "oneshot": "(d) one-shot magnitude",
    "random": "(e) random mask, (b)'s layer densities",
    "reinit": "(f) (b)'s mask, random init",
}


def _numbers(text: str, kind: type) -> list:
    return [kind(t) for t in text.split(",") if t.strip()]


@dataclass(frozen=True)
class TransferConfig(StudyConfig):
    """One transfer study. Every field is a command-line flag; ``seed``, ``quick``,
    ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "transfer"
    QUICK: ClassVar[dict[str, Any]] = {
        "tasks": "noisy",
        "seeds": 2,
        "source_train": 200,
        "target_train": 200,
        "target_val": 200,
        "target_test": 500,
        "pretrain_steps": 20,
        "search_steps": 20,
        "steps": 20,
        "batch_size": 20,
        "rounds": "1,2",
        "lrs": "1e-3,1e-2",
        "compile": "fast",
    }

    compile: str = compile_field()

    seeds: int = field(
        default=5, metadata={"help": "paired seeds (pre-training included)", "min": 1}
    )
    tasks: str = field(
        default=",".join(TASKS),
        metadata={"help": f"comma-separated MNIST-1D target variants among {', '.join(TASKS)}"},
    )
    source_train: int = field(
        default=20_000,
        metadata={"help": "source (MNIST-1D standard) training examples", "min": 10},
    )
    target_train: int = field(
        default=1000, metadata={"help": "target training examples (small)", "min": 10}
    )
    target_val: int = field(
        default=2000,
        metadata={"help": "target validation examples (learning-rate choice)", "min": 10},
    )
    target_test: int = field(default=10_000, metadata={"help": "target test examples", "min": 10})
    pretrain_steps: int = field(
        default=3000, metadata={"help": "updates of source pre-training", "min": 1}
    )
    search_steps: int = field(
        default=400,
        metadata={"help": "updates of each IMP round on the source", "min": 1},
    )
    steps: int = field(
        default=400,
        metadata={
            "help": "downstream updates: every arm, and each IMP round on the target",
            "min": 1,
        },
    )
    batch_size: int = field(default=50, metadata={"help": "minibatch size", "min": 1})
    rounds: str = field(
        default="4,8,12",
        metadata={
            "help": "comma-separated IMP rounds whose masks the arms are compared at "
            "(sparsity 1 - (1 - fraction)^r); IMP runs up to the largest"
        },
    )
    fraction: float = field(
        default=0.2,
        metadata={"help": "share of the remaining backbone weights pruned a round", "unit": True},
    )
    lrs: str = field(
        default="2e-3,6e-3,2e-2",
        metadata={"help": "Adam learning rates; each arm takes the best on target validation"},
    )
    search_lr: float = field(
        default=3e-3,
        metadata={"help": "Adam learning rate of pre-training and the IMP searches", "gt": 0.0},
    )
    margin: float = field(
        default=0.5,
        metadata={
            "help": "points: 'matches' = 95% interval of (arm - dense) above -margin",
            "min": 0.0,
        },
    )
    premise_gain: float = field(
        default=3.0,
        metadata={
            "help": "points: the premise holds when the 95% interval of (dense fine-tuned - "
            "dense from scratch) lies above this",
            "min": 0.0,
        },
    )

    def task_list(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]

    def round_list(self) -> list[int]:
        return _numbers(self.rounds, int)

    def lr_list(self) -> list[float]:
        return _numbers(self.lrs, float)

    def validate(self, fail) -> None:
        tasks = self.task_list()
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks or len(set(tasks)) != len(tasks):
            fail("tasks", f"must be distinct names among {', '.join(TASKS)}, got {self.tasks!r}")
        for name in ("source_train", "target_train", "target_val", "target_test"):
            if getattr(self, name) % 10:
                fail(
                    name, f"must be a multiple of 10 (balanced classes), got {getattr(self, name)}"
                )
        if self.batch_size > min(self.target_train, self.source_train):
            smaller = min(self.target_train, self.source_train)
            fail(
                "batch_size",
                f"must be <= the smaller training set ({smaller}), got {self.batch_size}",
            )
        try:
            rounds, lrs = self.round_list(), self.lr_list()
        except ValueError:
            fail(
                "rounds" if not _ok(self.rounds, int) else "lrs", "must be comma-separated numbers"
            )
        if not rounds or rounds != sorted(set(rounds)) or rounds[0] < 1:
            fail("rounds", f"must be increasing positive integers, got {self.rounds!r}")
        if not lrs or min(lrs) <= 0 or len(set(lrs)) != len(lrs):
            fail("lrs", f"must be distinct positive learning rates, got {self.lrs!r}")
        if not self.fraction > 0.0:
            fail("fraction", f"must be > 0, got {self.fraction}")


def _ok(text: str, kind: type) -> bool:
    try:
        _numbers(text, kind)
    except ValueError:
        return False
    return True
