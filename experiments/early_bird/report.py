"""Reporting for the early-bird study: when each ratio's early bird is found, the
retrained tickets against their controls and dense training (accuracy, size, measured
time), the epoch x epoch mask-distance heat maps (You et al., Fig. 2)."""

from __future__ import annotations

import numpy as np

from experiments import early_ticket, harness
from experiments.early_bird.config import RATIOS, EarlyBirdConfig

ARM_LABELS = {
    "eb": "early-bird ticket (the pipeline)",
    "full": "ticket after full training, same retraining budget",
    "random": "random channels at the ticket's widths",
    "small": "small dense at the ticket's widths, from scratch",
    "dense_time": "dense for the pipeline's time (compile left out)",
}
SHRUNK = ("eb", "full", "random", "small")  # the arms at a ticket's widths
TIME_NOTE = early_ticket.time_note(
    "search chunks up to the draw + mask checks + shrink + retraining to the end of the "
    "epoch budget (interleaved with the rest of the dense run)."
)


def distance_matrix(masks: np.ndarray) -> np.ndarray:
    """``(checks, checks)`` normalised Hamming distances between the masks of two checks."""
    m = masks.astype(np.float32)
    return (m[:, None, :] != m[None, :, :]).mean(-1) if m.size else m


def summarise(cfg: EarlyBirdConfig, per_seed: list[dict], dense_info: dict) -> dict:
    found = {}
    for r, ratio in enumerate(RATIOS):
        checks = [s["eb_check"][r] for s in per_seed]
        hit = [c for c in checks if c is not None]
        found[str(ratio)] = {"found": len(hit), "check": checks, **early_ticket.drawn_at(cfg, hit)}
    full_width = {}
    for net in ("dense", "search"):
        full_width[net] = {
            **dense_info,
            "acc": [s["acc"][net] for s in per_seed],
            "train_acc": [s["train_acc"][net] for s in per_seed],
            "steps": [s["steps"][net] for s in per_seed],
        }
    full_width["dense"]["time_s"] = [s["dense_s"] for s in per_seed]
    full_width["dense"]["time_compile_s"] = [s["dense_compile_s"] for s in per_seed]
    full_width["search"]["time_s"] = [s["search_full_s"] for s in per_seed]
    out = {**full_width, "found": found, "margin": early_ticket.MARGIN, "ratios": {}}
    for ratio in cfg.retrain_ratios:
        runs = [(s, s["ratios"].get(str(ratio))) for s in per_seed]
        runs = [(s, r) for s, r in runs if r is not None]
        if not runs:
            continue
        row = {"seeds": [s["seed"] for s, _ in runs]}
        for arm in ARM_LABELS:
            row[arm] = {k: [r[arm][k] for _, r in runs] for k in ("acc", "train_acc", "steps")}
            row[arm]["train_s"] = [r[arm]["train_s"] for _, r in runs]
            if arm in SHRUNK:
                for k in ("widths", "params", "flops", "compile_s"):
                    row[arm][k] = [r[arm][k] for _, r in runs]
        row["small"]["lr"] = [r["small"].get("lr") for _, r in runs]
        row["dense_acc"] = [s["acc"]["dense"] for s, _ in runs]
        row["verdicts"] = early_ticket.verdicts(
            {arm: row[arm]["acc"] for arm in ARM_LABELS}, row["dense_acc"]
        )
        row["verdicts_vs_eb"] = early_ticket.verdicts(
            {arm: row[arm]["acc"] for arm in ("full", "random", "small", "dense_time")},
            row["eb"]["acc"],
        )
        for key in ("pipeline_s", "pipeline_compile_s", "step_ratio"):
            row[key] = [r[key] for _, r in runs]
        row["dense_s"] = [s["dense_s"] for s, _ in runs]
        row["dense_compile_s"] = [s["dense_compile_s"] for s, _ in runs]
        row["time_ratio"] = [r["pipeline_s"] / s["dense_s"] for s, r in runs]
        row["time_ratio_compile"] = [
            r["pipeline_compile_s"] / s["dense_compile_s"] for s, r in runs
        ]
        # the conventional pipeline: the whole search run, then retraining its ticket
        row["full_pipeline_s"] = [s["search_full_s"] + r["full"]["train_s"] for s, r in runs]
        out["ratios"][str(ratio)] = row
    return out


