"""Reporting for the early-bert study: the drawn ticket's size, accuracy and measured
training time against dense; accuracy against wall time and the detector's distances."""

from __future__ import annotations

import numpy as np

from experiments import early_ticket, harness
from experiments.early_bert.config import EarlyBertConfig

TIME_NOTE = early_ticket.time_note(
    "the search chunks (full width, slimming) + the mask checks + shrinking the params "
    "and Adam's moments + the shrunk encoder's chunks to the end of the same epoch budget."
)
ARM_LABELS = {
    "earlybert": "EarlyBERT ticket (the pipeline)",
    "full": "ticket after full training, same retraining budget",
    "small": "small dense at the ticket's widths, from scratch",
    "dense_time": "dense for the pipeline's time (compile left out)",
}
OTHERS = ("full", "small", "dense_time")


def summarise(cfg: EarlyBertConfig, per_seed: list[dict], dense_info: dict) -> dict:
    drawn = [s["drawn"] for s in per_seed if s["drawn"]]
    paired_seeds = [s for s in per_seed if s["arms"]]  # the seeds whose ticket was drawn
    arms = {
        "dense": {
            **dense_info,
            "acc": [s["acc"]["dense"] for s in per_seed],
            "train_acc": [s["train_acc"]["dense"] for s in per_seed],
            "steps": [s["steps"]["dense"] for s in per_seed],
            "time_s": [s["dense_s"] for s in per_seed],
            "time_compile_s": [s["dense_compile_s"] for s in per_seed],
        },
        "earlybert": {
            "found": len(drawn),
            **early_ticket.drawn_at(cfg, [d["check"] for d in drawn]),
            "heads": [d["heads"] for d in drawn],
            "ffn": [d["ffn"] for d in drawn],
            "params": [d["params"] for d in drawn],
            "flops": [d["flops"] for d in drawn],
            "acc": [s["acc"]["earlybert"] for s in per_seed],
            "train_acc": [s["train_acc"]["earlybert"] for s in per_seed],
            "steps": [s["steps"]["earlybert"] for s in per_seed],
            "time_s": [s["pipeline_s"] for s in per_seed],
            "time_compile_s": [s["pipeline_compile_s"] for s in per_seed],
            "time_ratio": [s["time_ratio"] for s in per_seed],
            "time_ratio_compile": [s["time_ratio_compile"] for s in per_seed],
            "saving": [1 - s["time_ratio"] for s in per_seed],
            "saving_compile": [1 - s["time_ratio_compile"] for s in per_seed],
            "step_ratio": [s["step_ratio"] for s in per_seed if s["step_ratio"] is not None],
            "shrink_s": [d["shrink_s"] for d in drawn],
            "compile_s": [d["compile_s"] for d in drawn],
        },
    }
    for arm in OTHERS:
        runs = [s["arms"][arm] for s in paired_seeds]
        arms[arm] = {k: [r[k] for r in runs] for k in ("acc", "train_acc", "steps", "train_s")}
    for arm in ("full", "small"):
        # stages saved before the small arm read its widths off its own arrays lack
        # them; it was built at the ticket's widths
        arms[arm].update(
            {
                k: [s["arms"][arm].get(k, s["drawn"][k]) for s in paired_seeds]
                for k in ("heads", "ffn", "params")
            }
        )
    arms["small"]["lr"] = [s["arms"]["small"].get("lr") for s in paired_seeds]
    dense_acc = [s["acc"]["dense"] for s in paired_seeds]
    eb_acc = [s["acc"]["earlybert"] for s in paired_seeds]
    return {
        **arms,
        "margin": early_ticket.MARGIN,
        "paired_seeds": [s["seed"] for s in paired_seeds],
        "verdicts": early_ticket.verdicts(
            {"earlybert": eb_acc, **{a: arms[a]["acc"] for a in OTHERS}}, dense_acc
        ),
        "verdicts_vs_earlybert": early_ticket.verdicts({a: arms[a]["acc"] for a in OTHERS}, eb_acc),
    }


