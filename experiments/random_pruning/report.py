"""Reporting for the random-pruning study: the tables, the CSV and the figure, from the
paired comparisons of :mod:`experiments.random_pruning.compare`."""

from __future__ import annotations

from experiments import harness
from experiments.random_pruning.compare import arm_label, comparisons, find
from experiments.random_pruning.config import floats

COLORS = {"uniform": "C0", "uniform_plus": "C1", "er": "C2", "erk": "C3", "snip": "C4"}


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
                        harness.pm(find(sel, r["rule"], r["sparsity"], r["init"])["test"]),
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
