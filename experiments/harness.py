"""What every study shares: flags from a dataclass, presets, a hashed run directory,
stage-by-stage resume, seeds, a progress bar, writers, and the study template.

A study is three things:

* a frozen dataclass deriving from :class:`StudyConfig`, whose fields are its flags
  (``rewind_step`` -> ``--rewind-step``; help, choices and bounds in each field's
  ``metadata``), a ``NAME`` (the subcommand and the run directory's prefix) and a
  ``QUICK`` preset;
* ``run_study(cfg, *, log=print) -> dict``, which calls :func:`start` for its
  :class:`Run`, computes through :meth:`Run.stage` and ends with :meth:`Run.publish`;
* its report: functions of the run's results (tables, CSV rows, figures) that the run
  passes to :meth:`Run.publish`; a report never imports its run.

``STUDY = Study(Config, run_study, __doc__)`` in the study's ``__init__`` is the whole
wrapper (parser, ``--quick``, ``jaxsparse <name>``, ``python -m``), and
registering it with the ``jaxsparse`` command is one line in ``experiments.cli``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# --- configuration: a dataclass whose fields are the flags ------------------------------


@dataclass(frozen=True)
class StudyConfig:
    """Fields every study has. Subclasses add theirs (all with defaults).

    Fields marked ``run_only`` say how to run, not what to compute: they are left out of
    the hash that names the output directory, so ``--resume`` or another ``--out`` finds
    the same run.
    """

    NAME: ClassVar[str] = "study"
    QUICK: ClassVar[dict[str, Any]] = {}

    seeds: int = field(default=3, metadata={"help": "independent seeds", "min": 1})
    seed: int = field(default=0, metadata={"help": "base PRNG seed", "min": 0})
    quick: bool = field(
        default=False,
        metadata={"help": "smoke test: a small preset (explicit flags win)", "run_only": True},
    )
    out: str = field(
        default="runs",
        metadata={"help": "root of the output directory <study>-<hash8>/", "run_only": True},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "continue from the last checkpoint of this run", "run_only": True},
    )

    def hashed(self) -> dict[str, Any]:
        """The fields that decide the results (what the output directory is named by)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not f.metadata.get("run_only")
        }

    def digest(self) -> str:
        blob = json.dumps(self.hashed(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def run_dir(self) -> Path:
        return Path(self.out) / f"{self.NAME}-{self.digest()}"

    def validate(self, fail: Callable[[str, str], typing.NoReturn]) -> None:
        """Checks across fields; ``fail(field, message)`` raises an argparse error naming
        the flag and where its value came from. Override in a study."""


def _bounded(kind: type, meta: dict):
    """An argparse ``type=`` that parses ``kind`` and checks the metadata's bounds
    (``min``, ``max``, ``gt``, ``unit`` for [0, 1)); argparse names the flag in the error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if "min" in meta and value < meta["min"]:
            raise argparse.ArgumentTypeError(f"must be >= {meta['min']}, got {text}")
        if "max" in meta and value > meta["max"]:
            raise argparse.ArgumentTypeError(f"must be <= {meta['max']}, got {text}")
        if "gt" in meta and not value > meta["gt"]:
            raise argparse.ArgumentTypeError(f"must be > {meta['gt']}, got {text}")
        if meta.get("unit") and not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse shows it in "invalid ... value" messages
    return parse


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one flag per field of the dataclass ``cls``: ``rewind_step`` -> ``--rewind-step``.

    Types come from the annotations (``bool`` fields become switches), help, ``choices``
    and bounds from ``field(metadata=...)``. Defaults are left out of the namespace
    (``argparse.SUPPRESS``), so ``vars(args)`` holds only the flags actually given and
    the caller can layer presets under them.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, meta = hints[f.name], f.metadata
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{meta.get('help', '')} (default: {f.default})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(
                flag, action="store_true", default=argparse.SUPPRESS, help=help_text
            )
            continue
        parser.add_argument(
            flag,
            type=_bounded(kind, meta),
            choices=meta.get("choices"),
            default=argparse.SUPPRESS,
            metavar=None if "choices" in meta else kind.__name__.upper(),
            help=help_text,
        )


def build_parser(
    cls: type[StudyConfig], description: str, parser: argparse.ArgumentParser | None = None
) -> argparse.ArgumentParser:
    """The study's argument parser (a new one, or flags added to a subcommand's)."""
    parser = parser or argparse.ArgumentParser(prog=f"jaxsparse {cls.NAME}")
    parser.description = parser.description or description
    add_dataclass_arguments(parser, cls)
    return parser


def config_from_args(
    cls: type[StudyConfig], args: argparse.Namespace, parser: argparse.ArgumentParser
) -> StudyConfig:
    """Defaults, then the ``--quick`` preset, then the flags given explicitly; then the
    study's cross-field checks, whose errors name the flag and the value's origin."""
    given = vars(args).copy()
    values = dict(cls.QUICK) if given.get("quick") else {}
    values.update(given)
    cfg = cls(**values)

    def fail(name: str, message: str) -> typing.NoReturn:
        origin = (
            "" if name in given else (" (from --quick)" if name in values else " (the default)")
        )
        parser.error(f"argument --{name.replace('_', '-')}: {message}{origin}")

    cfg.validate(fail)
    return cfg


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
        self.run(config_from_args(self.config, args, parser))
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
        return _process_index() == 0

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
    primary = _process_index() == 0
    if primary:
        if not cfg.resume and (run_dir / "checkpoints").exists():
            shutil.rmtree(run_dir / "checkpoints")
        run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg=cfg, dir=run_dir, log=log if primary else _quiet)
    run.write_json("config.json", dataclasses.asdict(cfg))
    return run


def join_processes(
    coordinator: str, num_processes: int, process_id: int, *, heartbeat: int = 30
) -> None:
    """Makes this process one of ``num_processes`` of a ``jax.distributed`` run, before
    JAX starts its backends. ``coordinator`` is process 0's ``HOST:PORT``, or ``"auto"``
    to let JAX find everything (a TPU pod slice, SLURM, Open MPI, or the
    ``JAX_COORDINATOR_ADDRESS`` variable). CPU devices talk over gloo.

    A joined process must never wait on a dead peer. Two things see to it:

    * ``heartbeat`` (seconds) bounds how long the distributed runtime takes to notice a
      peer that stopped without a word (a lost host) and end the others;
    * an uncaught exception (a collective that failed because a peer died, a bug, a
      Ctrl-C) ends the process at once, after its traceback is printed, with exit code 1
      (130 for Ctrl-C). Left to Python's normal exit, JAX's shutdown barrier would wait
      for the dead peer's heartbeat to time out (JAX's default: 100 s) and then abort.
    """
    import jax

    if heartbeat < 1:
        raise ValueError(f"join_processes: heartbeat must be >= 1 s, got {heartbeat}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only
    if coordinator == "auto":
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat)
    else:
        jax.distributed.initialize(
            coordinator, num_processes, process_id, heartbeat_timeout_seconds=heartbeat
        )
    sys.excepthook = _exit_now


def _exit_now(kind, error, tb) -> None:
    """``sys.excepthook`` of a joined process: print, then leave without the atexit
    handlers (JAX's shutdown barrier among them), so no peer is waited on."""
    import traceback

    traceback.print_exception(kind, error, tb)
    print(
        f"jaxsparse: process {_process_index()} stops here, without waiting for the other "
        "processes (a collective error usually means a peer died: see its log)",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130 if issubclass(kind, KeyboardInterrupt) else 1)


def _process_index() -> int:
    import jax

    return jax.process_index()


def _quiet(message: str) -> None:
    del message


def _jsonable(x: Any):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


# --- seeds, statistics, tables, plots ---------------------------------------------------


def seed_keys(cfg: StudyConfig, stream: int):
    """``cfg.seeds`` PRNG keys for one purpose (``stream``: init, data order, masks...),
    independent across streams and reproducible from ``cfg.seed``."""
    import jax

    return jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), stream), cfg.seeds)


