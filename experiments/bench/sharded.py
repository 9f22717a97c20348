"""A model-shaped tree sharded FSDP-style over every device of the host: each leaf
split along its largest axis that the device count divides (replicated where none
does), on a 1-D mesh with Auto and with Explicit axes. Programs are compiled from
shapes only (nothing is allocated, so the GPT-shaped 1.3B tree fits any machine):
global and layerwise ``js.prune``, ``imp_round`` and a ``masked(adam)`` update.

Per program and axis type: compile seconds (wall), XLA's per-device memory analysis
(arguments, outputs, temporaries) next to the per-device bytes of the params, and the
all-gathers in the optimised HLO: how many, and the largest one's result against what
the design gathers, the threshold search's strided sample (at most 2048 keys of 4 B a
prunable leaf), and against the smallest whole weight matrix (>= 2**14 entries). That
masks equal a one-device prune is tested by value on a smaller tree
(``tests/test_sharded_core.py``).

Run it with several devices: on a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=8
jaxsparse bench --sections sharded``; ``JAXSPARSE_BENCH_SHARDED_TREE`` picks the tree
(default ``gpt_1p3b``; ``--quick``: ``tiny``). With one device the section says so and
measures nothing.
"""

from __future__ import annotations

import os
import re
import sys
import time

import numpy as np

from experiments.bench import timing

_DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "s32": 4, "u32": 4, "s8": 1, "u8": 1}
_GATHER = re.compile(r"= (.*?) all-gather(?:-start)?\(")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")


def fsdp_spec(shape: tuple[int, ...], n: int, axis: str = "fsdp"):
    """The partition spec splitting ``shape``'s largest axis that ``n`` divides over
    ``axis``; replicated when none does."""
    from jax.sharding import PartitionSpec as P

    for i in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[i] % n == 0 and shape[i] >= n:
            return P(*[axis if j == i else None for j in range(len(shape))])
    return P()


def gathers(hlo_text: str) -> list[int]:
    """Result bytes of every all-gather in an optimised HLO module's text."""
    out = []
    for result in _GATHER.findall(hlo_text):  # a shape, or a tuple of them
        total = 0
        for dtype, dims in _SHAPE.findall(result):
            size = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
            total += size * _DTYPE_BYTES.get(dtype, 4)
        out.append(total)
    return out


def sample_bound_bytes(shapes) -> int:
    """The most the threshold search gathers: its strided sample, at most
    ``jaxsparse._select._SAMPLE`` keys (4 B) of every prunable leaf (default ``where``)."""
    import jax

    from jaxsparse._select import _SAMPLE
    from jaxsparse.filters import prunable

    return 4 * _SAMPLE * sum(jax.tree.leaves(prunable(shapes)))


def smallest_matrix_bytes(shapes) -> int:
    """Bytes of the smallest weight matrix: a leaf of >= 2 dims and >= 2**14 entries
    (attention's (heads, head_dim) biases have 2 dims but are not what a gather of a
    kernel would mean)."""
    import jax

    sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(shapes) if len(x.shape) >= 2]
    return 4 * min((n for n in sizes if n >= 2**14), default=max(sizes, default=0))


def measure_tree(name: str, axis_type) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import NamedSharding

    import jaxsparse as js
    from experiments.bench import model_trees

    n = jax.device_count()
    mesh = jax.make_mesh((n,), ("fsdp",), axis_types=(axis_type,))

    def placed(tree, dtype=None):
        def one(s):
            sharding = NamedSharding(mesh, fsdp_spec(tuple(s.shape), n))
            return jax.ShapeDtypeStruct(s.shape, dtype or s.dtype, sharding=sharding)

        return jax.tree.map(one, tree)

    shapes = model_trees.shapes(name)
    params, mask = placed(shapes), placed(shapes, jnp.bool_)
    smallest_kernel = smallest_matrix_bytes(shapes)
    bound = sample_bound_bytes(shapes)
    per_device_params = 4 * model_trees.summary(shapes)["params"] / n  # float32
    madam = js.masked(optax.adam(1e-3))
    with jax.set_mesh(mesh):
        state = placed(
            jax.eval_shape(
                lambda p: js.SparseTrainState.create(apply_fn=None, params=p, tx=optax.adam(1e-3)),
                shapes,
            )
        )
        m_state = placed(jax.eval_shape(madam.init, shapes))
    programs = {
        "prune global": (lambda s, m: js.prune(s, m, 0.2, scope="global"), (params, mask)),
        "prune layerwise": (lambda s, m: js.prune(s, m, 0.2, scope="layerwise"), (params, mask)),
        "imp_round": (lambda st: js.imp_round(st, fraction=0.2), (state,)),
        "masked(adam) update": (madam.update, (params, m_state, params)),
    }
    rows = []
    for what, (fn, args) in programs.items():
        with jax.set_mesh(mesh):
            t0 = time.perf_counter()
            compiled = jax.jit(fn).lower(*args).compile()
            seconds = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        found = gathers(compiled.as_text())
        print(f"  {name} ({axis_type.name}): {what} compiled in {seconds:.1f} s", file=sys.stderr)
        rows.append(
            {
                "tree": name,
                "axes": axis_type.name,
                "what": what,
                "devices": n,
                "compile_s": seconds,
                "params_mb_per_device": per_device_params / 2**20,
                "args_mb": mem.argument_size_in_bytes / 2**20,
                "out_mb": mem.output_size_in_bytes / 2**20,
                "temp_mb": mem.temp_size_in_bytes / 2**20,
                "temp_over_params": mem.temp_size_in_bytes / per_device_params,
                "all_gathers": len(found),
                "largest_gather_mb": max(found, default=0) / 2**20,
                "sample_bound_mb": bound / 2**20,
                "smallest_kernel_mb": smallest_kernel / 2**20,
                "only_samples_gathered": max(found, default=0) <= bound,
            }
        )
    return rows


COLUMNS = [
    ("axes", "axes"),
    ("what", "what"),
    ("compile_s", "compile s"),
    ("params_mb_per_device", "params MB / device"),
    ("args_mb", "arguments MB"),
    ("out_mb", "outputs MB"),
    ("temp_mb", "temporaries MB"),
    ("temp_over_params", "temporaries / params"),
    ("all_gathers", "all-gathers"),
    ("largest_gather_mb", "largest gather MB"),
    ("sample_bound_mb", "sample bound MB"),
    ("only_samples_gathered", "only samples gathered"),
]


def measure(quick: bool) -> dict:
    import jax
    from jax.sharding import AxisType

    name = "tiny" if quick else os.environ.get("JAXSPARSE_BENCH_SHARDED_TREE", "gpt_1p3b")
    n = jax.device_count()
    if n < 2:
        note = (
            f"Skipped: {n} device. Run with several, e.g. "
            "XLA_FLAGS=--xla_force_host_platform_device_count=8 on a CPU."
        )
        return timing.section("Sharded, FSDP-style", [], note, COLUMNS)
    rows = []
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        rows += measure_tree(name, axis_type)
    info = rows[0]
    note = (
        f"{name}, every leaf split over {n} devices along its largest divisible axis "
        f"(1-D mesh 'fsdp'); {info['params_mb_per_device']:.0f} MB of float32 params per "
        "device. Compiled from shapes only (nothing allocated); memory is XLA's analysis "
        "of the compiled program, per device. The search gathers only its strided sample "
        f"(at most {info['sample_bound_mb']:.2f} MB here); the smallest whole weight matrix "
        f"is {info['smallest_kernel_mb']:.1f} MB."
    )
    return timing.section("Sharded, FSDP-style", rows, note, COLUMNS)
