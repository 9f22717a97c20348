"""Capture of each layer's calibration inputs, by Flax's own hooks, as running sums.

While a forward pass is traced, every call of a Dense, DenseGeneral or Conv layer (Linen:
``nn.Dense``, ``nn.DenseGeneral``, ``nn.Conv``, seen through ``nn.intercept_methods``;
NNX: ``nnx.Linear``, ``nnx.LinearGeneral``, ``nnx.Conv``, seen through the module copies
:func:`nnx_forward` makes) goes through a :class:`_Recorder`. A layer is known by its
kernel: the very array the caller passed in ``params``, so its pytree path names it.
Its input becomes rows ``X`` of ``d_in`` features (a conv's input its im2col patches,
``d_in = kh * kw * cin`` in the kernel's order), and only ``XᵀX``, the per-feature sums of
squares and the row count leave the trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Collection, Iterator
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("jaxsparse_oneshot", default=None)


class LayerStats(NamedTuple):
    """What one layer's calibration inputs leave behind, summed over batches (float32).

    Attributes:
      gram: ``(d_in, d_in)``, ``XᵀX`` (``None`` when not asked for).
      sq_norms: ``(d_in,)``, ``Σ_t x_tj²`` for every input feature ``j``.
      count: the number of rows (tokens, patches) summed.
    """

    gram: jax.Array | None
    sq_norms: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, by design


class CallInfo(NamedTuple):
    path: str
    input_id: int
    in_axes: int


class Unfit(ValueError):
    """A layer's input does not fit its kernel (the batch does not fit the model)."""


def _replicated(x):
    """``x`` gathered when it lives on a mesh with Explicit axes (a Gram matrix of a
    sharded feature axis would name the mesh axis twice); elsewhere XLA decides."""
    aval = jax.typeof(x)
    if jax.sharding.AxisType.Explicit in getattr(aval.sharding.mesh, "axis_types", ()):
        return jax.sharding.reshard(x, jax.sharding.PartitionSpec())
    return x


def _rows(kind: str, module: Any, kernel: jax.Array, x: jax.Array, path: str) -> jax.Array:
    """The layer's input as ``(rows, d_in)`` rows in the kernel's input order."""
    x = _replicated(jnp.asarray(x))
    kshape = tuple(jnp.shape(kernel))
    if kind == "dense":
        axes = (x.ndim - 1,)
    elif kind == "general":
        batch = getattr(module, "batch_dims", None) or getattr(module, "batch_axis", None)
        if batch:
            raise ValueError(f"oneshot: layer '{path}' has batch axes; they are not supported")
        axis = module.axis if isinstance(module.axis, tuple | list) else (module.axis,)
        axes = tuple(a % x.ndim for a in axis)
    else:
        return _patches(module, kernel, x, path)
    got = tuple(x.shape[a] for a in axes)
    if got != kshape[: len(axes)]:
        raise Unfit(
            f"layer '{path}' got inputs of shape {x.shape}: the contracted axes {got} do "
            f"not fit its kernel {kshape}"
        )
    x = jnp.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    return x.reshape(-1, math.prod(got)).astype(jnp.float32)


def _patches(module: Any, kernel: jax.Array, x: jax.Array, path: str) -> jax.Array:
    """im2col by the layer's own convolution with an identity kernel: exact (one nonzero
    product a sum) and with the layer's padding, strides and dilations."""
    *window, cin, _ = jnp.shape(kernel)
    if getattr(module, "feature_group_count", 1) != 1:
        raise ValueError(f"oneshot: layer '{path}' is a grouped conv; not supported")
    if x.shape[-1] != cin:
        raise Unfit(
            f"layer '{path}' got inputs of shape {x.shape}, its kernel "
            f"{tuple(jnp.shape(kernel))} takes {cin} channels"
        )
    d_in = math.prod(window) * cin
    eye = jnp.eye(d_in, dtype=jnp.float32).reshape(*window, cin, d_in)
    hi = jax.lax.Precision.HIGHEST
    if hasattr(module, "scope"):  # Linen
        conv = module.clone(parent=None, features=d_in, use_bias=False, precision=hi, name=None)
        out = conv.apply({"params": {"kernel": eye}}, x.astype(jnp.float32))
    else:
        from flax import nnx

        conv = nnx.Conv(
            cin,
            d_in,
            module.kernel_size,
            module.strides,
            padding=module.padding,
            input_dilation=module.input_dilation,
            kernel_dilation=module.kernel_dilation,
            use_bias=False,
            precision=hi,
            rngs=nnx.Rngs(0),
        )
        conv.kernel.set_value(eye)
        out = conv(x.astype(jnp.float32))
    return out.reshape(-1, d_in)


