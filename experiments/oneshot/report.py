"""Reporting for the oneshot study: the perplexity table (Sun et al., Table 2's shape),
per-layer reconstruction errors, the calibration sweep, pruning time, fine-tuning."""

from __future__ import annotations

import numpy as np

from experiments import harness

PAPER = (
    "LLaMA-2-7B, WikiText (Sun et al. 2024; Frantar & Alistarh 2023): dense 5.12; at 50% "
    "magnitude 14.89, SparseGPT 6.51, Wanda 6.42; at 2:4 54.59 / 10.17 / 11.02."
)


def _f(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def tables(cfg, dense_ppl, grid, errors, sweep, tuned) -> str:
    names = [f"{s:g}" for s in cfg.sparsity_list()] + [f"{n}:{m}" for n, m in cfg.pattern_list()]
    by = {(r["method"], r["pattern"]): r for r in grid}
    rows = [["dense", *[_f(dense_ppl)] * len(names)]]
    for method in ("random", "magnitude", "wanda", "sparsegpt"):
        rows.append([method, *[_f(by[(method, n)]["ppl"]) for n in names]])
    heads = ["method", *[f"{float(n):.0%}" if ":" not in n else n for n in names]]
    out = ["Held-out perplexity (bytes) after one-shot pruning, no retraining:\n"]
    out.append(harness.markdown_table(heads, rows))

    at = next((n for n in names if ":" not in n and float(n) > 0), None)
    if at is not None:
        paths = list(errors[("sparsegpt", at)])
        rows = [
            [p, *[_f(errors[(m, at)][p]) for m in ("magnitude", "wanda", "sparsegpt")]]
            for p in paths
        ]
        out.append(
            f"\nRelative reconstruction error ‖XW − XŴ‖ / ‖XW‖ of each layer at "
            f"{float(at):.0%} (on the calibration inputs it was pruned with):\n"
        )
        out.append(harness.markdown_table(["layer", "magnitude", "wanda", "sparsegpt"], rows))
    if sweep:
        sizes = sorted({r["calib"] for r in sweep})
        sw = {(r["calib"], r["method"]): r["ppl"] for r in sweep}
        rows = [[m, *[_f(sw[(n, m)]) for n in sizes]] for m in ("wanda", "sparsegpt")]
        out.append("\nPerplexity at 50% against the number of calibration sequences:\n")
        out.append(harness.markdown_table(["method", *[f"{n} seqs" for n in sizes]], rows))
    rows = []
    for method in ("magnitude", "wanda", "sparsegpt"):
        t = [r["prune_s"] for r in grid if r["method"] == method]
        rss = max(r["peak_rss_mb"] for r in grid if r["method"] == method)
        warm = float(np.median(t[1:])) if len(t) > 1 else t[0]
        rows.append([method, _f(t[0], 1), _f(warm, 1), f"{rss:,.0f}"])
    out.append(
        "\nTime to prune the whole model (first call, compiling included; median of the "
        "later calls) and the process's peak resident memory once the method had run:\n"
    )
    out.append(
        harness.markdown_table(["method", "first s", "later s (median)", "peak RSS MB"], rows)
    )
    if tuned:
        rows = [
            [t["start"], _f(t["before"]), _f(t["after"]), "yes" if t["pruned_stay_zero"] else "NO"]
            for t in tuned
        ]
        out.append(
            f"\nSparse fine-tuning at {cfg.finetune_at:.0%}: {cfg.finetune_steps} steps of "
            f"masked(adam) (lr {cfg.finetune_lr:g}, batch {cfg.finetune_batch}); dense trained "
            f"as long for comparison:\n"
        )
        out.append(
            harness.markdown_table(["start", "ppl before", "ppl after", "pruned stay 0"], rows)
        )
    return "\n".join(out)


def vision_table(vis) -> str:
    rows = vis["grid"]
    names = list(dict.fromkeys(r["pattern"] for r in rows))
    by = {(r["method"], r["pattern"]): r for r in rows}
    heads = ["method", *[n if ":" in n else f"{float(n):.0%}" for n in names]]
    pct = lambda a: f"{100 * a:.1f}"  # noqa: E731
    body = [["dense", *[pct(vis["test_acc"])] * len(names)]]
    for method in ("random", "magnitude", "wanda", "sparsegpt"):
        body.append([method, *[pct(by[(method, n)]["test_acc"]) for n in names]])
    shapes = ", ".join(f"{p.split('/')[0]} {a}x{b}" for p, (a, b) in vis["pruned_shapes"].items())
    caption = (
        f"LeNet-300-100 ({vis['params']:,} params) trained dense on {vis['data']} "
        f"({vis['sizes']} train/val/test) for {vis['steps']} Adam steps (lr {vis['lr']:g}, "
        f"batch {vis['batch']}): train accuracy {pct(vis['train_acc'])}%, test "
        f"{pct(vis['test_acc'])}%. Pruned once ({vis['calib']} training images as "
        f"calibration): the hidden layers ({shapes}); the output layer dense. Test "
        f"accuracy (%), no retraining; the vision stage took {vis['stage_s']:.0f} s:\n"
    )
    return caption + "\n" + harness.markdown_table(heads, body)


def plot(cfg, dense_ppl, grid, sweep):
    plt = harness.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    sp = cfg.sparsity_list()
    for i, method in enumerate(("random", "magnitude", "wanda", "sparsegpt")):
        ys = [next(r["ppl"] for r in grid if r["method"] == method and r["pattern"] == f"{s:g}")
              for s in sp]  # fmt: skip
        ax1.plot([100 * s for s in sp], ys, "o-", color=f"C{i}", label=method)
        for j, (n, m) in enumerate(cfg.pattern_list()):
            y = next(r["ppl"] for r in grid if r["method"] == method and r["pattern"] == f"{n}:{m}")
            ax1.plot(100 * (1 - n / m), y, "s^"[j % 2], color=f"C{i}", ms=8, mfc="none")
    ax1.axhline(dense_ppl, color="k", ls="--", lw=1, label="dense")
    ax1.set_yscale("log")
    ax1.set_xlabel("sparsity % (open markers: N:M, square 2:4, triangle 4:8)")
    ax1.set_ylabel("held-out perplexity (bytes)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for i, method in enumerate(("wanda", "sparsegpt")):
        rows = [r for r in sweep if r["method"] == method]
        ax2.plot([r["calib"] for r in rows], [r["ppl"] for r in rows], "o-", color=f"C{i + 2}",
                 label=method)  # fmt: skip
    ax2.axhline(dense_ppl, color="k", ls="--", lw=1, label="dense")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("calibration sequences (50% unstructured)")
    ax2.set_ylabel("held-out perplexity (bytes)")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.suptitle(
        f"One-shot pruning of a {cfg.layers}-layer byte-level transformer (width {cfg.width}, "
        f"context {cfg.context}) pre-trained on optax's source; hash {cfg.digest()}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def report(run, cfg, info, pre, dense_ppl, grid, errors, sweep, tuned, n_params, devices, vis=None):
    caption = (
        f"A {cfg.layers}-layer pre-LN byte-level decoder (width {cfg.width}, {cfg.heads} "
        f"heads, context {cfg.context}, {n_params:,} params) pre-trained {cfg.train_steps} "
        f"steps (batch {cfg.batch_size}) on the Python sources of optax {info['version']} "
        f"({info['files']} files, sha256 {info['sha256'][:12]}; every tenth file held out: "
        f"{info['heldout_bytes']:,} bytes, {cfg.eval_seqs} windows for perplexity). Pruned "
        f"once with jaxsparse.oneshot.prune (sequential, {cfg.calib} calibration sequences "
        f"from the training files, SparseGPT blocks of {cfg.blocksize}): every Dense of the "
        f"blocks (attention q/k/v/out, MLP); embeddings and head dense. Hash {cfg.digest()}."
    )
    md = f"{caption}\n\n{tables(cfg, dense_ppl, grid, errors, sweep, tuned)}\n\n{PAPER}"
    if vis is not None:
        md += "\n\n## A classifier\n\n" + vision_table(vis)
    results = {
        "study": "oneshot",
        "config": cfg.hashed(),
        "config_hash": cfg.digest(),
        "corpus": info,
        "pretrain": pre,
        "params": n_params,
        "devices": devices,
        "dense_ppl": dense_ppl,
        "grid": grid,
        "errors": {f"{m}@{p}": e for (m, p), e in errors.items()},
        "calib_sweep": sweep,
        "finetune": tuned,
        "vision": vis,
    }
    return run.publish(
        results,
        table=md,
        csv=grid,
        figures={"oneshot.png": plot(cfg, dense_ppl, grid, sweep)},
    )
