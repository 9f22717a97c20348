"""What the two early-ticket studies share (``early_bird``, You et al. 2020, and
``early_bert``, Chen et al. 2021): the detector run's flags and checks, the batch order,
the cosine schedule, the seed loop, and the pieces of their reports.

Both train a dense network and a search run (dense with a slimming penalty) side by
side, chunk by chunk; after every chunk (a *check*) the search run's structured mask goes
through :mod:`jaxsparse.early_bird`, and the ticket drawn when it stops changing is
shrunk and trained on. What differs stays in each study: the model and its groups
(channels with BatchNorm and SGD; heads and FFN units with Adam), and which tickets are
retrained against which controls.

The fair-comparison arms both studies add (issue 16), built from the pieces here:

- *dense for the same time*: dense training for as many whole chunks as fit in the
  early-ticket pipeline's measured time (compile left out, the dense chunk time measured
  in the same run, :func:`chunks_in`), on a cosine schedule stretched to that budget;
- *small dense from scratch*: the ticket's widths, fresh initial weights, the ticket's
  retraining budget and batches, its learning rate chosen on the validation split from
  ``--lr-grid`` (it differs in width from dense; :func:`best_on_val`);
- *ticket after full training*: drawn from the search run at the end of the budget and
  retrained for exactly the early-bird ticket's retraining budget.

Every arm's step count lands in ``results.json``; :func:`verdicts` reads each arm
against dense with :func:`experiments.stats.paired` (same seed: same batches, same
initial weights where the architecture is the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experiments import harness
from experiments.data import TRAIN_SIZES
from experiments.harness import StudyConfig

# the detector of both --quick presets: eps = 1 draws the ticket as soon as the FIFO is
# full, a fixed point the tests check
LR_GRID_HELP = (
    "factors of --lr tried for the small dense arm (the ticket's widths from scratch), the "
    "one with the best validation accuracy reported; '1': --lr only"
)
QUICK_DETECTOR = {"seeds": 2, "window": 3, "eps": 1.0, "batch_size": 128}


@dataclass(frozen=True)
class EarlyTicketConfig(StudyConfig):
    """The flags both early-ticket studies have (each sets its own defaults for the
    budget and the optimizer: ``epochs``, ``batch_size``, ``lr``)."""

    epochs: int = field(default=16, metadata={"help": "training epochs (the budget)", "min": 1})
    checks_per_epoch: int = field(
        default=2,
        metadata={"help": "masks computed and pushed to the detector per epoch", "min": 1},
    )
    batch_size: int = field(default=128, metadata={"help": "minibatch size", "min": 1})
    lr: float = field(default=0.1, metadata={"help": "peak learning rate, cosine decay", "gt": 0.0})
    slimming: float = field(
        default=1e-4,
        metadata={"help": "L1 strength on the slimming scales in the search run", "min": 0.0},
    )
    eps: float = field(
        default=0.1,
        metadata={"help": "early bird when all mask distances in the FIFO are <= eps"},
    )
    window: int = field(default=5, metadata={"help": "masks in the detector's FIFO", "min": 2})
    lr_grid: str = field(default="0.5,1,2", metadata={"help": LR_GRID_HELP})

    @property
    def lr_factors(self) -> tuple[float, ...]:
        return tuple(float(t) for t in self.lr_grid.split(",") if t.strip())

    def n_checks(self) -> int:
        return self.epochs * self.checks_per_epoch

    def steps_per_check(self) -> int:
        return TRAIN_SIZES["mnist"] // self.batch_size // self.checks_per_epoch

    def total_steps(self) -> int:
        """The epoch budget in steps: the length of the dense run's schedule."""
        return self.n_checks() * self.steps_per_check()

    def validate(self, fail) -> None:
        if not 0.0 <= self.eps <= 1.0:
            fail("eps", f"must be in [0, 1], got {self.eps}")
        if self.batch_size > TRAIN_SIZES["mnist"]:
            fail("batch_size", f"must be <= the {TRAIN_SIZES['mnist']} training examples")
        if self.steps_per_check() < 1:
            fail(
                "checks_per_epoch",
                f"an epoch of {TRAIN_SIZES['mnist'] // self.batch_size} steps cannot be "
                f"split into {self.checks_per_epoch} checks",
            )
        if self.n_checks() <= self.window:
            fail("window", f"must be < the {self.n_checks()} checks of the run, got {self.window}")
        try:
            factors = self.lr_factors
        except ValueError:
            factors = ()
        if not factors or min(factors) <= 0:
            fail("lr_grid", f"expected comma-separated positive factors, got {self.lr_grid!r}")


