"""Reporting for the transfer study: each arm at its validation-chosen learning rate,
the premise check (does pre-training help the target at all?), paired differences with
95% intervals and their verdicts, the table, the CSV rows and the figure."""

from __future__ import annotations

from experiments import harness
from experiments.stats import paired
from experiments.transfer.config import LABELS, SPARSE_ARMS, TransferConfig

# the ticket against each control: (claim, margin used) -- see docs/studies/transfer.md
VERSUS = {
    "imp": "matches",  # (b) matches IMP run on the target itself
    "oneshot": "beats",  # (b) beats one-shot magnitude pruning of the pre-trained weights
    "random": "beats",  # (b) beats a random mask of its layer densities
    "reinit": "beats",  # (b) beats its own mask from a random init
}
UNTESTABLE = "untestable (premise failed)"


def _choose(rec: dict, i: int, lrs: list[float]) -> dict:
    """Slot ``i`` at the learning rate with the highest mean validation accuracy."""
    import numpy as np

    val = np.asarray(rec["val_acc"][i])  # (lr, seed)
    best = int(np.argmax(val.mean(axis=1)))
    return {
        "lr": lrs[best],
        "val_acc_by_lr": [float(v) for v in val.mean(axis=1)],
        "test": [float(a) for a in rec["test_acc"][i][best]],
        "train": [float(a) for a in rec["train_acc"][i][best]],
        "val": [float(a) for a in val[best]],
        "updates": sorted({int(u) for row in rec["updates"][i] for u in row}),
    }


def _claim(p, margin: float, kind: str, premise: bool) -> str:
    if not premise:
        return UNTESTABLE
    return p.verdict(margin if kind == "matches" else 0.0)


def summarise(cfg: TransferConfig, order: list, src_extra: dict, tasks: dict) -> dict:
    """Every slot at its chosen learning rate; per task the premise, the paired
    differences against dense fine-tuning and the ticket's against each control."""
    import numpy as np

    lrs, m = cfg.lr_list(), cfg.margin / 100
    pre = np.asarray(src_extra["pretrain"]["test_acc"])[:, -1]
    source = {
        "pretrained_test_acc": [float(a) for a in pre],
        "rounds": [
            {
                "round": r,  # prunes before this training (0: the dense model)
                "pct_remaining": 100 * float(np.asarray(ev["density"])[0]),
                "test_acc_trained": [float(a) for a in np.asarray(ev["test_acc"])[:, -1]],
            }
            for r, ev in enumerate(src_extra["rounds"])
        ],
    }
    out, csv = {}, []
    for name, rec in tasks.items():
        ev = rec["eval"]
        arms = {}
        for i, (arm, r) in enumerate(order):
            check = rec["start_checks"][f"{arm}@{r}"]
            arms[f"{arm}@{r}"] = {
                "arm": arm,
                "round": r,
                "sparsity_pct": 100 * (1 - check["density"]),
                **_choose(ev, i, lrs),
            }
        dense, scratch = arms["dense@0"], arms["scratch@0"]
        p = paired(dense["test"], scratch["test"])
        holds = bool(p.lo > cfg.premise_gain / 100)
        premise = {
            "claim": f"dense fine-tuned beats dense from scratch by > {cfg.premise_gain} points "
            "(95% interval of the paired difference above it)",
            "diff": p.as_dict(),
            "formatted": p.format(scale=100),
            "holds": holds,
        }
        versus_dense, versus, matching = {}, {}, []
        for key, a in arms.items():
            if a["arm"] == "dense":
                continue
            d = paired(a["test"], dense["test"])
            verdict = d.verdict(m)
            if a["arm"] == "transfer" and not holds:
                verdict = UNTESTABLE
            versus_dense[key] = {
                "diff": d.as_dict(),
                "formatted": d.format(100),
                "verdict": verdict,
            }
        for r in cfg.round_list():
            b = arms[f"transfer@{r}"]["test"]
            versus[r] = {}
            for other, kind in VERSUS.items():
                d = paired(b, arms[f"{other}@{r}"]["test"])
                versus[r][other] = {
                    "claim": f"(b) {kind} {LABELS[other]}",
                    "diff": d.as_dict(),
                    "formatted": d.format(100),
                    "verdict": _claim(d, m, kind, holds),
                }
            if paired(b, dense["test"]).verdict(m) in ("matches", "better"):
                matching.append(r)
        up_to = 0
        for r in cfg.round_list():
            if r not in matching:
                break
            up_to = r
        up_pct = arms[f"transfer@{up_to}"]["sparsity_pct"] if up_to else 0.0
        out[name] = {
            "premise": premise,
            "arms": arms,
            "versus_dense": versus_dense,
            "ticket_versus": {str(r): v for r, v in versus.items()},
            "match_rule": f"95% interval of (b) - (a) above -{cfg.margin} points",
            "matching_rounds": matching,
            "matches_dense_up_to_round": up_to if holds else None,
            "matches_dense_up_to_sparsity_pct": up_pct if holds else None,
            "search_steps_on_target": {str(r): r * cfg.steps for r in cfg.round_list()},
        }
        for key, a in arms.items():
            vd = versus_dense.get(key)
            csv.append(
                {
                    "task": name,
                    "arm": a["arm"],
                    "round": a["round"],
                    "sparsity_pct": a["sparsity_pct"],
                    "lr": a["lr"],
                    "updates": a["updates"][0],
                    "train_acc": float(np.mean(a["train"])),
                    "test_acc": float(np.mean(a["test"])),
                    "minus_dense": vd["diff"]["mean"] if vd else 0.0,
                    "minus_dense_lo": vd["diff"]["lo"] if vd else 0.0,
                    "minus_dense_hi": vd["diff"]["hi"] if vd else 0.0,
                    "verdict_vs_dense": vd["verdict"] if vd else "",
                }
            )
    return {"source": source, "tasks": out, "csv": csv}


