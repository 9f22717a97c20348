"""The random-pruning study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig, compile_field

RATIOS = ("uniform", "uniform_plus", "er", "erk", "snip")
INITS = ("scaled", "dense")


def floats(text: str) -> tuple[float, ...]:
    """``"0.5,1,2"`` -> ``(0.5, 1.0, 2.0)``; the empty string -> ``()``."""
    return tuple(float(t) for t in text.split(",") if t.strip())


def names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class RandomPruningConfig(StudyConfig):
    """One random-pruning study. Every field is a flag (``--widths``); ``seeds``,
    ``seed``, ``quick``, ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "random-pruning"
    QUICK: ClassVar[dict[str, Any]] = {
        "n_train": 2000,
        "n_val": 500,
        "n_test": 1000,
        "widths": "0.5,1",
        "sparsities": "0.9",
        "lrs": "0.006,0.02",
        "steps": 60,
        "batch_size": 64,
        "seeds": 2,
        "compile": "fast",
    }

    compile: str = compile_field()

    seeds: int = field(default=5, metadata={"help": "paired seeds", "min": 1})
    n_train: int = field(
        default=20_000, metadata={"help": "MNIST-1D training examples (multiple of 10)", "min": 10}
    )
    n_val: int = field(
        default=5_000,
        metadata={"help": "MNIST-1D validation examples (choose the LR)", "min": 10},
    )
    n_test: int = field(
        default=10_000, metadata={"help": "MNIST-1D test examples (reported)", "min": 10}
    )
    depth: int = field(default=2, metadata={"help": "MLP hidden layers", "min": 1})
    base: int = field(default=64, metadata={"help": "MLP hidden units at width x1", "min": 1})
    widths: str = field(
        default="0.5,1,2,4", metadata={"help": "width multipliers, comma-separated, ascending"}
    )
    sparsities: str = field(
        default="0.9,0.97", metadata={"help": "comma-separated sparsities, each in (0, 1)"}
    )
    ratios: str = field(
        default="uniform,erk,snip",
        metadata={"help": f"layer-wise ratio rules, comma-separated, from {', '.join(RATIOS)}"},
    )
    inits: str = field(
        default="scaled,dense",
        metadata={
            "help": "sparse arms' initialisations, from scaled (alive weights x "
            "1/sqrt(layer density), Evci et al. 2022) and dense (the dense init, zeroed)"
        },
    )
    lrs: str = field(
        default="0.002,0.006,0.02",
        metadata={
            "help": "peak Adam learning rates (cosine decay to 0); each arm's is chosen "
            "on validation"
        },
    )
    steps: int = field(default=3000, metadata={"help": "Adam steps, every arm", "min": 1})
    batch_size: int = field(default=64, metadata={"help": "minibatch size", "min": 1})
    min_alive: int = field(
        default=200,
        metadata={"help": "drop a (width, sparsity) cell with fewer alive weights", "min": 0},
    )
    snip_batch: int = field(
        default=128, metadata={"help": "examples in SNIP's one batch (SNIP ratios)", "min": 1}
    )
    margin: float = field(
        default=0.5, metadata={"help": "'matches' margin in accuracy points", "min": 0.0}
    )
    fit_threshold: float = field(
        default=0.9,
        metadata={
            "help": "training accuracy both nets need before sparse-wide vs small-dense is read",
            "min": 0.0,
            "max": 1.0,
        },
    )

    def validate(self, fail) -> None:
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) % 10:
                fail(name, f"must be a multiple of 10, got {getattr(self, name)}")
        for name in ("widths", "sparsities", "lrs"):
            try:
                values = floats(getattr(self, name))
            except ValueError:
                fail(name, f"expected comma-separated numbers, got {getattr(self, name)!r}")
            if not values:
                fail(name, "needs at least one value")
            if name == "sparsities" and not all(0 < s < 1 for s in values):
                fail(name, f"needs values in (0, 1), got {self.sparsities!r}")
            if name != "sparsities" and not all(v > 0 for v in values):
                fail(name, f"needs positive values, got {getattr(self, name)!r}")
            if name == "widths" and list(values) != sorted(set(values)):
                fail(name, f"needs distinct values in ascending order, got {self.widths!r}")
        for name, allowed in (("ratios", RATIOS), ("inits", INITS)):
            given = names(getattr(self, name))
            bad = [r for r in given if r not in allowed]
            if bad or not given:
                fail(name, f"unknown value(s) {bad or given}; choose from {', '.join(allowed)}")
        if self.batch_size > self.n_train:
            fail("batch_size", f"must be <= --n-train ({self.n_train}), got {self.batch_size}")
        if self.snip_batch > self.n_train:
            fail("snip_batch", f"must be <= --n-train ({self.n_train}), got {self.snip_batch}")
