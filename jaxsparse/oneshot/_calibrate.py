"""Calibration: which layers the forward pass calls, in what order, and their statistics."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable
from typing import Any, cast

import chex
import jax
import jax.numpy as jnp

from jaxsparse.filters import Filter, is_floating, path_str, resolve_filter
from jaxsparse.oneshot._capture import (
    CallInfo,
    LayerStats,
    Unfit,
    _Recorder,
    add_stats,
    nnx_forward,
    recording,
)


def layer_kernels(path: str, leaf: Any) -> bool:
    """Default ``where=`` of :func:`prune`: floating leaves named ``kernel``, ``ndim >= 2``.

    Examples:
        >>> js.oneshot.layer_kernels("Dense_0/kernel", jnp.ones((3, 2)))
        True
        >>> js.oneshot.layer_kernels("Embed_0/embedding", jnp.ones((3, 2)))
        False

    References:
      Frantar & Alistarh, "SparseGPT", ICML 2023 (the linear layers are pruned).
    """
    return path.rsplit("/", 1)[-1] == "kernel" and is_floating(leaf) and jnp.ndim(leaf) >= 2


def _resolve_model(model, params):
    try:
        from flax import nnx

        if isinstance(model, nnx.Module):
            if params is not None:
                raise ValueError("oneshot: with an NNX module pass params=None (they are its own)")
            return nnx_forward(model)
    except ImportError:  # pragma: no cover
        pass
    if not callable(model):
        raise TypeError(f"oneshot: expected apply_fn(params, batch) or an nnx.Module, got {model}")
    return model, params


def _paths_of(params: chex.ArrayTree) -> tuple[dict[int, str], list[str]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [path_str(p) for p, _ in flat]
    return {id(x): s for s, (_, x) in zip(paths, flat)}, paths


def _trace(
    apply_fn: Callable,
    params: chex.ArrayTree,
    batch: Any,
    index: int,
    want: Collection[str] | None,
    gram: bool,
) -> _Recorder:
    """Traces one forward pass; returns the recorder (its calls and stats)."""
    paths_of, _ = _paths_of(params)
    rec = _Recorder(paths_of, want, gram)
    try:
        with recording(rec):
            apply_fn(params, batch)
    except Unfit as e:
        raise ValueError(f"oneshot: calibration batch {index} does not fit the model: {e}") from e
    except ValueError as e:
        if "oneshot:" in str(e):
            raise
        raise _unfit(rec, index, e) from e
    except Exception as e:  # the model's own complaint, with the layer it was in
        raise _unfit(rec, index, e) from e
    return rec


def _unfit(rec: _Recorder, index: int, e: Exception) -> ValueError:
    where = f"in layer '{rec.inside[-1]}'" if rec.inside else "outside the prunable layers"
    after = f", after layer '{rec.calls[-1].path}'" if rec.calls and not rec.inside else ""
    return ValueError(
        f"oneshot: calibration batch {index} does not fit the model ({where}{after}): "
        f"{type(e).__name__}: {e}"
    )


def discover(apply_fn: Callable, params: chex.ArrayTree, batch: Any) -> list[CallInfo]:
    """The calls of the prunable layers in one forward pass, in order (shapes only)."""
    calls: list[CallInfo] = []

    def run(p, b):
        calls[:] = _trace(apply_fn, p, b, 0, None, False).calls

    jax.eval_shape(run, params, batch)
    return calls


_BATCH = [0]  # the batch being traced, for error messages (tracing is synchronous)


@functools.lru_cache(maxsize=64)
def _stats_fn(
    apply_fn: Callable, want: frozenset[str], gram: bool
) -> Callable[[chex.ArrayTree, Any], dict[str, LayerStats]]:
    """One compiled capture per model, layer group and batch shape, reused across calls
    (a study prunes the same model many times)."""
    return jax.jit(lambda p, b: _trace(apply_fn, p, b, _BATCH[0], want, gram).stats)


def _stats(
    apply_fn: Callable, params: chex.ArrayTree, batches: list, want: frozenset[str], gram: bool
) -> dict[str, LayerStats]:
    fn = _stats_fn(apply_fn, want, gram)
    total: dict[str, LayerStats] | None = None
    for i, batch in enumerate(batches):
        _BATCH[0] = i
        got = fn(params, batch)
        total = got if total is None else add_stats(total, got)
    return cast(dict[str, LayerStats], total)  # batches is not empty (_plan checks)


def capture(
    apply_fn: Callable, params: chex.ArrayTree, batches: Iterable, *, where: Filter = None
) -> dict[str, LayerStats]:
    """Every selected layer's input statistics over the calibration batches (dense model).

    Args:
      apply_fn: ``apply_fn(params, batch)`` running the model (Linen: e.g.
        ``lambda p, x: model.apply({"params": p}, x)``), or an ``nnx.Module``.
      params: the params pytree (``None`` with an ``nnx.Module``).
      batches: an iterable of calibration batches, each what ``apply_fn`` takes.
      where: which kernels (default :func:`layer_kernels`).

    Returns:
      ``{kernel path: LayerStats}``, with ``gram = XᵀX`` summed in float32 batch by batch
      (one batch's activations are alive at a time).

    Raises:
      ValueError: as :func:`prune`.

    Examples:
        >>> import flax.linen as nn
        >>> model = nn.Dense(2)
        >>> params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
        >>> x = jnp.arange(6.0).reshape(2, 3)
        >>> st = js.oneshot.capture(lambda p, b: model.apply({"params": p}, b), params, [x])
        >>> st["kernel"].gram.tolist(), float(st["kernel"].count)
        ([[9.0, 12.0, 15.0], [12.0, 17.0, 22.0], [15.0, 22.0, 29.0]], 2.0)

    References:
      Frantar & Alistarh, "SparseGPT", ICML 2023; Sun et al., "Wanda", ICLR 2024.
    """
    apply_fn, params = _resolve_model(apply_fn, params)
    batches = list(batches)
    chosen, _ = _plan(apply_fn, params, batches, where)
    return _stats(apply_fn, params, batches, frozenset(chosen), True)


def _plan(
    apply_fn: Callable, params: chex.ArrayTree, batches: list, where: Filter
) -> tuple[list[str], list[CallInfo]]:
    if not batches:
        raise ValueError("oneshot: no calibration batches")
    pred = resolve_filter(layer_kernels if where is None else where)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    chosen = [path_str(p) for p, x in flat if pred(path_str(p), x)]
    if not chosen:
        raise ValueError("oneshot: where= selects no leaf of the params")
    calls = discover(apply_fn, params, batches[0])
    reached = {c.path for c in calls}
    for path in chosen:
        if path not in reached:
            raise ValueError(
                f"oneshot: layer '{path}' has no captured input: it is not the kernel of an "
                f"nn.Dense/DenseGeneral/Conv (nnx.Linear/LinearGeneral/Conv) called in the "
                f"calibration forward pass (narrow where=)"
            )
    return chosen, [c for c in calls if c.path in set(chosen)]


def _groups(calls: list[CallInfo]) -> list[list[str]]:
    """Layers in call order; consecutive layers fed the very same input array (an
    attention block's query, key and value) form one group, pruned from one capture."""
    groups: list[list[str]] = []
    seen: set[str] = set()
    prev: CallInfo | None = None
    for c in calls:
        if c.path not in seen:
            seen.add(c.path)
            shared = prev is not None and prev.input_id == c.input_id
            if shared and groups and cast(CallInfo, prev).path in groups[-1]:
                groups[-1].append(c.path)
            else:
                groups.append([c.path])
        prev = c
    return groups
