"""Reporting for the elastic study: per depth, round and arm the accuracies over seeds,
the paired differences against IMP at that depth and against the dense network there
(:func:`experiments.stats.paired`), the table and the plot."""

from __future__ import annotations

from experiments import harness
from experiments.elastic.config import CONTROLS, ElasticConfig, arms_for
from experiments.stats import paired

LABELS = {
    "imp": "IMP at this depth",
    "dense": "dense at this depth",
    "interleave": "elastic: interleave",
    "cycle": "elastic: cycle",
    "replicate_last": "elastic: replicate last",
    "keep_first": "elastic: keep first",
    "keep_last": "elastic: keep last",
    "shuffle": "interleave, copied masks shuffled",
    "random": "random masks, same densities and weights",
}
STYLES = {
    "imp": ("k", "s"),
    "dense": ("0.5", "_"),
    "interleave": ("C0", "o"),
    "cycle": ("C1", "^"),
    "replicate_last": ("C2", "v"),
    "keep_first": ("C1", "^"),
    "keep_last": ("C2", "v"),
    "shuffle": ("C3", "x"),
    "random": ("C4", "d"),
}
METRICS = ("test_acc", "train_acc", "val_acc", "density", "start_step", "updates", "start_gap")


def _arm(
    rec: dict, margin: float, imp: dict | None, dense: dict | None, elastic: dict | None = None
) -> dict:
    """One arm's record over seeds: means, the per-seed values, and its paired test-accuracy
    differences to ``imp``, ``dense`` and (for the controls) the ``elastic`` ticket
    (records of the same seeds) with verdicts."""
    import numpy as np

    out = {k: rec[k] for k in METRICS}
    out["pct_remaining"] = float(100 * np.mean(rec["density"]))
    out["acc"], out["acc_std"] = harness.mean_std(rec["test_acc"])
    out["train"] = harness.mean_std(rec["train_acc"])[0]
    for name, ref in (("vs_imp", imp), ("vs_dense", dense), ("vs_elastic", elastic)):
        if ref is not None and ref is not rec:
            d = paired(rec["test_acc"], ref["test_acc"])
            out[name] = d.as_dict() | {"verdict": d.verdict(margin)}
    return out


def summarise(cfg: ElasticConfig, src_extra: dict, records: dict) -> dict:
    """Per depth (source and targets), per round, per arm; plus the CSV rows."""
    margin = cfg.margin / 100
    csv = []

    def add_csv(depth, role, r, arm, st):
        row = {"depth": depth, "role": role, "round": r, "arm": arm}
        row |= {k: st[k] for k in ("pct_remaining", "acc", "acc_std", "train")}
        for name in ("vs_imp", "vs_dense", "vs_elastic"):
            if name in st:
                row |= {f"{name}_{k}": st[name][k] for k in ("mean", "lo", "hi", "verdict")}
        csv.append(row)

    source_rounds = []
    for r, rec in enumerate(src_extra["rounds"]):
        st = _arm(rec, margin, None, None)
        source_rounds.append({"round": r, "arms": {"imp": st}})
        add_csv(cfg.source_blocks, "source", r, "imp", st)
    source = {"blocks": cfg.source_blocks, "arms": ["imp"], "rounds": source_rounds}

    targets = {}
    for n, rec in records.items():
        arms = arms_for(cfg.source_blocks, n)
        alias = dict(rec["aliases"])

        def get(arm, r, rec=rec, alias=alias):
            return rec["arms"][f"{alias.get(arm, arm)}@{r}"]

        dense = get("dense", 0)
        rows = [
            {
                "round": 0,
                "arms": {
                    "imp": _arm(get("imp", 0), margin, None, dense),
                    "dense": _arm(dense, margin, None, None),
                },
            }
        ]
        for r in range(1, cfg.rounds + 1):
            imp = get("imp", r)
            elastic = get("interleave", r)
            stats = {
                a: _arm(get(a, r), margin, imp, dense, elastic if a in CONTROLS else None)
                for a in arms
                if a != "dense"
            }
            rows.append({"round": r, "arms": stats})
        for row in rows:
            for a, st in row["arms"].items():
                add_csv(n, "target", row["round"], a, st)
        targets[str(n)] = {
            "blocks": n,
            "arms": list(arms),
            "aliases": alias,
            "calls": rec["calls"],
            "rounds": rows,
        }
    return {"source": source, "targets": targets, "csv": csv}


def _diff(st: dict, name: str) -> str:
    if name not in st:
        return "–"
    d = st[name]
    text = f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
    return f"{text} {d['verdict']}"