# --- the run -----------------------------------------------------------------------------


def batch_indices(cfg: EarlyTicketConfig, n: int, seed: int) -> np.ndarray:
    """``(checks, steps_per_check, batch)`` example indices: a fresh permutation every
    epoch (its last partial chunk dropped), the same for every arm of a seed."""
    rng = np.random.default_rng([cfg.seed, seed])
    per_epoch = cfg.checks_per_epoch * cfg.steps_per_check() * cfg.batch_size
    rows = [rng.permutation(n)[:per_epoch] for _ in range(cfg.epochs)]
    return np.concatenate(rows).reshape(-1, cfg.steps_per_check(), cfg.batch_size)


def hyper(steps: int, slimming: float, lr: float) -> dict:
    """The traced hyperparameters of a training chunk: the schedule's length, the L1
    strength and the peak learning rate, data rather than constants, so dense training
    (``slimming = 0``), the search run, every retraining length and every rate of the
    small dense arm's grid share one compiled program a shape."""
    import jax.numpy as jnp

    return {"steps": jnp.float32(steps), "slimming": jnp.float32(slimming), "lr": jnp.float32(lr)}


# LLVM's -O2 spends seconds on the unrolled threefry hash of every random initialiser: 6.0
# CPU-s to compile an 8,8,16,16 VGG's init against 0.9 at -O1. The hash is integer work, the
# initialisers' float ops came out bit-identical at -O1 (checked against -O2 and eager init
# for both studies' models; -O0 moved the truncated normal by an ulp). Only the init
# programs, run once a seed, get it: the training chunk's numbers do change at -O1.
INIT_OPTIONS = {"xla_backend_optimization_level": 1}
# op by op, ``normal(0.02)`` multiplies by sqrt(2) and by 0.02 apart; XLA's algebraic
# simplifier folds the two into one factor, an ulp off in the encoder's ``pos``
EAGER_INIT_OPTIONS = {**INIT_OPTIONS, "xla_disable_hlo_passes": "algsimp"}


def jit_init(init, *, as_eager: bool = False):
    """``init(key) -> weights`` compiled with :data:`INIT_OPTIONS`; ``as_eager``: the
    weights bit for bit as ``init`` run op by op (uncompiled) gives them, the way the
    small dense arms drew theirs before they had a program (:data:`EAGER_INIT_OPTIONS`)."""
    import jax

    return jax.jit(init, compiler_options=EAGER_INIT_OPTIONS if as_eager else INIT_OPTIONS)


def at_widths(shapes: dict, widths: tuple, build, make_eval, sample) -> dict:
    """``{"model", "evaluate", "init"}`` of the network at ``widths`` (``build(widths)``,
    its ``make_eval`` and ``init(key) -> model.init(key, sample)`` compiled by
    :func:`jit_init` with ``as_eager``), made on first use and kept in ``shapes`` for the
    whole run, so that arms and seeds whose tickets share widths share the programs;
    the caller may add its training program under ``"exe"``."""
    if widths not in shapes:
        model = build(widths)
        shapes[widths] = {
            "model": model,
            "evaluate": make_eval(model),
            "init": jit_init(lambda key: model.init(key, sample), as_eager=True),
        }
    return shapes[widths]


def cosine(lr: float, steps):
    """Cosine decay from ``lr`` to 0 over ``steps`` (which may be traced)."""
    import jax.numpy as jnp

    def schedule(count):
        done = jnp.minimum(count / jnp.maximum(steps, 1), 1.0)
        return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * done))

    return schedule


def full_width_programs(cfg: EarlyTicketConfig, chunk, check, first, x, y, log):
    """``(programs, compile_s)``: ``programs()`` compiles, ahead of time and once for all
    seeds, the full-width training ``chunk`` and the detector's ``check``, the first time
    a seed needs them (a resumed run never does), and returns the two executables;
    ``first() -> (carry, check_args)`` gives example arguments. The compile seconds land
    in ``compile_s``, apart from the measured training time."""
    import functools

    import jax
    import jax.numpy as jnp

    compile_s: dict[str, float] = {}

    @functools.cache
    def programs():
        carry, check_args = first()
        idx0 = jnp.zeros((cfg.steps_per_check(), cfg.batch_size), jnp.int32)
        train, compile_s["train"] = harness.compiled(
            chunk, carry, x, y, idx0, hyper(cfg.total_steps(), cfg.slimming, cfg.lr)
        )
        detect, compile_s["check"] = harness.compiled(jax.jit(check), *check_args)
        log(f"compiled the training and check programs in {sum(compile_s.values()):.1f} s")
        return train, detect

    return programs, compile_s


