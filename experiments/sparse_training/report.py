"""Reporting for the sparse-training study: the table, the CSV and the plot."""

from __future__ import annotations

from experiments import harness

LABELS = {
    "dense": "dense",
    "erk": "static random (ERK)",
    "snip": "SNIP",
    "grasp": "GraSP",
    "synflow": "SynFlow",
    "set": "SET",
    "rigl": "RigL",
    "gmp": "gradual magnitude",
    "ste": "STE magnitude",
    "imp": "IMP ticket",
}


def summarise(records: list[dict]) -> list[dict]:
    import numpy as np

    dense = next((r for r in records if r["method"] == "dense"), None)
    rows = []
    for r in records:
        m, s = harness.mean_std(r["test_acc"])
        row = {
            "method": r["method"],
            "label": LABELS[r["method"]],
            "sparsity": float(np.mean(r["sparsity"])),
            "test_acc": m,
            "test_acc_std": s,
            "val_acc": float(np.mean(r["val_acc"])),
            "train_s": r.get("train_s"),
            "search_s": r.get("search_s"),
            "search_steps": r["search_steps"],
            "search_cost": r["search_cost"],
        }
        if dense is not None:
            row["minus_dense"], row["minus_dense_std"] = harness.mean_std(
                np.asarray(r["test_acc"]) - np.asarray(dense["test_acc"])
            )
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = ["method", "sparsity %", "test acc %", "− dense (points)", "train s",
            "mask search: steps", "search s", "what the search costs"]  # fmt: skip
    body = []
    for r in rows:
        delta = (
            f"{100 * r['minus_dense']:+.1f} ± {100 * r['minus_dense_std']:.1f}"
            if "minus_dense" in r
            else ""
        )
        body.append(
            [
                r["label"],
                f"{100 * r['sparsity']:.2f}",
                f"{100 * r['test_acc']:.1f} ± {100 * r['test_acc_std']:.1f}",
                delta,
                f"{r['train_s']:.1f}" if r["train_s"] is not None else "",
                str(r["search_steps"]),
                f"{r['search_s']:.2f}" if r["search_s"] is not None else "",
                r["search_cost"],
            ]
        )
    return harness.markdown_table(head, body)


def plot(rows: list[dict], cfg, title: str):
    plt = harness.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    y = list(range(len(rows)))
    ax1.barh(
        y, [100 * r["test_acc"] for r in rows], xerr=[100 * r["test_acc_std"] for r in rows],
        color=["gray" if r["method"] == "dense" else "C0" for r in rows], capsize=3,
    )  # fmt: skip
    ax1.set_yticks(y, [r["label"] for r in rows])
    ax1.invert_yaxis()
    lo = min(100 * (r["test_acc"] - r["test_acc_std"]) for r in rows)
    hi = max(100 * (r["test_acc"] + r["test_acc_std"]) for r in rows)
    ax1.set_xlim(max(0, lo - 1), min(100, hi + 0.5))
    ax1.set_xlabel(f"test accuracy (%), {100 * cfg.sparsity:g}% sparse, mean ± std")
    ax1.grid(alpha=0.3, axis="x")
    for r in rows:
        cost = (r["search_s"] or 0.0) + (r["train_s"] or 0.0)
        ax2.errorbar(cost, 100 * r["test_acc"], yerr=100 * r["test_acc_std"], marker="o",
                     capsize=3, color="gray" if r["method"] == "dense" else "C0")  # fmt: skip
        ax2.annotate(r["label"], (cost, 100 * r["test_acc"]), fontsize=7,
                     xytext=(4, 2), textcoords="offset points")  # fmt: skip
    ax2.set_xscale("log")
    ax2.xaxis.set_minor_formatter(plt.NullFormatter())
    ax2.set_xlabel("wall seconds, mask search + training (all seeds, vmapped)")
    ax2.set_ylabel("test accuracy (%)")
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def outputs(cfg, records: list[dict], data: str) -> dict:
    """What :meth:`experiments.harness.Run.publish` writes: results, table, CSV, figures."""
    rows = summarise(records)
    results = {
        "study": "sparse-training",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "data": data,
        "std": "sample standard deviation over seeds (ddof=1); '− dense' paired by seed",
        "timing_note": "train s / search s: wall seconds of one compiled call that runs "
        "all seeds together (vmapped), compilation excluded",
        "rows": rows,
        "records": records,
    }
    caption = (
        f"Sparse training at {100 * cfg.sparsity:g}% sparsity, LeNet-300-100 on MNIST "
        f"({data}), every method {cfg.steps} Adam steps (lr {cfg.lr:g}, batch "
        f"{cfg.batch_size}); test accuracy at the end, mean ± std over {cfg.seeds} seeds "
        f"(config {cfg.digest()}). Times: wall seconds for all seeds together (vmapped), "
        "compilation excluded. Mask updates every "
        f"{cfg.update_every} steps until {100 * cfg.update_end:g}% of training."
    )
    title = f"sparse training, MNIST, {cfg.seeds} seeds (config {cfg.digest()})"
    return {
        "results": results,
        "table": caption + "\n\n" + table(rows),
        "csv": rows,
        "figures": {"sparse_training.png": plot(rows, cfg, title)},
    }
