"""Timing shared by the benchmark sections: interleaved repeats, medians, ratios, rows."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable


def block(x):
    import jax

    return jax.block_until_ready(x)


def interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, *, warmup: int = 2, clock: str = "auto"
) -> dict[str, list[float]]:
    """Seconds of each call over ``repeats`` rounds; every round runs all calls, in
    alternating order, so that drift in the machine's load hits all of them alike.
    Each call is run ``warmup`` times first (compile, then warm).

    ``clock="cpu"`` counts the process's CPU time (all its threads), ``"wall"`` the
    elapsed time; ``"auto"`` (the default) takes CPU time on JAX's CPU backend and wall
    time on an accelerator, where the host's CPU time says nothing of the device's work.
    On a CPU shared with other work, CPU time is far steadier: a process that waits for
    a core is not charged for the wait.
    """
    if clock == "auto":
        clock = auto_clock()
    if clock not in ("cpu", "wall"):
        raise ValueError(
            f"timing.interleaved: clock must be 'auto', 'cpu' or 'wall', got {clock!r}"
        )
    now = time.process_time if clock == "cpu" else time.perf_counter
    for fn in calls.values():
        for _ in range(warmup):
            block(fn())
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            t0 = now()
            block(calls[name]())
            times[name].append(now() - t0)
    return times


def auto_clock() -> str:
    """``"cpu"`` on JAX's CPU backend, ``"wall"`` on an accelerator."""
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "wall"


def clock_words() -> str:
    """What :func:`interleaved`'s default clock measures, for the sections' notes."""
    if auto_clock() == "cpu":
        return "the process's CPU time"
    return "wall time until the result is ready (device work)"


def median(xs) -> float:
    return float(statistics.median(xs))


def row(what: str, ours_s: float, base_s: float, baseline: str, *, goal=None, **extra) -> dict:
    """One table row: our time against a baseline measured in the same run."""
    ratio = ours_s / base_s
    out = {
        "what": what,
        "ours_ms": ours_s * 1e3,
        "baseline": baseline,
        "baseline_ms": base_s * 1e3,
        "ratio": ratio,
    }
    if goal is not None:
        out["goal"] = f"<= {goal:g}x"
        out["met"] = bool(ratio <= goal)
    out.update(extra)
    return out


def skipped(what: str, note: str) -> dict:
    return {"what": what, "ratio": None, "skipped": True, "note": note}


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``(key, header)`` columns; a skipped row shows
    its note in the last column."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        if r.get("skipped"):
            cells = [r["what"]] + ["—"] * (len(columns) - 2) + [f"skipped: {r['note']}"]
        else:
            cells = [fmt(r.get(key)) for key, _ in columns]
            if "ratio" in [k for k, _ in columns] and r.get("ratio") is not None:
                i = [k for k, _ in columns].index("ratio")
                cells[i] = f"{r['ratio']:.3f}x"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


RATIO_COLUMNS = [
    ("what", "what"),
    ("ours_ms", "jaxsparse ms"),
    ("baseline", "baseline"),
    ("baseline_ms", "baseline ms"),
    ("ratio", "ratio"),
    ("goal", "goal"),
    ("met", "met"),
]


def machine() -> dict:
    import jax

    import jaxsparse

    dev = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": dev.device_kind,
        "devices": jax.device_count(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "jaxsparse": jaxsparse.__version__,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def section(title: str, rows: list[dict], note: str = "", columns=None) -> dict:
    """What every section's ``measure(quick)`` returns."""
    md = f"### {title}\n\n" + (note + "\n\n" if note else "")
    md += table(rows, columns or RATIO_COLUMNS)
    return {"title": title, "rows": rows, "markdown": md}