def tables(cfg: EarlyBirdConfig, summary: dict) -> str:
    found = harness.markdown_table(
        ["channels pruned", "found (seeds)", "epoch found", "% of schedule"],
        [
            [
                f"{100 * float(r):.0f}%",
                f"{f['found']}/{cfg.seeds}",
                harness.pm(f["epoch"], 1, 1),
                harness.pm(f["share"], 100, 0),
            ]
            for r, f in summary["found"].items()
        ],
    )
    d, margin = summary["dense"], summary["margin"]
    parts = [
        f"**When the early bird is found** (detector: window {cfg.window}, eps {cfg.eps}, "
        f"one check every {1 / cfg.checks_per_epoch:g} epoch, {cfg.n_checks()} checks; % of "
        f"schedule = training done when drawn)\n\n{found}"
    ]
    for ratio, row in summary["ratios"].items():
        pct = f"{100 * float(ratio):.0f}%"
        arms = {"dense": summary["dense"], "search": summary["search"], **row}
        labels = {"dense": "dense", "search": "dense + slimming (search run)", **ARM_LABELS}
        acc = early_ticket.verdict_table(labels, arms, row["verdicts"], margin)
        vs_eb = harness.markdown_table(
            ["arm", "arm − early-bird ticket, points [95% CI]", "verdict"],
            [[ARM_LABELS[a], v["text"], v["verdict"]] for a, v in row["verdicts_vs_eb"].items()],
        )
        size_rows = [
            [
                "dense",
                early_ticket.mean_widths([d["widths"]]),
                f"{d['params']:,}",
                f"{d['flops'] / 1e6:.2f}",
                harness.pm(row["dense_s"], 1, 1),
                harness.pm(row["dense_compile_s"], 1, 1),
                "1",
                "1",
            ],
            [
                ARM_LABELS["eb"],
                early_ticket.mean_widths(row["eb"]["widths"]),
                f"{np.mean(row['eb']['params']):,.0f}",
                f"{np.mean(row['eb']['flops']) / 1e6:.2f}",
                harness.pm(row["pipeline_s"], 1, 1),
                harness.pm(row["pipeline_compile_s"], 1, 1),
                harness.pm(row["time_ratio"], 1, 2),
                harness.pm(row["time_ratio_compile"], 1, 2),
            ],
            [
                "train fully, prune, retrain (search run + ticket after full training)",
                early_ticket.mean_widths(row["full"]["widths"]),
                f"{np.mean(row['full']['params']):,.0f}",
                f"{np.mean(row['full']['flops']) / 1e6:.2f}",
                harness.pm(row["full_pipeline_s"], 1, 1),
                "–",
                harness.pm(np.divide(row["full_pipeline_s"], row["dense_s"]), 1, 2),
                "–",
            ],
        ]
        size = harness.markdown_table(
            [
                "network",
                "channels",
                "params",
                "MFLOPs/example",
                "wall s",
                "wall s with compile",
                "time / dense",
                "time / dense, compile counted",
            ],
            size_rows,
        )
        parts.append(
            f"**{pct} of channels pruned: every arm against dense** (paired by seed, "
            f"{len(row['seeds'])} seeds; steps: training steps of the arm, the retraining "
            f"alone for the tickets; mean ± std over seeds; 'matches' = the interval lies "
            f"above −{100 * margin:g} points)\n\n{acc}\n\n"
            f"**{pct}: the controls against the early-bird ticket**\n\n{vs_eb}\n\n"
            f"**{pct}: size and measured time** (channels: mean over seeds per layer)\n\n"
            f"{size}\n\nThe shrunk early-bird ticket's chunk takes "
            f"{harness.pm(row['step_ratio'], 1, 2)} of a dense chunk's time (median) at "
            f"{np.mean(row['eb']['flops']) / d['flops']:.2f} of its FLOPs. "
            f"{early_ticket.lr_note(cfg, row['small']['lr'])}"
        )
    return "\n\n".join(parts)