def fold(keys, i: int):
    """Every key of ``keys`` folded with ``i`` (a round, a step): one stream per round."""
    import jax

    return jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    import numpy as np

    v = np.asarray(values, np.float64).ravel()
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def pm(values, scale: float = 100.0, digits: int = 1) -> str:
    """``"93.8 ± 0.4"``: mean ± sample std of ``values * scale``; ``"–"`` for none."""
    if not len(values):
        return "–"
    m, s = mean_std(values)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def finite(obj):
    """``obj`` with every non-finite float (inf, nan) replaced by None, for JSON."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned, text left-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    numeric = [
        all(_looks_numeric(r[i]) for r in rows) if rows else False for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip("%×x")
    try:
        float(head)
    except ValueError:
        return False
    return True


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- the persistent compilation cache ---------------------------------------------------


def enable_compilation_cache(directory: str | None = None) -> Path:
    """Turns on JAX's persistent compilation cache, so a second run of a study skips
    compiling. Default directory: ``$JAXSPARSE_CACHE`` or ``~/.cache/jaxsparse/xla``."""
    import jax

    path = Path(
        directory
        or os.environ.get("JAXSPARSE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxsparse" / "xla"
    )
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # cache every program that took a noticeable time to compile, however small
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# --- measured wall time -----------------------------------------------------------------


def timed(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``: the wall time until every array of the result
    is ready. JAX dispatches asynchronously, so a clock read right after the call would
    time only the dispatch."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - t0


def compiled(fn: Callable, *args: Any) -> tuple[Callable, float]:
    """Compiles the jitted ``fn`` ahead of time for the shapes of ``args``:
    ``(executable, seconds)``, so compile time is reported apart from measured compute.
    The executable takes arguments of the same shapes and dtypes (never recompiles)."""
    t0 = time.perf_counter()
    exe = fn.lower(*args).compile()
    return exe, time.perf_counter() - t0