def table(cfg: ElasticConfig, summary: dict) -> str:
    """Markdown: one table per target depth, then the source depth."""
    parts = []
    head = [
        "round",
        "arm",
        "sparsity %",
        "updates",
        "train acc",
        "test acc",
        "− IMP here (pts)",
        "− dense here (pts)",
        "− elastic (pts)",
    ]
    for t in summary["targets"].values():
        n = t["blocks"]
        kind = "stretch" if n > cfg.source_blocks else "squeeze"
        rows = []
        for row in t["rounds"]:
            for arm, st in row["arms"].items():
                label = LABELS[arm] + (
                    f" (= {t['aliases'][arm]})" if t["aliases"].get(arm, arm) != arm else ""
                )
                rows.append(
                    [
                        row["round"],
                        label,
                        f"{100 - st['pct_remaining']:.1f}",
                        f"{min(st['updates'])}",
                        f"{100 * st['train']:.1f}",
                        harness.pm(st["test_acc"]),
                        _diff(st, "vs_imp"),
                        _diff(st, "vs_dense"),
                        _diff(st, "vs_elastic"),
                    ]
                )
        parts.append(
            f"**N = {n}** (ResNet-{6 * n + 2}, {kind} from N = {cfg.source_blocks}):\n\n"
            + harness.markdown_table(head, rows)
        )
    src = summary["source"]
    rows = [
        [
            row["round"],
            f"{100 - row['arms']['imp']['pct_remaining']:.1f}",
            f"{min(row['arms']['imp']['updates'])}",
            f"{100 * row['arms']['imp']['train']:.1f}",
            harness.pm(row["arms"]["imp"]["test_acc"]),
        ]
        for row in src["rounds"]
    ]
    parts.append(
        f"**source N = {src['blocks']}** (ResNet-{6 * src['blocks'] + 2}), IMP "
        "(round 0: the dense network from its initialisation):\n\n"
        + harness.markdown_table(["round", "sparsity %", "updates", "train acc", "test acc"], rows)
    )
    return "\n\n".join(parts)


def plot(cfg: ElasticConfig, summary: dict):
    """Per target depth: test accuracy of every arm at each IMP round (top), and each
    arm's paired difference to IMP there with its 95% interval (bottom); the dense
    network there as a dashed line."""
    plt = harness.pyplot()
    targets = list(summary["targets"].values())
    fig, axes = plt.subplots(
        2, len(targets), figsize=(4.6 * len(targets), 7.0), squeeze=False, sharex="col"
    )
    for col, t in enumerate(targets):
        top, bottom = axes[0][col], axes[1][col]
        pruned = t["rounds"][1:]
        dense = t["rounds"][0]["arms"]["dense"]
        top.axhline(100 * dense["acc"], color="0.5", ls="--", lw=1, label=LABELS["dense"])
        arms = [a for a in t["arms"] if a != "dense"]
        for k, arm in enumerate(arms):
            c, m = STYLES[arm]
            x = [row["round"] + 0.1 * (k - (len(arms) - 1) / 2) for row in pruned]
            y = [100 * row["arms"][arm]["acc"] for row in pruned]
            e = [100 * row["arms"][arm]["acc_std"] for row in pruned]
            top.errorbar(x, y, yerr=e, color=c, marker=m, ms=4, capsize=3, ls="none",
                         label=LABELS[arm])  # fmt: skip
            if arm == "imp":
                continue
            d = [row["arms"][arm]["vs_imp"] for row in pruned]
            mean = [100 * v["mean"] for v in d]
            err = [
                [100 * (v["mean"] - v["lo"]) for v in d],
                [100 * (v["hi"] - v["mean"]) for v in d],
            ]
            bottom.errorbar(x, mean, yerr=err, color=c, marker=m, ms=4, capsize=3, ls="none")
        ticks = [row["round"] for row in pruned]
        names = [f"{100 - row['arms']['imp']['pct_remaining']:.0f}% sparse (IMP)" for row in pruned]
        bottom.set_xticks(ticks, names)
        bottom.set_xlim(min(ticks) - 0.6, max(ticks) + 0.6)
        bottom.axhline(0, color="k", lw=0.8)
        bottom.axhline(-cfg.margin, color="k", ls=":", lw=0.8, label=f"−{cfg.margin:g} (margin)")
        bottom.set_ylabel("test acc. − IMP here (points, 95% CI)")
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=7, loc="lower left")
        top.set_ylabel("test accuracy (%), mean ± std")
        n = t["blocks"]
        kind = "stretch" if n > cfg.source_blocks else "squeeze"
        top.set_title(f"ResNet-{6 * n + 2} (N = {n}), {kind} from N = {cfg.source_blocks}")
        top.grid(alpha=0.3)
        top.legend(fontsize=6, loc="lower left")
    fig.suptitle(
        f"Elastic tickets, {cfg.seeds} paired seeds, {cfg.steps} updates every arm "
        f"(hash {cfg.digest()})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