def plot(cfg: EarlyBirdConfig, per_seed: list[dict]):
    plt = harness.pyplot()
    seed0 = per_seed[0]
    n = seed0["masks"].shape[0]
    fig, axes = plt.subplots(1, len(RATIOS), figsize=(4.2 * len(RATIOS), 3.9))
    ext = (0.5 / cfg.checks_per_epoch, (n + 0.5) / cfg.checks_per_epoch)
    for r, (ax, ratio) in enumerate(zip(axes, RATIOS)):
        dm = distance_matrix(seed0["masks"][:, r])
        im = ax.imshow(
            dm,
            cmap="viridis",
            origin="lower",
            extent=(*ext, *ext),
            vmin=0,
            vmax=max(0.2, float(dm.max())),
        )
        c = seed0["eb_check"][r]
        title = f"{100 * ratio:.0f}% channels pruned"
        if c is not None:
            e = (c + 1) / cfg.checks_per_epoch
            ax.axvline(e, color="r", lw=1)
            ax.axhline(e, color="r", lw=1)
            title += f": early bird at epoch {e:g}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("epoch")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="mask distance")
    fig.suptitle(
        f"Channel-mask distance between epochs (seed 0, |BN γ|, slimming {cfg.slimming:g}); "
        f"hash {cfg.digest()}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def outputs(cfg, ds, per_seed, dense_info, compile_s, slices) -> dict:
    """What :meth:`experiments.harness.Run.publish` writes: results, table, CSV, figure."""
    summary = summarise(cfg, per_seed, dense_info)
    caption = (
        f"Early-bird tickets: VGG-style net (widths {cfg.widths}, BatchNorm, global average "
        f"pooling) on MNIST ({ds.sizes()} train/val/test, {28 // cfg.pool}x"
        f"{28 // cfg.pool} after {cfg.pool}x{cfg.pool} average pooling), {cfg.epochs} "
        f"epochs of SGD (momentum 0.9, lr {cfg.lr:g} cosine, wd {cfg.weight_decay:g}, batch "
        f"{cfg.batch_size}), slimming {cfg.slimming:g} on BN scales in the search run; "
        f"channel masks by global |γ|; retraining of every shrunk arm: a fresh cosine schedule "
        f"over the epochs left after the early bird's draw, on the same batches. Test "
        f"accuracy, {cfg.seeds} paired seeds (hash {cfg.digest()})."
    )
    md = f"{caption}\n\n{tables(cfg, summary)}\n\n{TIME_NOTE}"

    csv_rows = []
    for s in per_seed:
        for net in ("dense", "search"):
            csv_rows.append(
                {
                    "seed": s["seed"],
                    "network": net,
                    "acc": s["acc"][net],
                    "train_acc": s["train_acc"][net],
                    "steps": s["steps"][net],
                    "time_s": s["dense_s"] if net == "dense" else s["search_full_s"],
                }
            )
        for ratio, row in s["ratios"].items():
            for arm in ARM_LABELS:
                a = row[arm]
                csv_rows.append(
                    {
                        "seed": s["seed"],
                        "network": arm,
                        "ratio": float(ratio),
                        "acc": a["acc"],
                        "train_acc": a["train_acc"],
                        "steps": a["steps"],
                        "params": a.get("params"),
                        "flops": a.get("flops"),
                        "widths": "/".join(map(str, a.get("widths", []))),
                        "time_s": row["pipeline_s"] if arm == "eb" else a["train_s"],
                    }
                )
    results = early_ticket.results(
        cfg,
        ds,
        summary,
        compile_s,
        ratios=list(RATIOS),
        groups={n: [sl.start, sl.stop] for n, sl in slices.items()},
    )
    results["seeds"] = [
        {**s, "distances": d["dists"].tolist()}
        for s, d in zip(early_ticket.seed_rows(per_seed, ("masks", "dists")), per_seed)
    ]
    results["time_note"] = TIME_NOTE
    return {
        "results": results,
        "table": md,
        "csv": csv_rows,
        "figures": {"early_bird.png": plot(cfg, per_seed)},
    }
