"""``jaxsparse bench``: one benchmark command.

Every section is a module with ``measure(quick: bool) -> {"title", "rows", "markdown"}``
(``rows``: a list of dicts; a ratio is always against a baseline measured in the same
run, from interleaved repeats and medians); adding one is one line in :data:`SECTIONS`.
The command prints each section's markdown table as it finishes and writes
``bench.json`` and ``bench.md`` to its run directory, ``runs/bench-<hash8>/``.

Run::

    jaxsparse bench                    # the full tables, tens of minutes on 2 CPU cores
    jaxsparse bench --quick            # smoke test, small sizes, well under a minute
    jaxsparse bench --sections step,memory
    python -m experiments.bench --quick
"""

from __future__ import annotations

import functools
import importlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments import harness
from experiments.harness import StudyConfig

DESCRIPTION = "Benchmarks against baselines measured in the same run (markdown + JSON)."

# section name -> module with measure(quick) -> {"title", "rows", "markdown"}
SECTIONS: dict[str, str] = {
    "training": "experiments.bench.training",
    "threshold": "experiments.bench.threshold",
    "imp": "experiments.bench.imp",
    "memory": "experiments.bench.memory",
    "export": "experiments.bench_export",
    "shrink": "experiments.bench_shrink",
    "models": "experiments.bench.models",
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


build_parser = functools.partial(harness.build_parser, BenchConfig, DESCRIPTION)
run_from_args = harness.run_from_args(run_study, BenchConfig)
main = harness.main(run_study, BenchConfig, DESCRIPTION)
