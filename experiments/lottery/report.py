"""Reporting for the lottery-ticket study: summaries over seeds, paired differences
between the arms, the claims' verdicts, the table, the CSV and the plot (accuracy and
early-stop iteration against % of weights remaining)."""

from __future__ import annotations

from experiments import harness, stats
from experiments.lottery.config import LotteryConfig

ARMS = ("ticket", "reinit", "reprune")
ARM_LABELS = {
    "ticket": "winning ticket",
    "reinit": "random reinit",
    "reprune": "random reprune",
}
BEST_RULE = (
    "the sparsest round whose winning ticket's mean early-stop *validation* accuracy is "
    "within {tol} points of the dense network's (round 0; test accuracy plays no part); "
    "seed 0's mask and rewound weights"
)


def summarise(history: list[dict], cfg: LotteryConfig) -> list[dict]:
    """Per round and arm: % remaining and early-stop / final accuracy over seeds."""
    import numpy as np

    rows = []
    for rec in history:
        val = np.asarray(rec["val_loss"])  # (seeds, arms, evals)
        acc = np.asarray(rec["test_acc"])
        val_acc = np.asarray(rec["val_acc"])
        # index 0 is the evaluation before training; early stopping picks among the rest
        es = np.argmin(val[..., 1:], axis=-1) + 1
        es_acc = np.take_along_axis(acc, es[..., None], axis=-1)[..., 0]
        es_val_acc = np.take_along_axis(val_acc, es[..., None], axis=-1)[..., 0]
        # runs from before training accuracy was recorded have none
        train = np.asarray(rec.get("train_acc", np.full(acc.shape, np.nan)))
        es_train_acc = np.take_along_axis(train, es[..., None], axis=-1)[..., 0]
        ddof = 1 if val.shape[0] > 1 else 0
        row = {"round": rec["round"], "layer_alive": rec["layer_alive"], "arms": {}}
        for a, arm in enumerate(ARMS):
            dens = np.asarray(rec["density"])[:, a]
            iters = es[:, a] * cfg.eval_every
            row["arms"][arm] = {
                "pct_remaining": float(100 * dens.mean()),
                "early_stop_acc": float(es_acc[:, a].mean()),
                "early_stop_acc_std": float(es_acc[:, a].std(ddof=ddof)),
                "early_stop_val_acc": float(es_val_acc[:, a].mean()),
                "early_stop_train_acc": float(es_train_acc[:, a].mean()),
                # every arm of a round trains in one vmapped program: the same steps
                "steps": int((acc.shape[-1] - 1) * cfg.eval_every),
                "early_stop_iter": float(iters.mean()),
                "early_stop_iter_std": float(iters.std(ddof=ddof)),
                "final_acc": float(acc[:, a, -1].mean()),
                "final_acc_std": float(acc[:, a, -1].std(ddof=ddof)),
                "per_seed": {
                    "early_stop_acc": es_acc[:, a].tolist(),
                    "early_stop_iter": iters.tolist(),
                    "early_stop_train_acc": es_train_acc[:, a].tolist(),
                    "final_acc": acc[:, a, -1].tolist(),
                },
            }
        rows.append(row)
    return rows


# (name, arm A, arm B, key): paired by seed, A − B; "dense" is round 0's ticket
COMPARISONS = (
    ("ticket - dense", "ticket", "dense", "early_stop_acc"),
    ("ticket - reinit", "ticket", "reinit", "early_stop_acc"),
    ("ticket - reprune", "ticket", "reprune", "early_stop_acc"),
    ("ES iter, ticket - reinit", "ticket", "reinit", "early_stop_iter"),
)


def add_paired(rows: list[dict], margin_points: float) -> list[dict]:
    """Adds ``row["paired"]``: each of :data:`COMPARISONS` as a paired difference over
    seeds (:func:`experiments.stats.paired`, 95% interval) with its verdict against a
    margin of ``margin_points`` accuracy points (``earlier``/``later``/``unresolved``
    for the early-stop iteration)."""
    dense = rows[0]["arms"]["ticket"]["per_seed"]
    for row in rows:
        per_seed = {arm: v["per_seed"] for arm, v in row["arms"].items()}
        per_seed["dense"] = dense
        row["paired"] = {}
        for name, a, b, key in COMPARISONS:
            d = stats.paired(per_seed[a][key], per_seed[b][key])
            if key == "early_stop_iter":
                verdict = "earlier" if d.hi < 0 else "later" if d.lo > 0 else "unresolved"
            else:
                verdict = d.verdict(margin_points / 100)
            row["paired"][name] = {**d.as_dict(), "verdict": verdict}
    return rows


