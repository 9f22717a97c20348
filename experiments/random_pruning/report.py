"""Reporting for the random-pruning study: each arm's learning rate chosen on validation,
the paired comparisons behind the paper's claims (each a mean difference over seeds with
its 95% interval, :func:`experiments.stats.paired`), the tables, the CSV and the figure.

Every comparison is read on the *test* set at the learning rate each arm chose on the
*validation* set, paired by seed (same data order; same dense init at the alive
positions for the sparse arms and the dense arm of a width).
"""

from __future__ import annotations

from experiments import harness
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
COLORS = {"uniform": "C0", "uniform_plus": "C1", "er": "C2", "erk": "C3", "snip": "C4"}


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


def _find(arms: list[dict], rule: str, s: float, init: str) -> dict | None:
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
        have = [w for w in widths if _find(by_width[w], rule, s, init)]
        if len(have) < 2:
            continue
        lo = 1.0 if 1.0 in have and have[-1] != 1.0 else have[0]
        hi = have[-1]

        def gap(w, rule=rule, s=s, init=init):
            arm = _find(by_width[w], rule, s, init)
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
                a, b = _find(arms, ra, s, init), _find(arms, rb, s, init)
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
                a, b = _find(arms, rule, s, "scaled"), _find(arms, rule, s, "dense")
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
            small = _find(arms, "small", s, "-")
            for init in inits:
                a = _find(arms, "erk", s, init)
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


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


def table(cfg, records: list[dict], comp: dict) -> str:
    """The markdown: the verdicts first, then every arm, the width trend, the pairs."""
    widest = max(r["width"] for r in records)
    head = [
        "**Verdicts** (paired over seeds, test accuracy points at each arm's "
        f"validation-chosen learning rate; margin {cfg.margin:g} points; widest width "
        f"×{widest:g})",
        "",
    ]
    rows = []
    for r in comp["vs_dense"]:
        if r["width"] == widest and r["rule"] != "small":
            rows.append([f"{r['arm']} − dense, ×{widest:g}", r["text"], r["verdict"]])
    for r in comp["trend"]:
        rows.append(
            [
                f"{r['arm']}: gap at ×{r['to_width']:g} − gap at ×{r['from_width']:g}",
                r["text"],
                r["verdict"],
            ]
        )
    for r in comp["pairs"]:
        if r["width"] == widest and "small" not in r["comparison"]:
            init = "" if r["init"] == "-" else f", {r['init']} init"
            rows.append(
                [
                    f"{r['comparison']}, {100 * r['sparsity']:g}%{init}, ×{widest:g}",
                    r["text"],
                    r["verdict"],
                ]
            )
    for r in comp["pairs"]:
        if "small" in r["comparison"]:
            read = "" if r["readable"] else " (not read: train acc below threshold)"
            rows.append(
                [
                    f"ERK ({r['init']} init) − small dense ({r['small_hidden']} units), "
                    f"{100 * r['sparsity']:g}%, ×{r['width']:g}",
                    r["text"],
                    r["verdict"] + read,
                ]
            )
    out = [*head, harness.markdown_table(["comparison", "Δ points [95% CI]", "verdict"], rows)]

    out += ["", "**Every arm** (mean over seeds; Δ = arm − dense of the same width)", ""]
    rows = []
    for rec in records:
        sel = comp["selected"][rec["width"]]
        d = sel[0]
        rows.append(
            [
                f"×{rec['width']:g} ({rec['hidden']})",
                "dense",
                f"{d['lr']:g}",
                rec["n_kernel"],
                _pts(sum(d["train"]) / len(d["train"])),
                harness.pm(d["test"]),
                "",
                "",
            ]
        )
        for r in comp["vs_dense"]:
            if r["width"] == rec["width"]:
                label = r["arm"]
                if r["rule"] == "small":
                    label += f" ({rec['small'][str(r['sparsity'])]} units)"
                rows.append(
                    [
                        "",
                        label,
                        f"{r['lr']:g}",
                        f"{r['alive']:.0f}",
                        _pts(r["train_acc"]),
                        harness.pm(_find(sel, r["rule"], r["sparsity"], r["init"])["test"]),
                        r["text"],
                        r["verdict"],
                    ]
                )
    out.append(
        harness.markdown_table(
            [
                "width (hidden)",
                "arm",
                "lr",
                "alive weights",
                "train %",
                "test %",
                "Δ test [95% CI]",
                "vs dense",
            ],
            rows,
        )
    )
    out += ["", "**Pairs at every width** (Δ points [95% CI], verdict)", ""]
    rows = [
        [
            f"×{r['width']:g} ({r['hidden']})",
            f"{100 * r['sparsity']:g}%",
            r["comparison"],
            r["init"],
            r["text"],
            r["verdict"] + ("" if r.get("readable", True) else " (not read)"),
        ]
        for r in comp["pairs"]
    ]
    out.append(
        harness.markdown_table(
            ["width", "sparsity", "comparison", "init", "Δ [95% CI]", "verdict"], rows
        )
    )
    skipped = [
        f"×{rec['width']:g}: {x['rule']} at {100 * x['sparsity']:g}% ({x['reason']})"
        for rec in records
        for x in rec["skipped"]
    ]
    if skipped:
        out += ["", "Cells left out: " + "; ".join(skipped) + "."]
    return "\n".join(out)


