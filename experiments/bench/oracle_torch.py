"""jaxsparse.prune against torch.nn.utils.prune: the same masks, round after round.

Needs the optional extra: ``pip install -e ".[torch]"`` (the pinned CPU build). Prunes
the kernels of a LeNet-300-100-shaped set of random, tie-free weights for several
rounds, layerwise (``l1_unstructured``, which prunes ``round(amount * n_alive)`` of each
layer's remaining weights) and globally (``global_unstructured`` with ``L1Unstructured``),
with amounts chosen so that ``amount * n`` often lands on ``k + 0.5`` (Python rounds half
to even). Prints a table: per round and scope, the alive counts of both and whether the
masks are identical; then the time of one global prune (jitted jaxsparse; torch's prune
API, which includes its reparametrisation bookkeeping; and torch's bare abs/cat/topk
computation), as ratios measured in the same run.

Run::

    python -m experiments.bench.oracle_torch
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import numpy as np

import jaxsparse as js
from experiments.bench import timing

SHAPES = {"fc1": (784, 300), "fc2": (300, 100), "fc3": (100, 10)}


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = sum(int(np.prod(s)) for s in SHAPES.values())
    values = rng.permutation(n).astype(np.float32) + 1.0  # distinct magnitudes: no ties
    values *= rng.choice([-1.0, 1.0], size=n).astype(np.float32)
    out, at = {}, 0
    for name, shape in SHAPES.items():
        size = int(np.prod(shape))
        out[name] = values[at : at + size].reshape(shape) / n
        at += size
    return out


def _torch_modules(weights):
    import torch

    mods = {}
    for name, w in weights.items():
        lin = torch.nn.Linear(w.shape[0], w.shape[1], bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))  # torch stores (out, in)
        mods[name] = lin
    return mods


def _torch_masks(mods) -> dict[str, np.ndarray]:
    return {n: m.weight_mask.detach().numpy().T.astype(bool) for n, m in mods.items()}


def compare(rounds: int, amount: float, seed: int) -> list[list[str]]:
    import torch.nn.utils.prune as tprune

    weights = _weights(seed)
    params = {n: jax.numpy.asarray(w) for n, w in weights.items()}
    scores = js.scores.magnitude(params)
    rows = []
    for scope in ("layerwise", "global"):
        mods = _torch_modules(weights)
        mask = js.mask_like(params)
        step = jax.jit(lambda s, m, scope=scope: js.prune(s, m, amount, scope=scope))
        for r in range(1, rounds + 1):
            if scope == "layerwise":
                for m in mods.values():
                    tprune.l1_unstructured(m, "weight", amount=amount)
            else:
                tprune.global_unstructured(
                    [(m, "weight") for m in mods.values()],
                    pruning_method=tprune.L1Unstructured,
                    amount=amount,
                )
            mask = step(scores, mask)
            theirs = _torch_masks(mods)
            same = all(np.array_equal(np.asarray(mask[n]), theirs[n]) for n in SHAPES)
            alive_js = sum(int(np.asarray(mask[n]).sum()) for n in SHAPES)
            alive_t = sum(int(theirs[n].sum()) for n in SHAPES)
            rows.append([scope, str(r), str(alive_js), str(alive_t), "yes" if same else "NO"])
    return rows


def time_global(n_repeat: int, seed: int) -> dict[str, float]:
    """Median ms of one global 20% prune: jitted jaxsparse, torch's prune API (which also
    sets up its reparametrisation: hooks, ``weight_orig``, mask buffers), and torch's
    bare computation (abs, cat, ``topk`` of the smallest, scatter into a mask)."""
    import torch
    import torch.nn.utils.prune as tprune

    weights = _weights(seed)
    params = {n: jax.numpy.asarray(w) for n, w in weights.items()}
    step = jax.jit(lambda p, m: js.prune(js.scores.magnitude(p), m, 0.2, scope="global"))
    mask = js.mask_like(params)
    tensors = [torch.from_numpy(w) for w in weights.values()]
    n_total = sum(t.numel() for t in tensors)

    def torch_core():
        flat = torch.cat([t.abs().flatten() for t in tensors])
        drop = torch.topk(flat, round(0.2 * n_total), largest=False).indices
        keep = torch.ones(n_total, dtype=torch.bool)
        keep[drop] = False
        return keep

    # torch's prune API rewrites its modules: a fresh set for every call, made up front
    fresh = iter([_torch_modules(weights) for _ in range(n_repeat + 2)])

    def torch_api():
        with torch.no_grad():
            tprune.global_unstructured(
                [(m, "weight") for m in next(fresh).values()],
                pruning_method=tprune.L1Unstructured,
                amount=0.2,
            )

    def torch_bare():
        with torch.no_grad():
            return torch_core()

    t = timing.interleaved(
        {"jaxsparse": lambda: step(params, mask), "torch prune API": torch_api,
         "torch core": torch_bare},
        n_repeat,
    )  # fmt: skip
    return {name: timing.median(v) * 1e3 for name, v in t.wall.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--amount", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        parser.exit(1, 'needs PyTorch: pip install -e ".[torch]"\n')
    print(f"jax {jax.__version__}, torch {torch.__version__}, amount {args.amount}\n")
    rows = compare(args.rounds, args.amount, args.seed)
    print("| scope | round | alive (jaxsparse) | alive (torch) | identical mask |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    ms = time_global(7, args.seed)
    print("\none global 20% prune of 266,200 weights, median of 7:\n")
    print("| method | ms | vs jaxsparse |")
    print("|---|---|---|")
    for name, t in ms.items():
        print(f"| {name} | {t:.2f} | {t / ms['jaxsparse']:.1f}x |")
    if any(r[-1] != "yes" for r in rows):
        raise SystemExit("masks differ from torch.nn.utils.prune")


if __name__ == "__main__":
    main()
