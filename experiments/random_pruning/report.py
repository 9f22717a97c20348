"""Reporting for the random-pruning study: summaries over seeds, the three claims
checked against the numbers, the tables, the CSV and the two plots."""

from __future__ import annotations

from experiments import harness

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


def net_label(rec: dict) -> str:
    return f"MLP, {rec['depth']} hidden" if rec["family"] == "mlp" else "conv net"


def summarise(records: list[dict]) -> list[dict]:
    """One row per network and arm: accuracy and the paired gap to dense over seeds."""
    import numpy as np

    rows = []
    for rec in records:
        acc = np.asarray(rec["test_acc"], np.float64)  # (arms, seeds)
        dense = acc[0]
        for a, (rule, s) in enumerate(rec["arms"]):
            m, sd = harness.mean_std(acc[a])
            g, gsd = harness.mean_std(dense - acc[a])
            row = {
                "network": net_label(rec),
                "family": rec["family"],
                "depth": rec["depth"],
                "width": rec["width"],
                "rule": rule,
                "sparsity": s,
                "alive": float(np.mean(rec["alive"][a])),
                "kernel_weights": rec["n_kernel"],
                "test_acc": m,
                "test_acc_std": sd,
                "gap": g,
                "gap_std": gsd,
            }
            if rule == "small":
                row["small_size"] = rec["small"].get(str(s))
            rows.append(row)
    return rows


def claims(rows: list[dict]) -> dict:
    """The paper's three claims, each reduced to counts over the grid."""
    import numpy as np

    sparse = [r for r in rows if r["rule"] not in ("dense", "small")]
    nets = sorted({r["network"] for r in rows})
    out = {"gap_closes": [], "ratio_spread": [], "sparse_vs_small": []}
    for net in nets:
        for s in sorted({r["sparsity"] for r in sparse}):
            here = [r for r in sparse if r["network"] == net and r["sparsity"] == s]
            widths = sorted({r["width"] for r in here})
            for rule in sorted({r["rule"] for r in here}):
                by_w = {r["width"]: r["gap"] for r in here if r["rule"] == rule}
                if len(by_w) > 1:  # a rule may be infeasible at some widths (uniform+)
                    lo, hi = min(by_w), max(by_w)
                    out["gap_closes"].append(
                        {
                            "network": net,
                            "sparsity": s,
                            "rule": rule,
                            "widths": [lo, hi],
                            "gap_narrowest": by_w[lo],
                            "gap_widest": by_w[hi],
                        }
                    )
            for w in widths:
                at = [r for r in here if r["width"] == w]
                accs = [r["test_acc"] for r in at]
                small = next(
                    r
                    for r in rows
                    if r["network"] == net
                    and r["rule"] == "small"
                    and r["sparsity"] == s
                    and r["width"] == w
                )
                best = max(at, key=lambda r: r["test_acc"])
                erk = next((r for r in at if r["rule"] == "erk"), best)
                out["ratio_spread"].append(
                    {
                        "network": net,
                        "sparsity": s,
                        "width": w,
                        "spread": max(accs) - min(accs),
                        "seed_std": float(np.mean([r["test_acc_std"] for r in at])),
                        "best": best["rule"],
                        "worst": min(at, key=lambda r: r["test_acc"])["rule"],
                    }
                )
                out["sparse_vs_small"].append(
                    {
                        "network": net,
                        "sparsity": s,
                        "width": w,
                        "erk_minus_small": erk["test_acc"] - small["test_acc"],
                        "best_minus_small": best["test_acc"] - small["test_acc"],
                        "small_std": small["test_acc_std"],
                        "erk_std": erk["test_acc_std"],
                    }
                )
    gc = out["gap_closes"]
    sv = out["sparse_vs_small"]
    rs = out["ratio_spread"]
    out["summary"] = {
        "gap_closes": f"{sum(c['gap_widest'] < c['gap_narrowest'] for c in gc)} of {len(gc)} "
        "(network, sparsity, rule) lines have a smaller gap to dense at the widest width "
        "than at the narrowest",
        "ratios_matter": f"spread of mean accuracy across rules at one (network, width, "
        f"sparsity): median {100 * np.median([r['spread'] for r in rs]):.1f} points, max "
        f"{100 * max(r['spread'] for r in rs):.1f}; mean seed std "
        f"{100 * np.mean([r['seed_std'] for r in rs]):.1f} points",
        "sparse_beats_small": f"ERK sparse-wide beats the small dense net in "
        f"{sum(c['erk_minus_small'] > 0 for c in sv)} of {len(sv)} (network, width, "
        f"sparsity) cells (median margin {100 * np.median([c['erk_minus_small'] for c in sv]):+.1f}"
        " points)",
    }
    return out


def table(rows: list[dict], rules: list[str]) -> str:
    """One markdown table per sparsity: networks x widths, every arm's accuracy."""
    parts = []
    for s in sorted({r["sparsity"] for r in rows if r["rule"] != "dense"}):
        head = ["network", "width", "alive: sparse / small", "dense %"]
        head += [f"{LABELS[r]} %" for r in rules] + ["small dense %", "small (c, h)"]
        body = []
        keys = sorted({(r["network"], r["width"]) for r in rows})
        for net, w in keys:
            at = {
                r["rule"]: r
                for r in rows
                if r["network"] == net and r["width"] == w and r["sparsity"] in (0.0, s)
            }
            small = at["small"]
            sparse = [r for k, r in at.items() if k not in ("dense", "small")]
            alive = sparse[0]["alive"] if sparse else float("nan")
            cells = [
                net,
                f"×{w:g}",
                f"{alive:.0f} / {small['alive']:.0f}",
                f"{100 * at['dense']['test_acc']:.1f} ± {100 * at['dense']['test_acc_std']:.1f}",
            ]
            for rule in rules:
                r = at.get(rule)
                cells.append(
                    f"{100 * r['test_acc']:.1f} ± {100 * r['test_acc_std']:.1f}" if r else "n/a"
                )
            cells.append(f"{100 * small['test_acc']:.1f} ± {100 * small['test_acc_std']:.1f}")
            size = small.get("small_size") or ["", ""]
            cells.append(f"({size[0]}, {size[1]})" if size[0] else f"(-, {size[1]})")
            body.append(cells)
        parts.append(f"**Sparsity {100 * s:g}%**\n\n" + harness.markdown_table(head, body))
    return "\n\n".join(parts)


