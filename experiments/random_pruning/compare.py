"""The random-pruning study's numbers: each arm's learning rate chosen on validation,
and the paired comparisons behind the paper's claims (each a mean difference over seeds with
its 95% interval, :func:`experiments.stats.paired`).

Every comparison is read on the *test* set at the learning rate each arm chose on the
*validation* set, paired by seed (same data order; same dense init at the alive
positions for the sparse arms and the dense arm of a width).
"""

from __future__ import annotations

from experiments.random_pruning.config import floats, names
from experiments.stats import paired

LABELS = {
    "dense": "dense",
    "uniform": "uniform",
    "uniform_plus": "uniform+",
    "er": "ER",
    "erk": "ERK",
    "snip": "SNIP-ratio",
    "small": "small dense",
}


def arm_label(rule: str, sparsity: float, init: str) -> str:
    """``"ERK 90% scaled"``, ``"small dense 90%"``, ``"dense"``."""
    if rule == "dense":
        return "dense"
    tail = "" if init == "-" else f" {init} init"
    return f"{LABELS[rule]} {100 * sparsity:g}%{tail}"


def select(rec: dict, lrs: tuple[float, ...]) -> list[dict]:
    """Each arm of a width at the learning rate with the best mean *validation*
    accuracy over seeds: its per-seed train / val / test accuracies there."""
    import numpy as np

    val = np.asarray(rec["val"], np.float64)  # (arms, lrs, seeds)
    out = []
    for a, (rule, s, init) in enumerate(rec["arms"]):
        best = int(np.argmax(val[a].mean(-1)))
        out.append(
            {
                "rule": rule,
                "sparsity": s,
                "init": init,
                "lr": lrs[best],
                "val_by_lr": val[a].mean(-1).tolist(),
                "alive": float(np.mean(rec["alive"][a])),
                **{k: np.asarray(rec[k])[a, best].tolist() for k in ("train", "val", "test")},
            }
        )
    return out


def find(arms: list[dict], rule: str, s: float, init: str) -> dict | None:
    for arm in arms:
        if (arm["rule"], arm["sparsity"], arm["init"]) == (rule, s, init):
            return arm
    return None


def comparisons(cfg, records: list[dict]) -> dict:
    """The paired comparisons, in points (accuracy x 100) with 95% intervals:

    * ``vs_dense``: every arm - the dense net of its width;
    * ``trend``: per sparse arm, (gap at the widest width) - (gap at x1, or at the
      narrowest width the arm has), gap = arm - dense, per seed: > 0 means the gap closes;
    * ``pairs``: ERK - uniform, SNIP-ratio - ERK, scaled - dense init, and ERK
      sparse-wide - small dense (same number of weights), at each width and sparsity,
      the last marked ``readable`` when both reach ``--fit-threshold`` training accuracy.
    """
    import numpy as np

    lrs = floats(cfg.lrs)
    margin = cfg.margin / 100
    by_width = {rec["width"]: select(rec, lrs) for rec in records}
    hidden = {rec["width"]: rec["hidden"] for rec in records}

    def pair(a, b):
        d = paired(a["test"], b["test"])
        return {**d.as_dict(), "text": d.format(scale=100), "verdict": d.verdict(margin)}

    vs_dense = []
    for w, arms in by_width.items():
        for arm in arms[1:]:
            vs_dense.append(
                {
                    "width": w,
                    "hidden": hidden[w],
                    "arm": arm_label(arm["rule"], arm["sparsity"], arm["init"]),
                    **{k: arm[k] for k in ("rule", "sparsity", "init", "lr", "alive")},
                    "train_acc": float(np.mean(arm["train"])),
                    "test_acc": float(np.mean(arm["test"])),
                    **pair(arm, arms[0]),
                }
            )

    trend = []
    widths = sorted(by_width)
    keys = {(a["rule"], a["sparsity"], a["init"]) for arms in by_width.values() for a in arms}
    for rule, s, init in sorted(k for k in keys if k[0] != "dense"):
        have = [w for w in widths if find(by_width[w], rule, s, init)]
        if len(have) < 2:
            continue
        lo = 1.0 if 1.0 in have and have[-1] != 1.0 else have[0]
        hi = have[-1]

        def gap(w, rule=rule, s=s, init=init):
            arm = find(by_width[w], rule, s, init)
            return np.asarray(arm["test"]) - np.asarray(by_width[w][0]["test"])

        d = paired(gap(hi), gap(lo))
        trend.append(
            {
                "arm": arm_label(rule, s, init),
                "rule": rule,
                "sparsity": s,
                "init": init,
                "from_width": lo,
                "to_width": hi,
                "gap_from": float(gap(lo).mean()),
                "gap_to": float(gap(hi).mean()),
                **d.as_dict(),
                "text": d.format(scale=100),
                # the gap (arm - dense, <= 0 when behind) grew towards 0 or beyond
                "verdict": {"better": "closes", "worse": "widens"}.get(
                    d.verdict(0.0), "unresolved"
                ),
            }
        )

    pairs = []
    inits = names(cfg.inits)
    for w, arms in by_width.items():
        for s in floats(cfg.sparsities):
            tests = [("ERK - uniform", ("erk", "uniform"), init) for init in inits]
            tests += [("SNIP-ratio - ERK", ("snip", "erk"), init) for init in inits]
            for name, (ra, rb), init in tests:
                a, b = find(arms, ra, s, init), find(arms, rb, s, init)
                if a and b:
                    pairs.append(
                        {
                            "width": w,
                            "hidden": hidden[w],
                            "sparsity": s,
                            "comparison": name,
                            "init": init,
                            **pair(a, b),
                        }
                    )
            for rule in names(cfg.ratios):
                a, b = find(arms, rule, s, "scaled"), find(arms, rule, s, "dense")
                if a and b:
                    pairs.append(
                        {
                            "width": w,
                            "hidden": hidden[w],
                            "sparsity": s,
                            "init": "-",
                            "comparison": f"{LABELS[rule]}: scaled - dense init",
                            **pair(a, b),
                        }
                    )
            small = find(arms, "small", s, "-")
            for init in inits:
                a = find(arms, "erk", s, init)
                if a and small:
                    fit = min(np.mean(a["train"]), np.mean(small["train"]))
                    pairs.append(
                        {
                            "width": w,
                            "hidden": hidden[w],
                            "sparsity": s,
                            "init": init,
                            "comparison": "ERK wide - small dense",
                            "small_hidden": next(
                                r["small"][str(s)] for r in records if r["width"] == w
                            ),
                            "train_acc_sparse": float(np.mean(a["train"])),
                            "train_acc_small": float(np.mean(small["train"])),
                            "readable": bool(fit >= cfg.fit_threshold),
                            **pair(a, small),
                        }
                    )
    return {"selected": by_width, "vs_dense": vs_dense, "trend": trend, "pairs": pairs}
