"""Reporting for the elastic study: early-stopping accuracy per depth, round and arm
over seeds, the training steps each ticket cost, the table and the plot."""

from __future__ import annotations

from experiments import harness
from experiments.elastic.config import SOURCE_ARMS, ElasticConfig

LABELS = {
    "imp": "IMP at this depth",
    "interleave": "elastic: interleave",
    "cycle": "elastic: cycle",
    "replicate_last": "elastic: replicate last",
    "keep_first": "elastic: keep first",
    "keep_last": "elastic: keep last",
    "shuffle": "interleave, masks shuffled",
    "random": "random pruning, fresh init",
}
STYLES = {
    "imp": ("k", "s"),
    "interleave": ("C0", "o"),
    "cycle": ("C1", "^"),
    "replicate_last": ("C2", "v"),
    "keep_first": ("C1", "^"),
    "keep_last": ("C2", "v"),
    "shuffle": ("C3", "x"),
    "random": ("C4", "d"),
}


def _stats(rec, a: int) -> dict:
    """Arm ``a`` of a round record: density and test accuracy at early stopping."""
    import numpy as np

    val, acc = np.asarray(rec["val_loss"])[a], np.asarray(rec["test_acc"])[a]
    es = np.argmin(val[:, 1:], axis=-1) + 1
    es_acc = np.take_along_axis(acc, es[:, None], axis=-1)[:, 0]
    m, s = harness.mean_std(es_acc)
    return {
        "pct_remaining": float(100 * np.mean(rec["density"][a])),
        "acc": m,
        "acc_std": s,
        "final_acc": harness.mean_std(acc[:, -1])[0],
        "per_seed": es_acc.tolist(),
    }


def summarise(cfg: ElasticConfig, src_extra: dict, records: dict) -> dict:
    """Per depth (source and targets), per round, per arm; plus the CSV rows."""
    csv = []

    def rows_of(depth, history, arms, role):
        rows = []
        for r, rec in enumerate(history):
            stats = {arm: _stats(rec, a) for a, arm in enumerate(arms)}
            rows.append({"round": r, "arms": stats})
            for arm, st in stats.items():
                flat = {k: v for k, v in st.items() if k != "per_seed"}
                csv.append({"depth": depth, "role": role, "round": r, "arm": arm, **flat})
        return rows

    source = {
        "blocks": cfg.source_blocks,
        "arms": list(SOURCE_ARMS),
        "rounds": rows_of(cfg.source_blocks, src_extra["rounds"], SOURCE_ARMS, "source"),
    }
    targets = {}
    for n, rec in records.items():
        rows = rows_of(n, rec["rounds"], rec["arms"], "target")
        for row in rows:
            r = row["round"]
            row["steps"] = {
                "imp_at_target": (r + 1) * cfg.steps,
                "elastic_at_target": cfg.steps,
                "elastic_one_off_at_source": r * cfg.steps,
            }
        elastic_arms = rec["arms"][1:-2]
        best = {
            row["round"]: max(elastic_arms, key=lambda a, row=row: row["arms"][a]["acc"])
            for row in rows
        }
        targets[str(n)] = {"blocks": n, "arms": rec["arms"], "rounds": rows, "best_strategy": best}
    return {"source": source, "targets": targets, "csv": csv}


def table(cfg: ElasticConfig, summary: dict) -> str:
    """Markdown: one table per target depth, then the source depth."""
    parts = []
    for t in summary["targets"].values():
        n = t["blocks"]
        kind = "stretch" if n > cfg.source_blocks else "squeeze"
        head = [
            "round",
            "sparsity % (IMP / elastic)",
            *(LABELS[a] for a in t["arms"]),
            "steps at target: IMP / elastic",
        ]
        rows = []
        for row in t["rounds"]:
            a = row["arms"]
            rows.append(
                [
                    row["round"],
                    f"{100 - a['imp']['pct_remaining']:.1f} / "
                    f"{100 - a['interleave']['pct_remaining']:.1f}",
                ]
                + [harness.pm(a[arm]["per_seed"]) for arm in t["arms"]]
                + [f"{row['steps']['imp_at_target']} / {row['steps']['elastic_at_target']}"]
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
            harness.pm(row["arms"]["imp"]["per_seed"]),
            harness.pm(row["arms"]["random"]["per_seed"]),
        ]
        for row in src["rounds"]
    ]
    parts.append(
        f"**source N = {src['blocks']}** (ResNet-{6 * src['blocks'] + 2}):\n\n"
        + harness.markdown_table(["round", "sparsity %", LABELS["imp"], LABELS["random"]], rows)
    )
    return "\n\n".join(parts)


def plot(cfg: ElasticConfig, summary: dict):
    """Accuracy against % of block weights remaining, one panel per depth."""
    plt = harness.pyplot()
    panels = [(f"N = {summary['source']['blocks']} (source)", summary["source"])]
    panels += [(f"N = {t['blocks']} (target)", t) for t in summary["targets"].values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (title, t) in zip(axes[0], panels):
        lows = []
        for arm in t["arms"]:
            x = [row["arms"][arm]["pct_remaining"] for row in t["rounds"]]
            y = [100 * row["arms"][arm]["acc"] for row in t["rounds"]]
            e = [100 * row["arms"][arm]["acc_std"] for row in t["rounds"]]
            c, m = STYLES[arm]
            ax.errorbar(x, y, yerr=e, color=c, marker=m, ms=4, capsize=3, label=LABELS[arm])
            lows.append(min(x))
        ax.set_xscale("log")
        ax.set_xlim(115, min(lows) * 0.85)
        ticks = [v for v in (100, 60, 36, 21.6, 13, 7.8) if v >= min(lows) * 0.9]
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.minorticks_off()
        ax.set_xlabel("% of block weights remaining")
        ax.set_title(f"{title}, ResNet-{6 * t['blocks'] + 2}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel("test accuracy at early stop (%)")
    fig.suptitle(
        f"Elastic tickets from N = {cfg.source_blocks}, {cfg.seeds} seeds (hash {cfg.digest()})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