def plot_gaps(rows: list[dict], title: str):
    plt = harness.pyplot()
    nets = sorted({r["network"] for r in rows}, key=lambda n: (n.startswith("conv"), n))
    sps = sorted({r["sparsity"] for r in rows if r["rule"] != "dense"})
    fig, axes = plt.subplots(
        len(nets),
        len(sps),
        figsize=(3.6 * len(sps), 2.8 * len(nets)),
        squeeze=False,
        sharex=True,
    )
    for i, net in enumerate(nets):
        for j, s in enumerate(sps):
            ax = axes[i][j]
            here = [r for r in rows if r["network"] == net and r["sparsity"] == s]
            for rule in [*COLORS, "small"]:
                pts = sorted((r["width"], r) for r in here if r["rule"] == rule)
                if not pts:
                    continue
                ax.errorbar(
                    [w for w, _ in pts],
                    [100 * r["gap"] for _, r in pts],
                    yerr=[100 * r["gap_std"] for _, r in pts],
                    marker="o",
                    ms=3,
                    capsize=2,
                    color=COLORS.get(rule, "k"),
                    ls="--" if rule == "small" else "-",
                    label=LABELS[rule],
                )
            ax.axhline(0, color="gray", lw=0.8)
            ax.set_xscale("log", base=2)
            ws = sorted({r["width"] for r in here})
            ax.set_xticks(ws, [f"×{w:g}" for w in ws])
            ax.minorticks_off()
            ax.set_title(f"{net}, {100 * s:g}% sparse", fontsize=9)
            if j == 0:
                ax.set_ylabel("dense − sparse acc. (points)")
            if i == len(nets) - 1:
                ax.set_xlabel("width multiplier")
            ax.grid(alpha=0.3)
    for row in {0, len(nets) - 1}:  # the conv row also has uniform+
        axes[row][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_small(rows: list[dict], title: str):
    plt = harness.pyplot()
    nets = sorted({r["network"] for r in rows}, key=lambda n: (n.startswith("conv"), n))
    sps = sorted({r["sparsity"] for r in rows if r["rule"] != "dense"})
    fig, axes = plt.subplots(1, len(nets), figsize=(4.2 * len(nets), 3.4), squeeze=False)
    for ax, net in zip(axes[0], nets):
        dense = sorted(
            (r["alive"], r["test_acc"])
            for r in rows
            if r["network"] == net and r["rule"] == "dense"
        )
        ax.plot(
            *zip(*[(a, 100 * t) for a, t in dense]),
            color="gray",
            marker="s",
            ms=3,
            label="dense (each width)",
        )
        for k, s in enumerate(sps):
            for rule, ls, mk in (("erk", "-", "o"), ("small", "--", "^")):
                pts = sorted(
                    (r["alive"], r["test_acc"])
                    for r in rows
                    if r["network"] == net and r["rule"] == rule and r["sparsity"] == s
                )
                if pts:
                    ax.plot(
                        *zip(*[(a, 100 * t) for a, t in pts]),
                        ls=ls,
                        marker=mk,
                        ms=3,
                        color=f"C{k}",
                        label=f"{'ERK sparse-wide' if rule == 'erk' else 'small dense'} "
                        f"{100 * s:g}%",
                    )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("alive kernel weights")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(net, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def outputs(cfg, records: list[dict], rules: list[str], extra: dict) -> dict:
    """What :meth:`experiments.harness.Run.publish` writes: results, table, CSV, figures."""
    rows = summarise(records)
    checks = claims(rows)
    results = {
        "study": "random-pruning",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "std": "sample standard deviation over seeds (ddof=1); gap = dense − sparse, "
        "paired by seed",
        **extra,
        "rows": rows,
        "claims": checks,
        "networks": records,
    }
    caption = (
        f"Random pruning on MNIST ({extra['data']}), trained from scratch for {cfg.steps} "
        f"Adam steps (lr {cfg.lr:g}, batch {cfg.batch_size}), test accuracy % at the end, mean "
        f"± std over {cfg.seeds} seeds (config {cfg.digest()}). Widths multiply MLP hidden "
        f"units ({cfg.mlp_base} at ×1) and conv channels / hidden units ({cfg.conv_channels} / "
        f"{cfg.conv_hidden} at ×1). 'alive weights': kernel weights alive at this sparsity; "
        "'small dense': a narrower dense net of the same family with about that many "
        "weights. n/a: the rule cannot reach the sparsity on this network."
    )
    md = caption + "\n\n" + table(rows, rules)
    md += "\n\n" + "\n".join(f"- {k}: {v}" for k, v in checks["summary"].items())
    title = f"random pruning, MNIST, {cfg.seeds} seeds (config {cfg.digest()})"
    return {
        "results": results,
        "table": md,
        "csv": [{k: v for k, v in r.items() if k != "small_size"} for r in rows],
        "figures": {
            "gap_vs_width.png": plot_gaps(rows, title),
            "sparse_vs_small.png": plot_small(rows, title),
        },
    }
