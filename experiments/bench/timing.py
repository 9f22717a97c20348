"""The benchmark's one timer (interleaved repeats on the wall and CPU clocks), medians,
ratios and table rows; what a ratio means is in the package docstring."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple


def block(x):
    import jax

    return jax.block_until_ready(x)


class Times(NamedTuple):
    """Seconds per call of every method over the repeats, on both clocks: ``wall``
    (elapsed time until the result is ready) and ``cpu`` (the process's CPU time, all
    its threads), each ``{name: [seconds, ...]}``."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def interleaved(
    calls: dict[str, Callable[[], object]],
    repeats: int,
    *,
    warmup: int = 2,
    min_seconds: float = 0.0,
) -> Times:
    """The one timer of the benchmark: ``repeats`` rounds, each running every call once
    (or, with ``min_seconds``, enough back-to-back calls to last that long, divided back
    to one call) in a rotating order, so drift in the machine's load hits all alike.
    Every call is run ``warmup`` times first (compile, then warm). Each sample is read
    on the wall clock and on the process's CPU clock at once (see the package docstring
    for which a ratio uses)."""
    inner = dict.fromkeys(calls, 1)
    for name, fn in calls.items():
        for _ in range(warmup):
            block(fn())
        if min_seconds:
            t0 = time.perf_counter()
            block(fn())
            inner[name] = max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, k = calls[name], inner[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(k):
                out = fn()
            block(out)
            wall[name].append((time.perf_counter() - w0) / k)
            cpu[name].append((time.process_time() - c0) / k)
    return Times(wall, cpu)


def on_cpu() -> bool:
    """Whether JAX computes on the host, where its CPU time means something."""
    import jax

    return jax.default_backend() == "cpu"


def clock_words() -> str:
    """Which clocks the ratios are read on, for the sections' notes."""
    if on_cpu():
        return "wall time (the CPU-time ratio beside it where the two differ by > 5%)"
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


def compare(
    what: str, t: Times, ours: str, base: str, baseline: str, *, per: int = 1, **extra
) -> dict:
    """:func:`row` of ``ours`` against ``base`` from :func:`interleaved`'s times: the
    ratio of the medians on the wall clock, and beside it (``cpu_ratio``) the same on
    the CPU clock where JAX runs on the host; ``per`` divides both times (steps a call)."""
    out = row(what, median(t.wall[ours]) / per, median(t.wall[base]) / per, baseline, **extra)
    if on_cpu():
        out["cpu_ratio"] = median(t.cpu[ours]) / median(t.cpu[base])
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
                cells[i] = ratio_text(r)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_text(r: dict) -> str:
    """``"1.012x"``, and the CPU-time ratio beside it where the clocks disagree by > 5%."""
    text = f"{r['ratio']:.3f}x"
    cpu = r.get("cpu_ratio")
    if cpu is not None and abs(cpu / r["ratio"] - 1) > 0.05:
        text += f" (CPU time {cpu:.3f}x)"
    return text


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
