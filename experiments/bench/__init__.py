"""``jaxsparse bench``: benchmarks against baselines measured in the same run, as markdown
tables and JSON.

Every section is a module with ``measure(quick: bool) -> {"title", "rows", "markdown"}``
(``rows``: a list of dicts); adding one is one line in :data:`SECTIONS`. The command
prints each section's markdown table as it finishes and writes ``bench.json`` and
``bench.md`` to its run directory, ``runs/bench-<hash8>/``.

**What a ratio is.** Every ratio is ours / a baseline measured in the same run, both
timed by the one timer, :func:`experiments.bench.timing.interleaved`: warm-up calls
first (compile, then warm), then repeats in which every method runs once in a rotating
order, so drift in the machine's load hits all alike. A ratio is the median of ours
over the median of the baseline.

* *Clock*: the wall clock, until the result is ready. Users wait for the wall clock.
  Every sample is also read on the process's CPU clock; on JAX's CPU backend the
  CPU-time ratio (``cpu_ratio``) is kept in the JSON and printed beside the wall ratio
  where the two differ by more than 5%. CPU time is steadier on a shared machine (a
  process waiting for a core is not charged), but flatters a method whose extra work is
  less parallel than its baseline's, so it is never the headline.
* *Loop*: training steps run inside one jitted ``lax.scan`` (how the studies run: no
  per-step Python dispatch). Where users' usual Flax loop, one jitted call a step, gives
  a different ratio (by more than 5%), that row is reported too (the training
  section's masked step; ``python -m experiments.bench.core`` shows both for the MLP).

Run::

    jaxsparse bench                    # the full tables, tens of minutes on 2 CPU cores
    jaxsparse bench --quick            # smoke test, small sizes, well under a minute
    jaxsparse bench --sections training,memory
    python -m experiments.bench --quick

Standalone scripts beside the sections: ``python -m experiments.bench.core`` (masked
step and global prune, scan and per-call), ``experiments.bench.state`` (the rewind
snapshot's cost) and ``experiments.bench.oracle_torch`` (masks against
``torch.nn.utils.prune``).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments import harness
from experiments.harness import StudyConfig

# section name -> module with measure(quick) -> {"title", "rows", "markdown"}
SECTIONS: dict[str, str] = {
    "training": "experiments.bench.training",
    "threshold": "experiments.bench.threshold",
    "imp": "experiments.bench.imp",
    "memory": "experiments.bench.memory",
    "export": "experiments.bench.export",
    "shrink": "experiments.bench.shrink",
    "oneshot": "experiments.bench.oneshot",
    "models": "experiments.bench.models",
    "sharded": "experiments.bench.sharded",
    "optrace": "experiments.bench.optrace",
}


@dataclass(frozen=True)
class BenchConfig(StudyConfig):
    """The benchmark's flags (``--quick``, ``--out`` and the unused seed fields come
    from the harness)."""

    NAME: ClassVar[str] = "bench"
    QUICK: ClassVar[dict[str, Any]] = {}

    sections: str = field(
        default="all",
        metadata={"help": f"comma-separated sections to run, or all ({', '.join(SECTIONS)})"},
    )

    def chosen(self) -> list[str]:
        return list(SECTIONS) if self.sections == "all" else self.sections.split(",")

    def validate(self, fail) -> None:
        unknown = [s for s in self.chosen() if s not in SECTIONS]
        if unknown:
            fail("sections", f"unknown {unknown}; choose from {list(SECTIONS)}")


def run_study(cfg: BenchConfig, *, log=print) -> dict:
    """Runs the chosen sections; writes ``bench.json`` and ``bench.md``."""
    from experiments.bench import timing

    run = harness.start(cfg, log=log)
    info = timing.machine()
    head = (
        f"jaxsparse bench{' --quick' if cfg.quick else ''}: jax {info['jax']} "
        f"({info['backend']}: {info['device']}, {info['devices']} device(s)), "
        f"{info['cpu_cores']} CPU cores, Python {info['python']}, "
        f"jaxsparse {info['jaxsparse']}, load average {info['load_average']}"
    )
    log(head + "\n")
    results: dict[str, Any] = {"machine": info, "quick": cfg.quick, "sections": {}}
    parts = [head]
    for name in cfg.chosen():
        t0 = time.perf_counter()
        out = importlib.import_module(SECTIONS[name]).measure(cfg.quick)
        out = {**out, "seconds": time.perf_counter() - t0}
        results["sections"][name] = out
        parts.append(out["markdown"])
        log(out["markdown"] + "\n")
        run.write_json("bench.json", results)  # what is done so far survives a crash
    run.write_text("bench.md", "\n\n".join(parts))
    run.finish()
    log(f"wrote {run.dir / 'bench.json'} and {run.dir / 'bench.md'}")
    return results


STUDY = harness.Study(BenchConfig, run_study, __doc__)
