"""The oneshot study's configuration: a dataclass whose fields are the flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.harness import StudyConfig

METHODS = ("magnitude", "wanda", "sparsegpt")  # the one-shot methods, in table order


@dataclass(frozen=True)
class OneShotConfig(StudyConfig):
    """One oneshot study. Every field is a command-line flag (``--calib``); ``seed``,
    ``quick``, ``out`` and ``resume`` come from the harness (``seeds`` is 1: one
    pre-trained model is pruned by every method)."""

    NAME: ClassVar[str] = "oneshot"
    QUICK: ClassVar[dict[str, Any]] = {
        "layers": 1,
        "width": 32,
        "heads": 2,
        "context": 32,
        "train_steps": 60,
        "batch_size": 8,
        # calibration comes in batches of 16 sequences: with 16 and 32 every capture has
        # the one batch shape (16, 32) and compiles once per layer group, not per size
        "calib": 16,
        "calib_sweep": "16,32",
        "eval_seqs": 8,
        "finetune_steps": 10,
        "sparsities": "0,0.5",
        "patterns": "2:4",
        "blocksize": 16,
        "finetune_at": 0.5,
        "vision_data": "digits",
        "vision_steps": 300,
        "vision_calib": 256,
        "vision_sparsities": "0,0.5,0.9",
    }

    seeds: int = field(default=1, metadata={"help": "unused (one pre-trained model)", "min": 1})
    layers: int = field(default=4, metadata={"help": "transformer blocks", "min": 1})
    width: int = field(default=256, metadata={"help": "model width", "min": 8})
    heads: int = field(default=4, metadata={"help": "attention heads", "min": 1})
    context: int = field(default=128, metadata={"help": "bytes a sequence", "min": 8})
    train_steps: int = field(default=400, metadata={"help": "pre-training steps", "min": 1})
    batch_size: int = field(default=16, metadata={"help": "sequences a step", "min": 1})
    lr: float = field(default=2e-3, metadata={"help": "AdamW peak rate (cosine)", "gt": 0.0})
    calib: int = field(default=64, metadata={"help": "calibration sequences", "min": 1})
    calib_sweep: str = field(
        default="8,32,128", metadata={"help": "calibration sizes for the sweep (50%)"}
    )
    eval_seqs: int = field(default=64, metadata={"help": "held-out sequences", "min": 1})
    sparsities: str = field(
        default="0,0.5,0.6,0.7,0.8", metadata={"help": "unstructured sparsities"}
    )
    patterns: str = field(default="2:4,4:8", metadata={"help": "N:M patterns"})
    blocksize: int = field(default=128, metadata={"help": "SparseGPT block width", "min": 1})
    finetune_steps: int = field(
        default=100, metadata={"help": "masked(adam) fine-tuning steps", "min": 0}
    )
    finetune_at: float = field(
        default=0.7, metadata={"help": "unstructured sparsity fine-tuned", "unit": True}
    )
    finetune_lr: float = field(default=3e-4, metadata={"help": "fine-tuning Adam rate", "gt": 0})
    finetune_batch: int = field(default=8, metadata={"help": "fine-tuning batch", "min": 1})
    no_vision: bool = field(
        default=False, metadata={"help": "skip the vision stage (LeNet-300-100 on digits)"}
    )
    vision_data: str = field(
        default="mnist",
        metadata={
            "help": "vision stage's data: mnist (5,000 real MNIST digits) or digits (8x8)",
            "choices": ("mnist", "digits"),
        },
    )
    vision_steps: int = field(
        default=2000, metadata={"help": "vision stage: dense training steps", "min": 1}
    )
    vision_lr: float = field(default=1e-3, metadata={"help": "vision stage: Adam rate", "gt": 0.0})
    vision_calib: int = field(
        default=512, metadata={"help": "vision stage: calibration images", "min": 1}
    )
    vision_sparsities: str = field(
        default="0,0.5,0.7,0.8,0.9",
        metadata={"help": "vision stage: unstructured sparsities (and 2:4 always)"},
    )

    def sparsity_list(self) -> list[float]:
        return [float(s) for s in self.sparsities.split(",")]

    def pattern_list(self) -> list[tuple[int, int]]:
        return [tuple(int(v) for v in p.split(":")) for p in self.patterns.split(",") if p]

    def vision_sparsity_list(self) -> list[float]:
        return [float(s) for s in self.vision_sparsities.split(",")]

    def sweep_list(self) -> list[int]:
        return [int(v) for v in self.calib_sweep.split(",")]

    def validate(self, fail) -> None:
        if self.width % self.heads:
            fail("heads", f"must divide --width ({self.width}), got {self.heads}")
        try:
            sp = self.sparsity_list()
            pats = self.pattern_list()
            self.sweep_list()
        except ValueError as e:
            fail("sparsities", f"could not parse a list: {e}")
        if not all(0.0 <= s < 1.0 for s in sp):
            fail("sparsities", f"each must be in [0, 1), got {self.sparsities}")
        try:
            vsp = self.vision_sparsity_list()
        except ValueError as e:
            fail("vision_sparsities", f"could not parse a list: {e}")
        if not all(0.0 <= s < 1.0 for s in vsp):
            fail("vision_sparsities", f"each must be in [0, 1), got {self.vision_sparsities}")
        if any(not 1 <= n <= m or self.width % m for n, m in pats):
            fail("patterns", f"each n:m needs 1 <= n <= m and m | width, got {self.patterns}")
        if self.finetune_at not in sp and self.finetune_steps:
            fail("finetune_at", f"must be one of --sparsities ({self.sparsities})")