def table(cfg: EarlyBertConfig, summary: dict) -> str:
    d, e, margin = summary["dense"], summary["earlybert"], summary["margin"]
    labels = {"dense": "dense", **ARM_LABELS}
    acc = early_ticket.verdict_table(labels, summary, summary["verdicts"], margin)
    vs_eb = harness.markdown_table(
        ["arm", "arm − EarlyBERT ticket, points [95% CI]", "verdict"],
        [
            [ARM_LABELS[a], v["text"], v["verdict"]]
            for a, v in summary["verdicts_vs_earlybert"].items()
        ],
    )
    rows = [
        [
            "dense",
            "/".join(map(str, d["heads"])),
            "/".join(map(str, d["ffn"])),
            f"{d['params']:,}",
            f"{d['flops'] / 1e6:.2f}",
            harness.pm(d["time_s"], 1, 1),
            harness.pm(d["time_compile_s"], 1, 1),
            "1",
            "1",
        ],
        [
            f"EarlyBERT ticket (drawn at epoch {harness.pm(e['epoch'], 1, 1)}, "
            f"{harness.pm(e['share'], 100, 0)}% of schedule; {e['found']}/{cfg.seeds} seeds)",
            early_ticket.mean_widths(e["heads"]),
            early_ticket.mean_widths(e["ffn"]),
            f"{np.mean(e['params']):,.0f}" if e["params"] else "–",
            f"{np.mean(e['flops']) / 1e6:.2f}" if e["flops"] else "–",
            harness.pm(e["time_s"], 1, 1),
            harness.pm(e["time_compile_s"], 1, 1),
            harness.pm(e["time_ratio"], 1, 2),
            harness.pm(e["time_ratio_compile"], 1, 2),
        ],
    ]
    for arm in ("full", "small"):
        f = summary[arm]
        rows.append(
            [
                ARM_LABELS[arm],
                early_ticket.mean_widths(f["heads"]),
                early_ticket.mean_widths(f["ffn"]),
                f"{np.mean(f['params']):,.0f}" if f["params"] else "–",
                *["–"] * 5,
            ]
        )
    size = harness.markdown_table(
        [
            "network",
            "heads per layer",
            "FFN units per layer",
            "params (after draw)",
            "MFLOPs/example",
            "wall s",
            "wall s with compile",
            "time / dense",
            "time / dense, compile counted",
        ],
        rows,
    )
    return (
        f"**Every arm against dense** (paired by seed, {len(summary['paired_seeds'])} seeds "
        f"with a ticket; steps: training steps of the arm, the steps after the draw for the "
        f"tickets; mean ± std over seeds; 'matches' = the interval lies above "
        f"−{100 * margin:g} points)\n\n{acc}\n\n"
        f"**The other arms against the EarlyBERT ticket**\n\n{vs_eb}\n\n"
        f"**Size and measured time**\n\n{size}\n\n"
        f"Training time saved: **{harness.pm(e['saving'], 100, 1)}%** with compile left out, "
        f"**{harness.pm(e['saving_compile'], 100, 1)}%** with it counted (EarlyBERT's "
        f"claim: 35–45% on BERT); the shrunk encoder's chunk takes "
        f"{harness.pm(e['step_ratio'], 1, 2)} of the dense chunk's time at "
        f"{np.mean(e['flops']) / d['flops'] if e['flops'] else float('nan'):.2f} of its FLOPs. "
        f"{early_ticket.lr_note(cfg, summary['small']['lr'])}"
    )