def run_seeds(run, cfg: EarlyTicketConfig, like: dict, run_seed, desc: str) -> list[dict]:
    """``run_seed(seed, bar) -> (arrays, extra)`` for every seed, one after another, each
    a resumable stage (``like``: the arrays' shapes); the seeds' arrays and extras."""
    bar = run.progress(None, total=cfg.seeds * cfg.n_checks(), desc=desc, unit="check")
    per_seed = []
    for s in range(cfg.seeds):
        arrays, extra = run.stage(f"seed_{s}", like, lambda s=s: run_seed(s, bar))
        if f"seed_{s}" not in run.timings:  # resumed: the bar skips the seed's checks
            bar.update(cfg.n_checks())
        per_seed.append({**{k: np.asarray(v) for k, v in arrays.items()}, **extra})
    bar.close()
    return per_seed


def train(exe, carry, x, y, rows, h) -> tuple:
    """``(carry, chunk_seconds)``: ``exe`` (a compiled chunk) over every row of ``rows``
    (``(chunks, steps_per_check, batch)`` example indices), each chunk timed apart."""
    import jax.numpy as jnp

    seconds = []
    for r in rows:
        (carry, _), t = harness.timed(exe, carry, x, y, jnp.asarray(r), h)
        seconds.append(t)
    return carry, seconds


EVAL_BATCH = 500  # divides the 3,500 training and 1,000 test digits: one shape to compile


def accuracy(evaluate, x, y, *weights) -> float:
    """``evaluate(*weights, xb, yb) -> mean accuracy`` over ``(x, y)`` in batches of
    :data:`EVAL_BATCH`, so the training and the test set share one compiled program."""
    x, y = np.asarray(x), np.asarray(y)  # sliced on the host: no slicing program a shape
    n = len(x)
    size = EVAL_BATCH if n % EVAL_BATCH == 0 else n
    hits = [
        float(evaluate(*weights, x[i : i + size], y[i : i + size])) * size
        for i in range(0, n, size)
    ]
    return sum(hits) / n


def best_on_val(cfg: EarlyTicketConfig, train_at, val_accuracy) -> tuple[Any, dict]:
    """Trains an arm at every rate of ``cfg.lr`` times ``cfg.lr_factors``
    (``train_at(lr) -> carry``) and keeps the one whose ``val_accuracy(carry)`` is
    highest (the first of equals, in the grid's order); ``(carry, record)``, the record
    holding the chosen rate and every rate's validation accuracy."""
    best, record = None, {"lr": None, "val_acc": {}}
    for factor in cfg.lr_factors:
        lr = cfg.lr * factor
        carry = train_at(lr)
        acc = float(val_accuracy(carry))
        record["val_acc"][f"{lr:g}"] = acc
        if best is None or acc > best[0]:
            best, record["lr"] = (acc, carry), lr
    assert best is not None  # validate() keeps the grid non-empty
    return best[1], record


def chunks_in(seconds: float, dense_chunk_s: list[float], cfg: EarlyTicketConfig) -> int:
    """How many dense chunks fit in ``seconds`` at the mean dense chunk time measured in
    the same run (both compile-free), rounded to a whole chunk (the compiled program's
    length) and kept within ``[1, cfg.n_checks()]`` (the batches of the epoch budget)."""
    per_chunk = float(np.mean(dense_chunk_s))
    return int(np.clip(round(seconds / per_chunk), 1, cfg.n_checks()))


def with_compile(seconds: float, *compiles: float) -> float:
    """A measured time with the compile of every program it needed added."""
    return float(seconds + sum(compiles))


# --- the report ---------------------------------------------------------------------------


MARGIN = 0.005  # "matches dense": the 95% interval of (arm - dense) lies above -0.5 points


