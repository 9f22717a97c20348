"""Reporting for the early-bird study: when each ratio's early bird is found, the
retrained tickets against their controls and dense training (accuracy, size, measured
time), the epoch x epoch mask-distance heat maps (You et al., Fig. 2)."""

from __future__ import annotations

import numpy as np

from experiments import early_ticket, harness
from experiments.early_bird.config import RATIOS, EarlyBirdConfig

ARM_LABELS = {
    "eb": "early-bird ticket",
    "full": "ticket after full training",
    "random": "random channels, same widths",
}
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
    dense_s = [s["dense_s"] for s in per_seed]
    out = {
        "dense": {
            **dense_info,
            "acc": [s["acc"]["dense"] for s in per_seed],
            "time_s": dense_s,
        },
        "search": {
            **dense_info,
            "acc": [s["acc"]["search"] for s in per_seed],
            "time_s": [s["search_full_s"] for s in per_seed],
        },
        "found": found,
        "ratios": {},
    }
    for ratio in cfg.retrain_ratios:
        runs = [(s, s["ratios"].get(str(ratio))) for s in per_seed]
        runs = [(s, r) for s, r in runs if r is not None]
        if not runs:
            continue
        row = {"seeds": [s["seed"] for s, _ in runs]}
        for arm in ARM_LABELS:
            row[arm] = {
                "acc": [r[arm]["acc"] for _, r in runs],
                "widths": [r[arm]["widths"] for _, r in runs],
                "params": [r[arm]["params"] for _, r in runs],
                "flops": [r[arm]["flops"] for _, r in runs],
                "train_s": [r[arm]["train_s"] for _, r in runs],
            }
        row["pipeline_s"] = [r["pipeline_s"] for _, r in runs]
        row["dense_s"] = [s["dense_s"] for s, _ in runs]
        row["time_ratio"] = [r["pipeline_s"] / s["dense_s"] for s, r in runs]
        row["step_ratio"] = [r["step_ratio"] for _, r in runs]
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
    d = summary["dense"]
    rows = [
        [
            "dense",
            "–",
            early_ticket.mean_widths([d["widths"]]),
            f"{d['params']:,}",
            f"{d['flops'] / 1e6:.2f}",
            harness.pm(d["acc"]),
            harness.pm(d["time_s"], 1, 1),
            "1",
        ],
        [
            "dense + slimming (search run)",
            "–",
            early_ticket.mean_widths([d["widths"]]),
            f"{d['params']:,}",
            f"{d['flops'] / 1e6:.2f}",
            harness.pm(summary["search"]["acc"]),
            harness.pm(summary["search"]["time_s"], 1, 1),
            "–",
        ],
    ]
    for ratio, row in summary["ratios"].items():
        for arm, label in ARM_LABELS.items():
            a = row[arm]
            if arm == "eb":
                t, rel = harness.pm(row["pipeline_s"], 1, 1), harness.pm(row["time_ratio"], 1, 2)
            elif arm == "full":
                t = harness.pm(row["full_pipeline_s"], 1, 1)
                rel = harness.pm(np.divide(row["full_pipeline_s"], row["dense_s"]), 1, 2)
            else:
                t, rel = "–", "–"
            rows.append(
                [
                    label,
                    f"{100 * float(ratio):.0f}%",
                    early_ticket.mean_widths(a["widths"]),
                    f"{np.mean(a['params']):,.0f}",
                    f"{np.mean(a['flops']) / 1e6:.2f}",
                    harness.pm(a["acc"]),
                    t,
                    rel,
                ]
            )
    arms = harness.markdown_table(
        [
            "network",
            "pruned",
            "channels",
            "params",
            "MFLOPs/example",
            "test acc %",
            "wall s",
            "time / dense",
        ],
        rows,
    )
    speed = harness.markdown_table(
        ["channels pruned", "FLOPs / dense", "shrunk chunk time / dense chunk time (median)"],
        [
            [
                f"{100 * float(r):.0f}%",
                f"{np.mean(row['eb']['flops']) / d['flops']:.2f}",
                harness.pm(row["step_ratio"], 1, 2),
            ]
            for r, row in summary["ratios"].items()
        ],
    )
    return (
        f"**When the early bird is found** (detector: window {cfg.window}, eps {cfg.eps}, "
        f"one check every {1 / cfg.checks_per_epoch:g} epoch, {cfg.n_checks()} checks; % of "
        f"schedule = training done when drawn)\n\n{found}\n\n"
        f"**Retrained tickets** (channels: mean over seeds per layer; wall s: early-bird "
        f"row = the whole pipeline, ticket after full training = the whole search run + "
        f"its retraining; mean ± std over seeds)\n\n{arms}\n\n"
        f"**Per-step speed of the shrunk early-bird ticket**\n\n{speed}"
    )


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
        f"channel masks by global |γ|; retraining: a fresh cosine schedule over the epochs "
        f"left after the draw. Test accuracy, {cfg.seeds} seeds (hash {cfg.digest()})."
    )
    md = f"{caption}\n\n{tables(cfg, summary)}\n\n{TIME_NOTE}"

    csv_rows = []
    for s in per_seed:
        csv_rows.append({"seed": s["seed"], "network": "dense", "acc": s["acc"]["dense"]})
        csv_rows[-1]["time_s"] = s["dense_s"]
        csv_rows.append({"seed": s["seed"], "network": "search", "acc": s["acc"]["search"]})
        csv_rows[-1]["time_s"] = s["search_full_s"]
        for ratio, row in s["ratios"].items():
            for arm in ARM_LABELS:
                a = row[arm]
                csv_rows.append(
                    {
                        "seed": s["seed"],
                        "network": arm,
                        "ratio": float(ratio),
                        "acc": a["acc"],
                        "params": a["params"],
                        "flops": a["flops"],
                        "widths": "/".join(map(str, a["widths"])),
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