def claims(rows: list[dict], margin_points: float) -> dict:
    """The paper's three claims read from the paired differences (:func:`add_paired`):
    the sparsest ticket that still matches dense (every denser round matching too), the
    rounds where the ticket beats random reinitialisation, and those where it stops
    earlier."""

    def pct(r):
        return round(r["arms"]["ticket"]["pct_remaining"], 1)

    matching = []
    for r in rows:
        if r["paired"]["ticket - dense"]["verdict"] not in ("better", "matches"):
            break
        matching.append(pct(r))
    return {
        "margin_points": margin_points,
        "matches_dense_down_to_pct": matching[-1] if matching else None,
        "beats_reinit_at_pct": [
            pct(r) for r in rows[1:] if r["paired"]["ticket - reinit"]["verdict"] == "better"
        ],
        "beats_reprune_at_pct": [
            pct(r) for r in rows[1:] if r["paired"]["ticket - reprune"]["verdict"] == "better"
        ],
        "stops_earlier_than_reinit_at_pct": [
            pct(r)
            for r in rows[1:]
            if r["paired"]["ES iter, ticket - reinit"]["verdict"] == "earlier"
        ],
    }


def paired_table(rows: list[dict]) -> str:
    """A markdown table: per round the ticket's accuracy (test and train, at early
    stopping) and its paired differences against dense and the controls, with 95%
    intervals."""
    head = ["round", "% weights", "ticket ES acc %", "ticket train %"]
    head += [name + (" (iters)" if "iter" in name else " (points)") for name, *_ in COMPARISONS]
    body = []
    for r in rows:
        t = r["arms"]["ticket"]
        cells = [str(r["round"]), f"{t['pct_remaining']:.1f}"]
        cells += [harness.pm(t["per_seed"]["early_stop_acc"])]
        cells += [harness.pm(t["per_seed"]["early_stop_train_acc"])]
        for name, _, _, key in COMPARISONS:
            d = stats.Paired(**{k: v for k, v in r["paired"][name].items() if k != "verdict"})
            scale, digits = (1, 0) if key == "early_stop_iter" else (100, 1)
            cells.append(f"{d.format(scale, digits)} {r['paired'][name]['verdict']}")
        body.append(cells)
    return harness.markdown_table(head, body)


def best_round(rows: list[dict], tol_points: float) -> int:
    """The round :data:`BEST_RULE` picks: chosen on validation accuracy, never on test."""
    dense = rows[0]["arms"]["ticket"]["early_stop_val_acc"]
    ok = [
        r["round"]
        for r in rows
        if r["arms"]["ticket"]["early_stop_val_acc"] >= dense - tol_points / 100
    ]
    return max(ok)


def table(rows: list[dict], cfg: LotteryConfig) -> str:
    """A markdown table: one row per round, the three arms side by side (mean ± std)."""

    def pm(m, s, scale=100, fmt="{:.1f}"):
        return f"{fmt.format(m * scale)} ± {fmt.format(s * scale)}"

    head = ["round", "% weights"]
    for arm in ARMS:
        head += [f"{arm} ES acc %", f"{arm} ES iter", f"{arm} final %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["round"]), f"{r['arms']['ticket']['pct_remaining']:.1f}"]
        for arm in ARMS:
            a = r["arms"][arm]
            cells += [
                pm(a["early_stop_acc"], a["early_stop_acc_std"]),
                pm(a["early_stop_iter"], a["early_stop_iter_std"], 1, "{:.0f}"),
                pm(a["final_acc"], a["final_acc_std"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_rows(rows: list[dict]) -> list[dict]:
    """One CSV row per round and arm."""
    keys = [
        "pct_remaining",
        "early_stop_acc",
        "early_stop_acc_std",
        "early_stop_iter",
        "early_stop_iter_std",
        "early_stop_train_acc",
        "final_acc",
        "final_acc_std",
    ]
    return [
        {"round": r["round"], "arm": arm, **{k: r["arms"][arm][k] for k in keys}}
        for r in rows
        for arm in ARMS
    ]


def plot(rows: list[dict], title: str):
    """Early-stop accuracy and iteration against % of weights remaining (the figure)."""
    plt = harness.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ticket": ("C0", "o"), "reinit": ("C3", "s"), "reprune": ("C2", "^")}
    for arm in ARMS:
        x = [r["arms"][arm]["pct_remaining"] for r in rows]
        color, marker = styles[arm]
        for ax, key, scale in ((ax1, "early_stop_acc", 100), (ax2, "early_stop_iter", 1)):
            y = [r["arms"][arm][key] * scale for r in rows]
            e = [r["arms"][arm][key + "_std"] * scale for r in rows]
            ax.errorbar(
                x, y, yerr=e, color=color, marker=marker, ms=4, capsize=3, label=ARM_LABELS[arm]
            )
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        lowest = min(r["arms"]["ticket"]["pct_remaining"] for r in rows)
        ticks = [t for t in (100, 51.3, 21.1, 7.0, 3.6, 1.9) if t >= lowest * 0.9]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlim(110, lowest * 0.85)  # reversed: 100% on the left, as in the paper
        ax.set_xlabel("% of weights remaining")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("test accuracy at early stop (%)")
    ax2.set_ylabel("early-stop iteration (min. val. loss)")
    ax1.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