class _Recorder:
    """Lives for one trace. ``want=None``: only list the calls; else sum stats for the
    paths in ``want``."""

    def __init__(
        self, paths_of: dict[int, str], want: Collection[str] | None = None, gram: bool = True
    ) -> None:
        self.paths_of, self.want, self.gram = paths_of, want, gram
        self.calls: list[CallInfo] = []
        self.keep: list[Any] = []  # inputs stay alive, so their ids stay unique
        self.stats: dict[str, LayerStats] = {}
        self.inside: list[str] = []
        self.busy = False

    def on_call(
        self, kind: str, module: Any, kernel: jax.Array, x: jax.Array, call: Callable[[], Any]
    ) -> Any:
        path = self.paths_of.get(id(kernel))
        if path is None or self.busy:
            return call()
        in_axes = 1 if kind == "dense" else jnp.ndim(kernel) - 1
        if kind == "general":
            axis = module.axis if isinstance(module.axis, tuple | list) else (module.axis,)
            in_axes = len(axis)
        self.busy = True
        try:
            rows = _rows(kind, module, kernel, x, path)
        finally:
            self.busy = False
        self.keep.append(x)
        self.calls.append(CallInfo(path, id(x), in_axes))
        if self.want is not None and path in self.want:
            g = rows.T @ rows if self.gram else None
            new = LayerStats(g, jnp.sum(rows * rows, axis=0), jnp.float32(rows.shape[0]))
            old = self.stats.get(path)
            self.stats[path] = new if old is None else _add(old, new)
        self.inside.append(path)
        out = call()
        self.inside.pop()
        return out


def _add(a: LayerStats, b: LayerStats) -> LayerStats:
    g = None if a.gram is None else a.gram + cast(jax.Array, b.gram)  # both or neither
    return LayerStats(g, a.sq_norms + b.sq_norms, a.count + b.count)


def add_stats(a: dict, b: dict) -> dict:
    """Two ``{path: LayerStats}`` summed path by path."""
    return {p: _add(a[p], b[p]) for p in a}


def _linen_interceptor(next_fun, args, kwargs, context):
    import flax.linen as nn

    rec = _ACTIVE.get()
    module = context.module
    if rec is None or context.method_name != "__call__" or not args:
        return next_fun(*args, **kwargs)
    if isinstance(module, nn.Dense):
        kind = "dense"
    elif isinstance(module, nn.DenseGeneral):
        kind = "general"
    elif isinstance(module, nn.Conv):
        kind = "conv"
    else:
        return next_fun(*args, **kwargs)
    kernel = module.variables.get("params", {}).get("kernel")
    return rec.on_call(kind, module, kernel, args[0], lambda: next_fun(*args, **kwargs))


@contextlib.contextmanager
def recording(rec: _Recorder) -> Iterator[_Recorder]:
    """Routes every Linen and NNX layer call to ``rec`` while the block runs."""
    import flax.linen as nn

    token = _ACTIVE.set(rec)
    try:
        with nn.intercept_methods(_linen_interceptor):
            yield rec
    finally:
        _ACTIVE.reset(token)


_RECORDING_CLASSES: dict[type, type] = {}


def _recording_class(cls: type, kind: str) -> type:
    """A subclass of an NNX layer whose ``__call__`` reports to the active recorder."""
    if cls not in _RECORDING_CLASSES:

        def __call__(self, x, *args, **kwargs):
            rec = _ACTIVE.get()

            def call():
                return cls.__call__(self, x, *args, **kwargs)

            if rec is None:
                return call()
            return rec.on_call(kind, self, self.kernel.get_value(), x, call)

        _RECORDING_CLASSES[cls] = type(cls.__name__, (cls,), {"__call__": __call__})
    return _RECORDING_CLASSES[cls]


def nnx_forward(
    model: Any, call: Callable[[Any, Any], Any] | None = None
) -> tuple[Callable[[Any, Any], Any], Any]:
    """An NNX model as ``(apply_fn, params)`` for :func:`jaxsparse.oneshot.prune`.

    ``params`` is the pure dict of the model's ``nnx.Param`` state; ``apply_fn(params,
    batch)`` merges a copy of the model with them and calls ``call(model, batch)``
    (default ``model(batch)``). In that copy (only there) each ``nnx.Linear``,
    ``nnx.LinearGeneral`` and ``nnx.Conv`` reports its input while a capture runs. Put
    pruned params back with ``nnx.update(model, params)``.

    Args:
      model: an ``nnx.Module``.
      call: ``(model, batch) -> output``, e.g. ``lambda m, b: m(b["x"], train=False)``.

    Returns:
      ``(apply_fn, params)``.

    Examples:
        >>> from flax import nnx
        >>> apply_fn, params = js.oneshot.nnx_forward(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
        >>> sorted(params), apply_fn(params, jnp.ones((1, 3))).shape
        (['bias', 'kernel'], (1, 2))

    References:
      Flax NNX, "split/merge" (the functional API).
    """
    from flax import nnx

    call = call or (lambda m, batch: m(batch))
    graphdef, state, rest = cast(
        tuple[nnx.GraphDef[Any], nnx.State, nnx.State], nnx.split(model, nnx.Param, ...)
    )
    params = nnx.to_pure_dict(state)
    kinds = ((nnx.Linear, "dense"), (nnx.LinearGeneral, "general"), (nnx.Conv, "conv"))

    def apply_fn(p, batch):
        st = jax.tree.map(lambda v: v, state)
        nnx.replace_by_pure_dict(st, p)
        m = nnx.merge(graphdef, st, rest)
        for _, sub in nnx.iter_graph(m):
            for cls, kind in kinds:
                if type(sub) is cls:
                    sub.__class__ = _recording_class(cls, kind)
        return call(m, batch)

    return apply_fn, params