def plot(cfg, records: list[dict], comp: dict, title: str):
    """Left: dense train and test accuracy against width. Then one panel per sparsity:
    arm − dense (test points) with 95% intervals against width; solid = scaled init,
    dashed = dense init, grey = the small dense net of equal weights."""
    plt = harness.pyplot()
    sps = floats(cfg.sparsities)
    fig, axes = plt.subplots(1, 1 + len(sps), figsize=(4.2 * (1 + len(sps)), 3.6), squeeze=False)
    ax = axes[0][0]
    hs = [rec["hidden"] for rec in records]
    for key, ls in (("train", "--"), ("test", "-")):
        ys = [100 * sum(comp["selected"][r["width"]][0][key]) / cfg.seeds for r in records]
        ax.plot(hs, ys, ls=ls, marker="o", color="k", label=f"dense, {key}")
    ax.set(ylabel="accuracy (%)", title="dense MLP")
    ax.legend(fontsize=7)
    for ax, s in zip(axes[0][1:], sps):
        groups = {}
        for r in comp["vs_dense"]:
            if r["sparsity"] == s:
                groups.setdefault((r["rule"], r["init"]), []).append(r)
        for k, ((rule, init), rs) in enumerate(sorted(groups.items())):
            shift = 2 ** (0.03 * (k - len(groups) / 2))  # side by side, not on top
            x = [r["hidden"] * shift for r in rs]
            y = [100 * r["mean"] for r in rs]
            err = [
                [100 * (r["mean"] - r["lo"]) for r in rs],
                [100 * (r["hi"] - r["mean"]) for r in rs],
            ]
            style = (
                {"color": "0.5", "ls": ":"}
                if rule == "small"
                else {"color": COLORS[rule], "ls": "-" if init == "scaled" else "--"}
            )
            ax.errorbar(
                x,
                y,
                yerr=err,
                marker="o",
                ms=3,
                capsize=2,
                lw=1,
                label=arm_label(rule, s, init).replace(f" {100 * s:g}%", ""),
                **style,
            )
        ax.axhline(0, color="k", lw=0.6)
        ax.set(title=f"{100 * s:g}% sparse", ylabel="arm − dense, test (points)")
        ax.legend(fontsize=6)
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(hs, [str(h) for h in hs])
        ax.minorticks_off()
        ax.set_xlabel("hidden units")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def outputs(cfg, records: list[dict], extra: dict) -> dict:
    """What :meth:`experiments.harness.Run.publish` writes: results, table, CSV, figure."""
    import numpy as np

    comp = comparisons(cfg, records)
    steps = [int(s) for r in records for s in np.ravel(r["steps"])]
    results = {
        "study": "random-pruning",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "selection": "each arm's learning rate: best mean validation accuracy over seeds; "
        "reported: test accuracy there, paired by seed (95% Student-t intervals)",
        "steps_per_network": sorted(set(steps)),
        **extra,
        "comparisons": {k: v for k, v in comp.items() if k != "selected"},
        "selected": {str(w): v for w, v in comp["selected"].items()},
        "networks": records,
    }
    caption = (
        f"Random pruning on {extra['data']}: an MLP with {cfg.depth} hidden layers of "
        f"{cfg.base} × width units, trained from scratch for {cfg.steps} Adam steps (batch "
        f"{cfg.batch_size}) at each learning rate of {cfg.lrs}, the rate chosen per arm on "
        f"validation; {cfg.seeds} paired seeds (config {cfg.digest()}). 'scaled init': alive "
        "weights × 1/√(layer density); 'dense init': the dense init with weights zeroed."
    )
    title = f"random pruning, MNIST-1D, {cfg.seeds} seeds (config {cfg.digest()})"
    csv = [
        {k: v for k, v in r.items() if k not in ("confidence",)}
        for r in comp["vs_dense"] + comp["pairs"] + comp["trend"]
    ]
    return {
        "results": results,
        "table": caption + "\n\n" + table(cfg, records, comp),
        "csv": csv,
        "figures": {"gap_vs_width.png": plot(cfg, records, comp, title)},
    }
