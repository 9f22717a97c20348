"""Sparse against dense inference of pruned models: does exporting the mask pay?

For a masked LeNet-300-100 (``experiments.models.LeNet300``, every kernel pruned to the
same sparsity) and for one large Dense layer, the forward pass runs jitted as

* dense: the masked kernels as plain arrays (what a pruned model costs untouched);
* BCOO / BCSR: ``jaxsparse.export.to_sparse(..., format=...)`` and ``mlp_apply``;

at 90/95/98/99% sparsity and batch sizes 1 and 128; then a 2:4 N:M mask (magnitude, 50%)
with the packed form (``format="nm"``) and BCSR against dense. Each figure is the median
over repeats in which the methods run interleaved, in a rotating order, so drift in the
machine's load hits them alike; each repeat times enough back-to-back calls to last a
few milliseconds. Every sparse output is checked against the dense one first.

Ratios are dense time / sparse time: above 1 the sparse form wins.

Run::

    python -m experiments.bench.export           # full, a few minutes on 2 CPU cores
    python -m experiments.bench.export --quick   # smoke test, < 20 s
    jaxsparse bench --sections export            # the same, as a section of the bench
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import timing
from experiments.models import LeNet300
from jaxsparse import export

LENET_LAYERS = ("hidden_0", "hidden_1", "output")
TITLE = "Sparse inference export: BCOO / BCSR / N:M packed against dense"


def _random_mask(shape, sparsity: float, rng) -> np.ndarray:
    """Exactly ``round((1 - sparsity) * n)`` alive entries at random positions."""
    n = int(np.prod(shape))
    alive = round((1.0 - sparsity) * n)
    return (rng.permutation(n) < alive).reshape(shape)


def _nm_mask(kernel: np.ndarray, n: int, m: int) -> np.ndarray:
    """Magnitude N:M along axis 0: the ``n`` largest ``|w|`` of every ``m`` inputs."""
    g = np.abs(kernel).reshape(kernel.shape[0] // m, m, -1)
    ranks = np.argsort(np.argsort(-g, axis=1, kind="stable"), axis=1)
    return (ranks < n).reshape(kernel.shape)


def _models(quick: bool) -> dict[str, tuple[dict, int, Sequence[str]]]:
    """``{name: (params, n_in, layer paths)}``, float32 with random weights."""
    lenet = LeNet300().init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    width = 512 if quick else 4096
    k = jax.random.normal(jax.random.key(1), (width, width)) / np.sqrt(width)
    big = {"Dense_0": {"kernel": k, "bias": jnp.zeros(width)}}
    return {
        "LeNet-300-100": (lenet, 784, LENET_LAYERS),
        f"Dense {width}x{width}": (big, width, ("Dense_0",)),
    }


def _kernel_mask(params, make: Callable[[np.ndarray], np.ndarray]):
    return jax.tree.map(
        lambda p: jnp.asarray(make(np.asarray(p))) if p.ndim == 2 else jnp.ones_like(p, bool),
        params,
    )


def _nbytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def _case(params, mask, n_in, layers, batch, formats, repeats, nm=None) -> dict:
    x = jax.random.normal(jax.random.key(2), (batch, n_in))
    apply = jax.jit(lambda p, x: export.mlp_apply(p, x, layers=layers))
    trees = {"dense": export.to_sparse(params, mask, where=lambda *_: False)}
    for fmt in formats:
        n, m = nm or (None, None)
        trees[fmt] = export.to_sparse(params, mask, format=fmt, n=n, m=m)
    # Same outputs before any timing, checked at full float32 precision: on a GPU the
    # timed dense matmul may run in TF32 (JAX's default there), the sparse kernels do not.
    with jax.default_matmul_precision("highest"):
        want = apply(trees["dense"], x)
        for fmt, tree in trees.items():
            np.testing.assert_allclose(apply(tree, x), want, rtol=2e-4, atol=2e-4, err_msg=fmt)
    calls = {fmt: (lambda t=tree: apply(t, x)) for fmt, tree in trees.items()}
    t = timing.interleaved(calls, repeats, warmup=1, min_seconds=3e-3)
    return {
        fmt: (timing.median(t.wall[fmt]) * 1e3, _nbytes(trees[fmt]), timing.median(t.cpu[fmt]))
        for fmt in trees
    }


def measure(quick: bool = False) -> dict:
    """Runs the benchmark: ``{"title", "rows", "markdown"}``, rows one per measurement.

    Each row: ``model``, ``pattern`` (``"90%"``... or ``"2:4"``), ``batch``, ``method``
    (``bcoo``, ``bcsr``, ``nm``), ``ms``, ``dense_ms``, ``ratio`` (dense / sparse, > 1:
    sparse wins), ``bytes_ratio`` (stored bytes of the model / dense).
    """
    sparsities = (0.95,) if quick else (0.9, 0.95, 0.98, 0.99)
    batches = (1, 128)
    repeats = 3 if quick else 9
    rng = np.random.default_rng(0)
    rows = []

    def add(model, pattern, batch, res):
        dense_ms, dense_bytes, dense_cpu = res["dense"]
        for method, (ms, nbytes, cpu) in res.items():
            if method != "dense":
                rows.append(
                    dict(model=model, pattern=pattern, batch=batch, method=method, ms=ms,
                         dense_ms=dense_ms, ratio=dense_ms / ms,
                         bytes_ratio=nbytes / dense_bytes)
                )  # fmt: skip
                if timing.on_cpu():
                    rows[-1]["cpu_ratio"] = dense_cpu / cpu

    for name, (params, n_in, layers) in _models(quick).items():
        for s in sparsities:
            mask = _kernel_mask(params, lambda k, s=s: _random_mask(k.shape, s, rng))
            for b in batches:
                res = _case(params, mask, n_in, layers, b, ("bcoo", "bcsr"), repeats)
                add(name, f"{s:.0%}", b, res)
        # N:M needs m | n_in of every layer: LeNet's 100 -> 10 output layer is 4 | 100
        mask = _kernel_mask(params, lambda k: _nm_mask(k, 2, 4))
        for b in batches:
            res = _case(params, mask, n_in, layers, b, ("nm", "bcsr"), repeats, nm=(2, 4))
            add(name, "2:4", b, res)
    return {"title": TITLE, "rows": rows, "markdown": _markdown(rows, repeats)}


def _markdown(rows: list[dict], repeats: int) -> str:
    def table(header, body):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)

    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((r["model"], r["pattern"], r["batch"]), {})[r["method"]] = r
    unstructured, nm = [], []
    for (model, pattern, batch), got in by_key.items():
        first = next(iter(got.values()))
        if pattern == "2:4":
            p, c = got["nm"], got["bcsr"]
            nm.append([model, str(batch), f"{first['dense_ms']:.3f}", f"{p['ms']:.3f}",
                       f"{c['ms']:.3f}", timing.ratio_text(p), timing.ratio_text(c),
                       f"{p['bytes_ratio']:.2f}"])  # fmt: skip
        else:
            o, c = got["bcoo"], got["bcsr"]
            unstructured.append([model, pattern, str(batch), f"{first['dense_ms']:.3f}",
                                 f"{o['ms']:.3f}", f"{c['ms']:.3f}", timing.ratio_text(o),
                                 timing.ratio_text(c), f"{c['bytes_ratio']:.2f}"])  # fmt: skip
    head = (
        f"**{TITLE}**. Jitted forward pass, ms a call (median of {repeats} interleaved "
        "repeats); ratio = dense ms / sparse ms, above 1 the sparse form wins. Dense runs "
        "the masked kernels as plain arrays at JAX's default matmul precision (TF32 on a "
        "recent NVIDIA GPU). Bytes: the stored model / the dense one."
    )
    t1 = table(
        ["model", "sparsity", "batch", "dense ms", "BCOO ms", "BCSR ms", "dense/BCOO",
         "dense/BCSR", "BCSR bytes"],
        unstructured,
    )  # fmt: skip
    t2 = table(
        ["model", "batch", "dense ms", "N:M packed ms", "BCSR ms", "dense/N:M", "dense/BCSR",
         "N:M bytes"],
        nm,
    )  # fmt: skip
    return f"{head}\n\n{t1}\n\n**2:4 (magnitude, 50% sparse)**\n\n{t2}\n"


def _device_line() -> str:
    dev = jax.devices()[0]
    return (
        f"JAX {jax.__version__}, {dev.platform} ({dev.device_kind}), {len(jax.devices())} "
        f"device(s), {platform.processor() or platform.machine()}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    print(_device_line(), flush=True)
    print()
    print(measure(args.quick)["markdown"])
    print(f"total benchmark time: {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
