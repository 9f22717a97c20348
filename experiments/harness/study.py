"""A run of a study: the study template (:class:`Study`), its run directory, resumable
stages, progress bar and writers (:class:`Run`), and its seeds."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.harness.clock import timed
from experiments.harness.flags import StudyConfig, build_parser, config_from_args
from experiments.harness.processes import keep_freed_memory, process_index
from experiments.harness.tables import finite


@dataclass(frozen=True)
class Study:
    """A study as the ``jaxsparse`` command runs it: its config class, its run function
    and its description (the study package's docstring: the first paragraph is the
    subcommand's one-line help, the first two are ``--help``'s description).

    Example::

        STUDY = Study(LotteryConfig, run_study, __doc__)
        STUDY.main(["--quick"])          # python -m experiments.lottery --quick
    """

    config: type[StudyConfig]
    run: Callable[..., dict]  # run(cfg, *, log=print) -> results
    doc: str

    def _paragraphs(self) -> list[str]:
        return [" ".join(p.split()) for p in self.doc.strip().split("\n\n")]

    @property
    def summary(self) -> str:
        return self._paragraphs()[0]

    @property
    def description(self) -> str:
        return "\n\n".join(self._paragraphs()[:2])

    @property
    def name(self) -> str:
        return self.config.NAME

    def build_parser(self, parser: argparse.ArgumentParser | None = None):
        """The study's flags, on a new parser or on the ``jaxsparse`` subcommand's."""
        return build_parser(self.config, self.description, parser)

    def run_from_args(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        cfg = config_from_args(self.config, args, parser)
        if self.name != "bench":  # the bench times what a user's process gets
            keep_freed_memory()
        self.run(cfg)
        return 0

    def main(self, argv: Sequence[str] | None = None) -> int:
        """``python -m experiments.<study>``: the study alone, without the command."""
        parser = self.build_parser()
        return self.run_from_args(parser.parse_args(argv), parser)


# --- a run: its directory, stages, progress and writers ---------------------------------


@dataclass
class Run:
    """One run of a study: its directory, log, clock and writers. Made by :func:`start`."""

    cfg: StudyConfig
    dir: Path
    log: Callable[[str], None] = print
    t_start: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def primary(self) -> bool:
        """Whether this is process 0, the one that logs and writes files. In a
        multi-process run every process computes and takes part in the checkpoints;
        the others' writers and progress bar do nothing."""
        return process_index() == 0

    def stage(self, name: str, like: Any, compute: Callable[[], tuple[Any, dict]]):
        """``compute() -> (pytree, extra)``, saved as checkpoint ``name``; with
        ``--resume`` a saved stage is loaded onto ``like`` (a pytree of the same
        structure) instead of computed again. Times each computed stage."""
        from jaxsparse import checkpoint

        path = self.checkpoints / name
        if self.cfg.resume and path.exists():
            tree, extra = checkpoint.load_state(path, like)
            self.log(f"resumed stage {name!r} from {path}")
            return tree, extra
        t0 = time.perf_counter()
        tree, extra = compute()
        self.timings[name] = time.perf_counter() - t0
        checkpoint.save_state(path, tree, extra=extra)
        return tree, extra

    def progress(self, iterable: Iterable, *, total: int, desc: str, unit: str, initial=0):
        """A tqdm bar on stderr (so tables on stdout stay clean)."""
        from tqdm import tqdm

        return tqdm(
            iterable,
            desc=desc,
            unit=unit,
            total=total,
            initial=initial,
            file=sys.stderr,
            disable=not self.primary,
        )

    def calls(self, total: int, *, desc: str, unit: str) -> Calls:
        """A progress bar of ``total`` compiled calls that also times each one: see
        :class:`Calls`."""
        return Calls(self.progress(range(total), total=total, desc=desc, unit=unit))

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.dir / name
        if self.primary:
            path.write_text(json.dumps(obj, indent=1, default=_jsonable))
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.dir / name
        if self.primary:
            path.write_text(text if text.endswith("\n") else text + "\n")
        return path

    def write_csv(self, name: str, rows: Sequence[dict]) -> Path:
        """Rows of flat dicts; the header is the union of their keys, in first-seen order."""
        path = self.dir / name
        if not self.primary:
            return path
        header: list[str] = []
        for row in rows:
            header += [k for k in row if k not in header]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def save_figure(self, name: str, fig) -> Path:
        import matplotlib.pyplot as plt

        path = self.dir / name
        if self.primary:
            fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return path

    def finish(self, **timing: Any) -> dict:
        """Writes ``timing.json`` (stage times, the given figures, the total)."""
        out = {**{f"{k}_s": v for k, v in self.timings.items()}, **timing}
        out["total_s"] = time.perf_counter() - self.t_start
        self.write_json("timing.json", out)
        return out

    def publish(
        self,
        results: dict,
        *,
        table: str,
        csv: Sequence[dict] = (),
        figures: dict[str, Any] | None = None,
        **timing: Any,
    ) -> dict:
        """How every study ends: ``results.json`` (non-finite floats written as null),
        ``results.csv`` (rows of flat dicts), ``table.md``, the figures (name -> figure),
        ``timing.json`` (:meth:`finish` with ``timing``); logs the table and what was
        written. Returns the results as written."""
        results = finite(results)
        self.write_json("results.json", results)
        if csv:
            self.write_csv("results.csv", csv)
        self.write_text("table.md", table)
        for name, fig in (figures or {}).items():
            self.save_figure(name, fig)
        total = self.finish(**timing)["total_s"]
        self.log("\n" + table)
        if self.primary:
            files = [p.name + "/" * p.is_dir() for p in sorted(self.dir.iterdir())]
            files = ", ".join(f for f in files if f != "checkpoints/")
            self.log(f"\ntotal {total:.1f} s; wrote {self.dir}/ ({files})")
        return results


@dataclass
class Calls:
    """``calls(fn, *args)`` runs ``fn(*args)``, waits for its result, records the wall
    seconds in ``seconds`` and advances the bar; ``skip(n)`` advances it over calls a
    resumed stage did not make."""

    bar: Any
    seconds: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.ticks = iter(self.bar)

    def __call__(self, fn: Callable, *args: Any) -> Any:
        out, seconds = timed(fn, *args)
        self.seconds.append(seconds)
        next(self.ticks, None)
        return out

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self.ticks, None)

    def close(self) -> None:
        self.bar.close()


def start(cfg: StudyConfig, *, log: Callable[[str], None] = print) -> Run:
    """Creates (or, with ``--resume``, reopens) the run directory and writes
    ``config.json``. Without ``--resume`` old checkpoints there are removed first.
    In a multi-process run (:func:`join_processes` first) only process 0 touches the
    directory and logs."""
    run_dir = cfg.run_dir()
    primary = process_index() == 0
    if primary:
        if not cfg.resume and (run_dir / "checkpoints").exists():
            shutil.rmtree(run_dir / "checkpoints")
        run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg=cfg, dir=run_dir, log=log if primary else _quiet)
    run.write_json("config.json", dataclasses.asdict(cfg))
    return run


def _quiet(message: str) -> None:
    del message


def _jsonable(x: Any):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


# --- seeds ------------------------------------------------------------------------------


def seed_keys(cfg: StudyConfig, stream: int):
    """``cfg.seeds`` PRNG keys for one purpose (``stream``: init, data order, masks...),
    independent across streams and reproducible from ``cfg.seed``."""
    import jax

    return jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), stream), cfg.seeds)


def fold(keys, i: int):
    """Every key of ``keys`` folded with ``i`` (a round, a step): one stream per round."""
    import jax

    return jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
