"""The elastic study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig, compile_field

STRETCH = ("interleave", "cycle", "replicate_last")
SQUEEZE = ("interleave", "keep_first", "keep_last")
CONTROLS = ("shuffle", "random")
TRAIN_SIZE = 3500  # the mnist14 training split


def strategies_for(n_source: int, n_target: int) -> tuple[str, ...]:
    """The elastic strategies of a target depth: stretching or squeezing ones."""
    return STRETCH if n_target > n_source else SQUEEZE


def arms_for(n_source: int, n_target: int) -> tuple[str, ...]:
    """Every arm reported at a target depth: IMP there, the dense network there, the
    elastic strategies and the two controls."""
    return ("imp", "dense", *strategies_for(n_source, n_target), *CONTROLS)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


@dataclass(frozen=True)
class ElasticConfig(StudyConfig):
    """One elastic study. Every field is a command-line flag; ``seeds``, ``seed``,
    ``quick``, ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "elastic"
    # one squeeze target of ResNet-8 from ResNet-14 at width 2: two small programs, with
    # XLA's convolution, which compiles in about half the time of im2col, and both
    # compiled at XLA's backend optimisation level 0 (half again)
    QUICK: ClassVar[dict[str, Any]] = {
        "source_blocks": 2,
        "targets": "1",
        "width": 2,
        "rounds": 1,
        "steps": 6,
        "batch_size": 16,
        "rewind_step": 2,
        "seeds": 2,
        "conv": "xla",
        "compile": "fast",
    }

    seeds: int = field(default=5, metadata={"help": "paired seeds", "min": 1})
    source_blocks: int = field(
        default=2, metadata={"help": "N of the source network (ResNet-(6N+2))", "min": 1}
    )
    targets: str = field(
        default="1,3", metadata={"help": "comma-separated target N (blocks per stage)"}
    )
    conv: str = field(
        default="im2col",
        metadata={
            "help": "convolutions as im2col matmuls (fast to run on a CPU) or XLA's "
            "convolution (about 2x faster to compile)",
            "choices": ("im2col", "xla"),
        },
    )
    compile: str = compile_field()
    width: int = field(default=8, metadata={"help": "channels of stage 0 (x2, x4 after)", "min": 1})
    rounds: int = field(
        default=1, metadata={"help": "IMP prunings (sparsity 1 - (1 - fraction)^r)", "min": 1}
    )
    fraction: float = field(
        default=0.75,
        metadata={"help": "share of the remaining block weights pruned a round", "unit": True},
    )
    steps: int = field(
        default=600, metadata={"help": "updates per training, every arm alike", "min": 1}
    )
    batch_size: int = field(default=128, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(
        default=1e-2,
        metadata={"help": "peak Adam learning rate (cosine decay to 0 over --steps)", "gt": 0.0},
    )
    rewind_step: int = field(
        default=20,
        metadata={"help": "late rewinding: every pruned arm starts from step k", "min": 1},
    )
    margin: float = field(
        default=0.5,
        metadata={"help": "'matches' margin, accuracy points (interval above -margin)", "gt": 0},
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
        if self.rewind_step >= self.steps:
            fail("rewind_step", f"must be < --steps ({self.steps}), got {self.rewind_step}")
        if self.batch_size > TRAIN_SIZE:
            fail(
                "batch_size",
                f"must be <= the {TRAIN_SIZE} training examples, got {self.batch_size}",
            )
        if not self.fraction > 0.0:
            fail("fraction", f"must be > 0, got {self.fraction}")
