"""Memory rows: bytes of mask and rewind state per parameter while training, and
bytes per weight of a ticket saved by ``checkpoint.save_ticket`` (files on disk)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from experiments.bench import timing


def _nbytes(tree) -> int:
    import jax

    return sum(x.nbytes for x in jax.tree.leaves(tree))


def _files(path: Path, suffix: str = "") -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name.endswith(suffix))


def measure(quick: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxsparse as js
    from experiments.models import LeNet300
    from jaxsparse import checkpoint

    model = LeNet300()
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    n = sum(x.size for x in jax.tree.leaves(params))
    state = js.SparseTrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
    mask = js.prune(js.scores.magnitude(params), state.mask, 0.9, scope="global")
    rewind = _nbytes((state.rewind_params, state.rewind_opt_state))
    rows = [
        {"what": "mask in training (bool per weight)", "bytes_per_param": _nbytes(mask) / n},
        {
            "what": "rewind state in training (params at k = 0; Adam's state is "
            "made again when rewinding)",
            "bytes_per_param": rewind / n,
        },
    ]
    with tempfile.TemporaryDirectory() as d:
        for sparsity in (0.9, 0.98):
            m = js.prune(
                js.scores.magnitude(params), js.mask_like(params), sparsity, scope="global"
            )
            path = Path(d) / f"ticket{sparsity}"
            checkpoint.save_ticket(path, m, js.apply_mask(params, m), {"sparsity": sparsity})
            total = _files(path)
            packed = _nbytes(js.pack(m))
            rows.append(
                {
                    "what": f"saved ticket at {sparsity:.0%} sparsity, all files",
                    "bytes_per_param": total / n,
                    "files_bytes": total,
                }
            )
            alive_bytes = 4 * int(sum(int(x.sum()) for x in jax.tree.leaves(m)))
            rows.append(
                {
                    "what": f"  of which the mask, packed ({sparsity:.0%})",
                    "bits_per_param": 8 * packed / n,
                    "goal": "<= 1 bit (+ a leaf's last byte)",
                    "met": packed <= sum(-(-x.size // 8) for x in jax.tree.leaves(m)),
                }
            )
            rows.append(
                {
                    "what": f"  files less the alive float32 values ({sparsity:.0%}): "
                    "mask + format overhead",
                    "bits_per_param": 8 * (total - alive_bytes) / n,
                }
            )
    note = (
        f"LeNet-300-100 ({n:,} params, float32, Adam). A ticket stores the bit-packed "
        "mask and only the alive weights; the file sizes are measured on disk."
    )
    cols = [
        ("what", "what"),
        ("bytes_per_param", "bytes / param"),
        ("bits_per_param", "bits / param"),
        ("files_bytes", "bytes on disk"),
        ("goal", "goal"),
        ("met", "met"),
    ]
    return timing.section("Memory", rows, note, cols)