def _pct(xs) -> str:
    import numpy as np

    return f"{100 * float(np.mean(xs)):.1f}"


def table(cfg: TransferConfig, summary: dict) -> str:
    """Markdown: per task the premise, a table of every arm against dense fine-tuning and
    a table of the transferred ticket against each control; then the source."""
    parts = []
    for name, t in summary["tasks"].items():
        pr, arms = t["premise"], t["arms"]
        state = "holds" if pr["holds"] else "FAILS: the transfer verdicts are untestable"
        head = f"**target {name}** — premise: (a) dense fine-tuned − dense from scratch = "
        head += f"{pr['formatted']} points ({state}; needed above +{cfg.premise_gain:g})."
        if pr["holds"]:
            up = t["matches_dense_up_to_sparsity_pct"]
            head += (
                f" The transferred ticket matches dense fine-tuning (interval above "
                f"−{cfg.margin:g}) up to **{up:.1f}% sparsity**; matching rounds: "
                f"{t['matching_rounds']}."
            )
        rows = []
        for key, a in arms.items():
            vd = t["versus_dense"].get(key)
            rows.append(
                [
                    LABELS[a["arm"]],
                    a["round"],
                    f"{a['sparsity_pct']:.1f}",
                    f"{a['lr']:g}",
                    _pct(a["train"]),
                    harness.pm(a["test"]),
                    vd["formatted"] if vd else "—",
                    vd["verdict"] if vd else "—",
                ]
            )
        arm_table = harness.markdown_table(
            ["arm", "round", "sparsity %", "lr", "train %", "test %", "− (a) [95% CI]",
             "verdict"],
            rows,
        )  # fmt: skip
        vrows = []
        for r, v in t["ticket_versus"].items():
            sp = arms[f"transfer@{r}"]["sparsity_pct"]
            vrows.append(
                [r, f"{sp:.1f}"] + [f"{v[o]['formatted']} {v[o]['verdict']}" for o in VERSUS]
            )
        vs_table = harness.markdown_table(
            ["round", "sparsity %", *(f"(b) − {LABELS[o]}" for o in VERSUS)], vrows
        )
        parts.append(f"{head}\n\n{arm_table}\n\nThe transferred ticket (b) against the controls "
                     f"(points, 95% CI, verdict):\n\n{vs_table}")  # fmt: skip
    src = summary["source"]
    src_rows = [
        [s["round"], f"{100 - s['pct_remaining']:.1f}", harness.pm(s["test_acc_trained"])]
        for s in src["rounds"]
    ]
    parts.append(
        f"**source (MNIST-1D standard)**: pre-trained dense "
        f"{harness.pm(src['pretrained_test_acc'])}; the IMP ticket of each round, trained on "
        "the source:\n\n"
        + harness.markdown_table(["round", "sparsity %", "source test %"], src_rows)
    )
    return "\n\n".join(parts)


def plot(cfg: TransferConfig, summary: dict):
    """Per task: each sparse arm minus dense fine-tuning (points, 95% interval) against
    the % of backbone weights remaining, with the margin and the premise in the title."""
    plt = harness.pyplot()
    names = list(summary["tasks"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.8 * len(names), 4.4), squeeze=False)
    styles = {
        "transfer": ("C0", "o"),
        "imp": ("C1", "s"),
        "oneshot": ("C2", "^"),
        "random": ("C3", "v"),
        "reinit": ("C4", "x"),
    }
    for ax, name in zip(axes[0], names):
        t = summary["tasks"][name]
        vd = t["versus_dense"]
        for k, arm in enumerate(SPARSE_ARMS):
            keys = [f"{arm}@{r}" for r in cfg.round_list()]
            x = [(100 - t["arms"][k_]["sparsity_pct"]) * (1.0 + 0.012 * (k - 2)) for k_ in keys]
            d = [vd[k_]["diff"] for k_ in keys]
            y = [100 * e["mean"] for e in d]
            err = [
                [100 * (e["mean"] - e["lo"]) for e in d],
                [100 * (e["hi"] - e["mean"]) for e in d],
            ]
            c, mk = styles[arm]
            ax.errorbar(x, y, yerr=err, color=c, marker=mk, ms=4, capsize=3, label=LABELS[arm])
        sc = vd["scratch@0"]["diff"]
        ax.axhline(0.0, color="0.3", lw=1, label=LABELS["dense"])
        ax.axhline(-cfg.margin, color="0.3", lw=1, ls="--", label=f"−{cfg.margin:g} margin")
        ax.axhline(100 * sc["mean"], color="C7", lw=1, ls=":", label=LABELS["scratch"])
        ax.set_xscale("log")
        ticks = [100 - t["arms"][f"transfer@{r}"]["sparsity_pct"] for r in cfg.round_list()]
        ax.set_xticks(ticks, [f"{v:.1f}" for v in ticks])
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set_xlabel("% of backbone weights remaining")
        ax.set_ylabel("test accuracy − (a) dense fine-tuned (points)")
        pr = t["premise"]
        ax.set_title(
            f"standard → {name}; premise {pr['formatted']} ({'holds' if pr['holds'] else 'fails'})",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Transferred tickets on MNIST-1D, 1-D CNN, {cfg.seeds} paired seeds, 95% intervals "
        f"(hash {cfg.digest()})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