def time_note(pipeline: str) -> str:
    """How the wall times of both studies are measured; ``pipeline``: what it adds up."""
    return (
        "Wall times are measured in this run: dense training and the search run alternate "
        "chunk by chunk (half an epoch by default), so machine load hits both alike. Each "
        "program is compiled ahead of time; 'wall s' leaves compiling out, 'wall s with "
        "compile' adds the compile of every program the arm needs (dense: its training "
        "program; the pipeline: the full-width training and check programs and the shrunk "
        "net's training program), counted whole for every seed as if it ran alone. "
        f"pipeline = {pipeline} Dense for the same time trains for as many whole dense "
        "chunks as fit in the pipeline's wall time WITHOUT compile (the dense chunk time "
        "measured in the same run), on a cosine schedule stretched to that budget."
    )


def verdicts(arms: dict[str, list[float]], dense: list[float], margin: float = MARGIN) -> dict:
    """Each arm's test accuracy against dense, paired by seed: the mean difference, its
    95% interval and the verdict at ``margin`` (:meth:`experiments.stats.Paired.verdict`).
    ``dense`` holds one value per seed of every arm, in the same order."""
    from experiments.stats import paired

    out = {}
    for name, acc in arms.items():
        if not len(acc):
            continue
        d = paired(acc, dense)
        out[name] = {**d.as_dict(), "verdict": d.verdict(margin), "text": d.format(scale=100)}
    return out


def verdict_table(labels: dict[str, str], summary_arms: dict, v: dict, margin: float) -> str:
    """The markdown table of every arm's test and training accuracy and its paired
    difference from dense with the verdict (``labels``: arm -> row label)."""
    rows = []
    for name, label in labels.items():
        a = summary_arms[name]
        d = v.get(name)
        rows.append(
            [
                label,
                f"{np.mean(a['steps']):,.0f}" if a.get("steps") else "–",
                harness.pm(a["acc"]),
                harness.pm(a["train_acc"]),
                d["text"] if d else "–",
                d["verdict"] if d else "–",
            ]
        )
    return harness.markdown_table(
        [
            "arm",
            "steps (mean)",
            "test acc %",
            "train acc %",
            "test − dense, points [95% CI]",
            f"verdict (margin {100 * margin:g} pt)",
        ],
        rows,
    )


def lr_note(cfg: EarlyTicketConfig, records: list) -> str:
    """A sentence on the small dense arm's learning rates (:func:`best_on_val`'s records,
    one a seed; ``None`` for a stage saved before the grid): which rate each seed chose
    and every rate's mean validation accuracy."""
    records = [r for r in records if r]
    if not records:
        return ""
    chosen = [r["lr"] for r in records]
    counts = ", ".join(
        f"{lr:g} ({chosen.count(lr)} seed{'s' * (chosen.count(lr) != 1)})"
        for lr in sorted(set(chosen))
    )
    rates = list(records[0]["val_acc"])
    val = ", ".join(
        f"{lr}: {100 * np.mean([r['val_acc'][lr] for r in records]):.1f}%" for lr in rates
    )
    return (
        f"The small dense arm's peak rate is chosen per seed on the validation split from "
        f"{', '.join(rates)} (--lr-grid {cfg.lr_grid} times --lr {cfg.lr:g}): chosen "
        f"{counts}; mean validation accuracy per rate {val}."
    )


def drawn_at(cfg: EarlyTicketConfig, checks: list[int]) -> dict:
    """When tickets were drawn: the epoch and the share of the schedule done."""
    return {
        "epoch": [(c + 1) / cfg.checks_per_epoch for c in checks],
        "share": [(c + 1) / cfg.n_checks() for c in checks],
    }


def mean_widths(rows) -> str:
    """``"24/12/6"``: per-layer widths (heads, channels...) averaged over seeds."""
    if not len(rows):
        return "–"
    return "/".join(f"{v:.0f}" for v in np.mean(np.asarray(rows, float), axis=0))


def seed_rows(per_seed: list[dict], arrays: tuple[str, ...]) -> list[dict]:
    """The seeds for ``results.json``: everything but the big ``arrays``."""
    return [{k: v for k, v in s.items() if k not in arrays} for s in per_seed]


def results(cfg: EarlyTicketConfig, ds, summary: dict, compile_s: dict, **extra) -> dict:
    """The common head of both studies' ``results.json``."""
    return {
        "study": cfg.NAME,
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "data": {"name": ds.name, "train": len(ds.x_train), "test": len(ds.x_test)},
        **extra,
        "std": "sample standard deviation over seeds (ddof=1)",
        "summary": summary,
        "compile_s": compile_s,
    }
