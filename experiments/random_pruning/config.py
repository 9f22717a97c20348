"""The random-pruning study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig

RATIOS = ("uniform", "uniform_plus", "er", "erk", "snip")
FAMILIES = ("mlp", "conv")


def floats(text: str) -> tuple[float, ...]:
    """``"0.5,1,2"`` -> ``(0.5, 1.0, 2.0)``; the empty string -> ``()``."""
    return tuple(float(t) for t in text.split(",") if t.strip())


def names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class RandomPruningConfig(StudyConfig):
    """One random-pruning study. Every field is a flag (``--mlp-widths``); ``seeds``,
    ``seed``, ``quick``, ``out`` and ``resume`` come from the harness."""

    NAME: ClassVar[str] = "random-pruning"
    QUICK: ClassVar[dict[str, Any]] = {
        "steps": 40,
        "seeds": 2,
        "sparsities": "0.9",
        "mlp_widths": "0.5,1",
        "mlp_depths": "2",
        "conv_widths": "0.5",
    }

    sparsities: str = field(
        default="0.8,0.9,0.95", metadata={"help": "comma-separated sparsities, each in (0, 1)"}
    )
    ratios: str = field(
        default=",".join(RATIOS),
        metadata={"help": f"layer-wise ratio rules, comma-separated, from {', '.join(RATIOS)}"},
    )
    mlp_widths: str = field(
        default="0.5,1,2,4", metadata={"help": "MLP width multipliers (empty: no MLP)"}
    )
    mlp_depths: str = field(default="2,4", metadata={"help": "MLP numbers of hidden layers"})
    mlp_base: int = field(default=64, metadata={"help": "MLP hidden units at width x1", "min": 1})
    conv_widths: str = field(
        default="0.5,1,2,4", metadata={"help": "conv-net width multipliers (empty: no conv net)"}
    )
    conv_channels: int = field(
        default=4, metadata={"help": "conv-net channels at width x1", "min": 1}
    )
    conv_hidden: int = field(
        default=32, metadata={"help": "conv-net dense hidden units at width x1", "min": 1}
    )
    steps: int = field(default=600, metadata={"help": "training iterations", "min": 1})
    batch_size: int = field(default=64, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate", "gt": 0.0})
    snip_batch: int = field(
        default=128, metadata={"help": "examples in SNIP's one batch (SNIP ratios)", "min": 1}
    )

    def validate(self, fail) -> None:
        from experiments.data import TRAIN_SIZES

        for name in ("sparsities", "mlp_widths", "mlp_depths", "conv_widths"):
            try:
                values = floats(getattr(self, name))
            except ValueError:
                fail(name, f"expected comma-separated numbers, got {getattr(self, name)!r}")
            if name == "sparsities" and (not values or not all(0 < s < 1 for s in values)):
                fail(name, f"needs values in (0, 1), got {self.sparsities!r}")
            if name != "sparsities" and not all(v > 0 for v in values):
                fail(name, f"needs positive values, got {getattr(self, name)!r}")
            if name == "mlp_depths" and not all(float(v).is_integer() for v in values):
                fail(name, f"needs whole numbers, got {self.mlp_depths!r}")
        bad = [r for r in names(self.ratios) if r not in RATIOS]
        if bad or not names(self.ratios):
            fail("ratios", f"unknown rule(s) {bad}; choose from {', '.join(RATIOS)}")
        if not floats(self.mlp_widths) and not floats(self.conv_widths):
            fail("mlp_widths", "both --mlp-widths and --conv-widths are empty: nothing to run")
        if floats(self.mlp_widths) and not floats(self.mlp_depths):
            fail("mlp_depths", "needs at least one depth when --mlp-widths is set")
        if self.batch_size > TRAIN_SIZES["mnist"]:
            fail("batch_size", f"must be <= {TRAIN_SIZES['mnist']}, got {self.batch_size}")
        if self.snip_batch > TRAIN_SIZES["mnist"]:
            fail("snip_batch", f"must be <= {TRAIN_SIZES['mnist']}, got {self.snip_batch}")