def plot(cfg: EarlyBertConfig, per_seed: list[dict]):
    plt = harness.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, s in enumerate(per_seed):
        alpha = 1.0 if k == 0 else 0.35
        t_dense = np.cumsum(s["chunk_s"]["dense"])
        pipe = np.asarray(s["chunk_s"]["pipeline"])
        checks = np.zeros_like(pipe)
        checks[: len(s["chunk_s"]["check"])] = s["chunk_s"]["check"]
        t_pipe = np.cumsum(pipe + checks)
        lab = k == 0
        ax1.plot(t_dense, 100 * s["curves"][0], "C0-", alpha=alpha, label="dense" if lab else None)
        ax1.plot(
            t_pipe, 100 * s["curves"][1], "C3-", alpha=alpha, label="EarlyBERT" if lab else None
        )
        if s["drawn"]:
            c = s["drawn"]["check"]
            ax1.plot(t_pipe[c], 100 * s["curves"][1][c], "k*", ms=9, alpha=alpha)
        epochs = (np.arange(len(s["dists"])) + 1) / cfg.checks_per_epoch
        dmax = np.max(s["dists"], axis=1)
        ax2.plot(epochs, np.where(np.isfinite(dmax), dmax, np.nan), "C3-", alpha=alpha)
    ax1.set_xlabel("measured training wall time (s, compile excluded)")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_ylim(bottom=max(0, ax1.get_ylim()[0]))
    ax1.legend(title="★ ticket drawn")
    ax1.grid(alpha=0.3)
    ax2.axhline(cfg.eps, color="k", ls="--", lw=1, label=f"eps = {cfg.eps:g}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("largest mask distance in the FIFO")
    ax2.set_yscale("symlog", linthresh=0.01)
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.suptitle(
        f"EarlyBERT on MNIST patches: {cfg.layers} layers, {cfg.heads} heads, width "
        f"{cfg.width}, FFN {cfg.ffn}; {cfg.seeds} seeds (seed 0 solid); hash {cfg.digest()}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def outputs(cfg, ds, per_seed, dense_info, compile_s) -> dict:
    """What :meth:`experiments.harness.Run.publish` writes: results, table, CSV, figure."""
    summary = summarise(cfg, per_seed, dense_info)
    caption = (
        f"EarlyBERT: a {cfg.layers}-layer pre-LN transformer encoder ({cfg.heads} heads, "
        f"width {cfg.width}, FFN {cfg.ffn}, 7x7 patches as 16 tokens) on MNIST "
        f"({ds.sizes()} train/val/test), {cfg.epochs} epochs of Adam (lr {cfg.lr:g}, "
        f"cosine, batch {cfg.batch_size}). Slimming coefficients (init 1) on every head's "
        f"output and FFN unit, L1 {cfg.slimming:g} in the pipeline; detector every "
        f"{1 / cfg.checks_per_epoch:g} epoch (window {cfg.window}, eps {cfg.eps:g}) on the "
        f"mask pruning {100 * cfg.head_ratio:.0f}% of heads in every layer and "
        f"{100 * cfg.ffn_ratio:.0f}% of FFN units globally; at the draw the params and "
        f"Adam's moments are shrunk and training continues on the same schedule. The ticket "
        f"after full training and the small dense encoder retrain for the steps left after "
        f"the draw, on the same batches, from a fresh Adam and cosine. Test accuracy at the "
        f"end, {cfg.seeds} paired seeds (hash {cfg.digest()})."
    )
    md = f"{caption}\n\n{table(cfg, summary)}\n\n{TIME_NOTE}"
    rows = []
    for s in per_seed:
        d = s["drawn"] or {}
        for net in ("dense", "earlybert"):
            rows.append(
                {
                    "seed": s["seed"],
                    "network": net,
                    "acc": s["acc"][net],
                    "train_acc": s["train_acc"][net],
                    "steps": s["steps"][net],
                    "time_s": s["dense_s"] if net == "dense" else s["pipeline_s"],
                    "drawn_epoch": (d["check"] + 1) / cfg.checks_per_epoch
                    if d and net == "earlybert"
                    else None,
                }
            )
        for net, a in (s["arms"] or {}).items():
            rows.append(
                {
                    "seed": s["seed"],
                    "network": net,
                    "acc": a["acc"],
                    "train_acc": a["train_acc"],
                    "steps": a["steps"],
                    "time_s": a["train_s"],
                }
            )
    results = early_ticket.results(cfg, ds, summary, compile_s)
    results["seeds"] = [
        {
            **s,
            "curves": {"dense": d["curves"][0].tolist(), "earlybert": d["curves"][1].tolist()},
            "distances": d["dists"].tolist(),
        }
        for s, d in zip(early_ticket.seed_rows(per_seed, ("curves", "dists")), per_seed)
    ]
    results["time_note"] = TIME_NOTE
    return {
        "results": results,
        "table": md,
        "csv": rows,
        "figures": {"early_bert.png": plot(cfg, per_seed)},
    }
