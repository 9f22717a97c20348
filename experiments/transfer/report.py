"""Reporting for the transfer study: early-stopping accuracy per arm over seeds, where
the transferred ticket stops matching dense, the compute it saves, the table and plot."""

from __future__ import annotations

from experiments import harness
from experiments.transfer.config import TransferConfig

# slot order in the compiled program: (c) first, it is the state IMP carries on
ARMS = ("imp", "transfer", "oneshot", "random", "reinit")
LABELS = {
    "dense": "(a) dense, fine-tuned",
    "transfer": "(b) transferred ticket",
    "imp": "(c) IMP on the task",
    "oneshot": "(d) one-shot magnitude",
    "random": "(e) random mask, same layer densities",
    "reinit": "(f) ticket mask, random init",
}
TABLE_ORDER = ("transfer", "imp", "oneshot", "random", "reinit")


def _early_stop(rec) -> tuple:
    """Per seed (leading axes kept): test accuracy at the minimum validation loss among
    the evaluations after training started, and the final test accuracy."""
    import numpy as np

    val, acc = np.asarray(rec["val_loss"]), np.asarray(rec["test_acc"])
    es = np.argmin(val[..., 1:], axis=-1) + 1
    return np.take_along_axis(acc, es[..., None], axis=-1)[..., 0], acc[..., -1]


def _stats(acc, final, density) -> dict:
    m, s = harness.mean_std(acc)
    return {
        "pct_remaining": float(100 * sum(density) / len(density)),
        "acc": m,
        "acc_std": s,
        "final_acc": harness.mean_std(final)[0],
        "per_seed": [float(a) for a in acc],
    }


def summarise(cfg: TransferConfig, src_extra: dict, tasks: dict[str, list]) -> dict:
    """Summaries of the source rounds and of every task's rounds and arms."""
    import numpy as np

    source = []
    for r, rec in enumerate(src_extra["rounds"]):
        acc, final = _early_stop(rec)
        source.append({"round": r, **_stats(acc, final, rec["density"])})
    pre_acc, pre_final = _early_stop(src_extra["pretrain"])
    pretrain = _stats(pre_acc, pre_final, [1.0] * len(pre_acc))

    out_tasks, csv = {}, []
    for name, rounds in tasks.items():
        rows = []
        for r, rec in enumerate(rounds):
            acc, final = _early_stop(rec)
            dens = np.asarray(rec["density"])
            arms = {a: _stats(acc[i], final[i], dens[i]) for i, a in enumerate(ARMS)}
            rows.append({"round": r, "arms": arms})
            for a, st in arms.items():
                csv.append(
                    {
                        "task": name,
                        "round": r,
                        "arm": a,
                        **{k: v for k, v in st.items() if k != "per_seed"},
                    }
                )
        dense = rows[0]["arms"]["imp"]
        bar = dense["acc"] - dense["acc_std"]
        matching = [r["round"] for r in rows[1:] if r["arms"]["transfer"]["acc"] >= bar]
        up_to = 0
        while up_to + 1 in matching:
            up_to += 1
        sparsity = 100 - rows[up_to]["arms"]["transfer"]["pct_remaining"] if up_to else 0.0
        compute = [
            {
                "round": r["round"],
                "sparsity_pct": 100 - r["arms"]["transfer"]["pct_remaining"],
                "downstream_steps_transfer": cfg.steps,
                "downstream_steps_imp": (r["round"] + 1) * cfg.steps,
                "saved_steps_per_task": r["round"] * cfg.steps,
                "one_off_source_steps": r["round"] * cfg.steps,
            }
            for r in rows[1:]
        ]
        out_tasks[name] = {
            "dense": dense,
            "scratch_dense": rows[0]["arms"]["reinit"],
            "rounds": rows,
            "match_rule": "(b)'s mean >= (a)'s mean - (a)'s sample std over seeds",
            "matching_rounds": matching,
            "matches_dense_up_to_round": up_to,
            "matches_dense_up_to_sparsity_pct": sparsity,
            "compute": compute,
        }
    return {"pretrain": pretrain, "source": source, "tasks": out_tasks, "csv": csv}


def table(cfg: TransferConfig, summary: dict) -> str:
    """Markdown: a table per task (one row per round) and the source rounds."""
    parts = []
    for name, t in summary["tasks"].items():
        d = t["dense"]
        head = ["round", "sparsity %", *(LABELS[a] for a in TABLE_ORDER), "steps (c) / (b)"]
        rows = []
        for r in t["rounds"][1:]:
            arms = r["arms"]
            rows.append(
                [r["round"], f"{100 - arms['transfer']['pct_remaining']:.1f}"]
                + [harness.pm([*arms[a]["per_seed"]]) for a in TABLE_ORDER]
                + [f"{(r['round'] + 1) * cfg.steps} / {cfg.steps}"]
            )
        up = t["matches_dense_up_to_sparsity_pct"]
        parts.append(
            f"**{name}**: (a) dense pre-trained, fine-tuned: {harness.pm(d['per_seed'])}; "
            f"dense from a random init: {harness.pm(t['scratch_dense']['per_seed'])}. "
            f"The transferred ticket matches dense (within one seed-std) up to "
            f"**{up:.1f}% sparsity** (round {t['matches_dense_up_to_round']}); matching "
            f"rounds: {t['matching_rounds']}.\n\n" + harness.markdown_table(head, rows)
        )
    src_rows = [
        [s["round"], f"{100 - s['pct_remaining']:.1f}", harness.pm(s["per_seed"])]
        for s in summary["source"]
    ]
    parts.append(
        f"**source (mnist0-4)**: pre-trained dense {harness.pm(summary['pretrain']['per_seed'])}; "
        "the IMP ticket of each round trained on the source:\n\n"
        + harness.markdown_table(["round", "sparsity %", "source acc %"], src_rows)
    )
    return "\n\n".join(parts)


def plot(cfg: TransferConfig, summary: dict):
    """Accuracy against % of backbone weights remaining, one panel per task."""
    plt = harness.pyplot()
    names = list(summary["tasks"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    styles = {
        "transfer": ("C0", "o"),
        "imp": ("C1", "s"),
        "oneshot": ("C2", "^"),
        "random": ("C3", "v"),
        "reinit": ("C4", "x"),
    }
    for ax, name in zip(axes[0], names):
        t = summary["tasks"][name]
        rows = t["rounds"][1:]
        d = t["dense"]
        ax.axhspan(
            100 * (d["acc"] - d["acc_std"]),
            100 * (d["acc"] + d["acc_std"]),
            color="0.8",
            alpha=0.6,
            label=LABELS["dense"] + " ± std",
        )
        ax.axhline(100 * d["acc"], color="0.4", lw=1)
        for arm in TABLE_ORDER:
            x = [r["arms"][arm]["pct_remaining"] for r in rows]
            y = [100 * r["arms"][arm]["acc"] for r in rows]
            e = [100 * r["arms"][arm]["acc_std"] for r in rows]
            c, m = styles[arm]
            ax.errorbar(x, y, yerr=e, color=c, marker=m, ms=4, capsize=3, label=LABELS[arm])
        ax.set_xscale("log")
        ax.set_xlim(110, min(x) * 0.85)
        ticks = [v for v in (100, 51.2, 32.8, 21.0, 10.7, 5.5) if v >= min(x) * 0.9]
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.minorticks_off()
        ax.set_xlabel("% of backbone weights remaining")
        ax.set_ylabel("test accuracy at early stop (%)")
        ax.set_title(f"MNIST 0-4 -> {name}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Transferred pre-trained tickets, LeNet-300-100, {cfg.seeds} seeds (hash {cfg.digest()})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
