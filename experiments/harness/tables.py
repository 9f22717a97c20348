"""What reports print: mean ± std, markdown tables, finite JSON, and pyplot without a
display."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


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
