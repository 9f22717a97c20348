"""The one call: capture, then prune layer by layer (sequentially by default)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.filters import Filter, check_structure, path_str, resolve_filter
from jaxsparse.masks import explicit_spec, mask_like
from jaxsparse.oneshot import _layers, _sparsegpt
from jaxsparse.oneshot._calibrate import _groups, _plan, _resolve_model, _stats, layer_kernels

METHODS = ("magnitude", "wanda", "sparsegpt")


class OneShotResult(NamedTuple):
    """What :func:`prune` returns.

    Attributes:
      params: the pruned params (zero where ``mask`` is ``False``; SparseGPT's surviving
        weights corrected), with the input params' structure.
      mask: a ``bool`` mask mirroring ``params``; all-``True`` for leaves not pruned.
      errors: ``{path: ‖XW − XŴ‖ / ‖XW‖}`` per pruned layer on the inputs it was pruned
        with (only with ``errors=True`` or ``method="sparsegpt"``).
    """

    params: chex.ArrayTree
    mask: chex.ArrayTree
    errors: dict[str, jax.Array]


def _one_layer(kernel, stats, *, method, sp, nm, compare, in_axes, opts):
    shape = kernel.shape
    k2 = kernel.reshape(math.prod(shape[:in_axes]), -1)
    if method == "sparsegpt":
        blocksize, damp = opts
        new, keep = _sparsegpt.sparsegpt(
            k2, stats.gram, sp, nm=nm, count=stats.count, blocksize=blocksize, damp=damp
        )
    else:
        if method == "wanda":
            keep = _layers.wanda(k2, stats.sq_norms, sp, nm=nm)
        elif compare == "layer" and nm is None:
            keep = _layers.magnitude(kernel, sp).reshape(k2.shape)
        else:
            keep = _layers.magnitude(k2, sp, nm=nm, compare=compare)
        new = jnp.where(keep, k2, jnp.zeros((), k2.dtype))
    err = jnp.float32(jnp.nan)
    if stats is not None and stats.gram is not None:
        err = _layers.reconstruction_error(k2, new, stats.gram)
    return new.reshape(shape), keep.reshape(shape), err


def _solve(kernel, stats, **static):
    spec = explicit_spec(kernel)
    if spec is None:
        new, keep, err = _one_layer(kernel, stats, **static)
        sharding = getattr(kernel, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding) and not isinstance(
            kernel, jax.core.Tracer
        ):  # Auto axes: put the layer back where it was
            new, keep = jax.device_put((new, keep), sharding)
        return new, keep, err
    # a kernel on a mesh with Explicit axes: XLA lays out the solve, outputs go back
    # onto the kernel's layout (one layer at a time; never the whole model)
    fn = jax.sharding.auto_axes(
        functools.partial(_one_layer, **static),
        out_sharding=(spec, spec, jax.sharding.PartitionSpec()),
    )
    return jax.jit(fn)(kernel, stats)


def _sparsities(
    sparsity: float | chex.ArrayTree | None,
    nm: tuple[int, int] | None,
    params: chex.ArrayTree,
    chosen: list[str],
) -> dict[str, float]:
    if nm is not None:
        if sparsity is not None:
            raise ValueError("oneshot: give sparsity= or nm=, not both")
        return dict.fromkeys(chosen, 0.0)
    if sparsity is None:
        raise ValueError("oneshot: give sparsity= (a fraction or a pytree of them) or nm=(n, m)")
    if isinstance(sparsity, int | float | np.number) or getattr(sparsity, "ndim", None) == 0:
        per = dict.fromkeys(chosen, sparsity)
    else:
        check_structure(sparsity, params, name="oneshot: sparsity", shapes=False)
        flat = jax.tree_util.tree_flatten_with_path(sparsity)[0]
        given = {path_str(p): v for p, v in flat}
        per = {p: given[p] for p in chosen}
    return {p: _layers.check_sparsity(v, f"oneshot: layer '{p}'") for p, v in per.items()}


def prune(
    apply_fn: Callable,
    params: chex.ArrayTree,
    batches: Iterable | None = None,
    *,
    method: str = "sparsegpt",
    sparsity: float | chex.ArrayTree | None = None,
    nm: tuple[int, int] | None = None,
    where: Filter = None,
    sequential: bool = True,
    compare: str = "layer",
    blocksize: int = 128,
    damp: float = 0.01,
    errors: bool = False,
) -> OneShotResult:
    """Prunes a pre-trained Flax model once, layer by layer, from calibration batches.

    Every kernel ``where`` picks must belong to a layer the forward pass calls (Linen
    ``nn.Dense``, ``nn.DenseGeneral`` (attention projections), ``nn.Conv``; NNX
    ``nnx.Linear``, ``nnx.LinearGeneral``, ``nnx.Conv``). Its inputs are captured with
    Flax's hooks while ``apply_fn`` runs, as ``XᵀX`` and per-feature squared norms summed
    in float32 batch by batch. A conv's inputs are its im2col patches, so its kernel
    ``(kh, kw, cin, cout)`` is pruned as a ``(kh * kw * cin, cout)`` matrix (N:M groups
    along that flattened input axis); an attention output kernel ``(heads, head_dim,
    d)`` as ``(heads * head_dim, d)``.

    **Sequential** (the default, as in both papers): layers are pruned in the order the
    forward pass calls them, and each layer's inputs are captured from the model with
    every earlier layer already pruned (layers fed the same array, such as query, key and
    value, are pruned together). ``sequential=False`` captures all layers once from the
    dense model: one pass over the batches instead of one per layer group.

    Methods: ``"magnitude"`` (no data needed; ``compare="layer"`` or ``"output"``),
    ``"wanda"`` (``|W_ij| · ‖X_i‖`` compared within each output) and ``"sparsegpt"``
    (mask and OBS weight update, :func:`sparsegpt`). Counts are exact: a layer at
    sparsity ``s`` loses exactly ``round(s * size)`` weights (per output
    ``round(s * d_in)`` for Wanda and ``compare="output"``), ties pruned by position, the
    earlier first. The host loop calls compiled programs and reads nothing back, so the
    whole call also runs under ``jit``.

    Args:
      apply_fn: ``apply_fn(params, batch)``, or an ``nnx.Module`` (see
        :func:`nnx_forward`).
      params: the pre-trained params (``None`` with an ``nnx.Module``).
      batches: the calibration batches (optional for ``"magnitude"``).
      method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
      sparsity: a fraction in ``[0, 1)`` for every layer, or a pytree mirroring
        ``params`` of per-leaf fractions (OWL-style allocations); or give ``nm``.
      nm: ``(n, m)``, e.g. ``(2, 4)``: ``n`` alive in every ``m`` consecutive inputs.
      where: which kernels to prune (default :func:`layer_kernels`).
      sequential: capture each layer after the earlier ones are pruned (default).
      compare: magnitude's comparison group, ``"layer"`` or ``"output"``.
      blocksize: SparseGPT's block width (columns updated together).
      damp: SparseGPT's damping, relative to the mean of ``XᵀX``'s diagonal.
      errors: also capture ``XᵀX`` for Wanda and magnitude and report each layer's
        relative reconstruction error.

    Returns:
      :class:`OneShotResult` ``(params, mask, errors)``: the mask goes into
      ``js.masked(...)``, ``js.export.to_sparse(..., format="nm")`` or a
      ``SparseTrainState``.

    Raises:
      ValueError: a batch that does not fit the model, a sparsity outside ``[0, 1)``, an
        ``m`` that does not divide a layer's inputs, or a selected kernel no captured call
        reaches, each naming the layer's path; a bad ``method``.

    Examples:
        >>> import flax.linen as nn
        >>> model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(4)])
        >>> x = jax.random.normal(jax.random.key(0), (64, 8))
        >>> params = model.init(jax.random.key(1), x)["params"]
        >>> out = js.oneshot.prune(lambda p, b: model.apply({"params": p}, b), params,
        ...                        [x[:32], x[32:]], method="wanda", nm=(2, 4))
        >>> float(js.sparsity(out.mask)), out.mask["layers_0"]["bias"].all().item()
        (0.5, True)

    References:
      Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
      One-Shot", ICML 2023; Sun et al., "A Simple and Effective Pruning Approach for Large
      Language Models" (Wanda), ICLR 2024; Yin et al., "Outlier Weighed Layerwise
      Sparsity (OWL)", ICML 2024.
    """
    if method not in METHODS:
        raise ValueError(f"oneshot: method must be one of {METHODS}, got {method!r}")
    if compare not in ("layer", "output"):
        raise ValueError(f"oneshot: compare must be 'layer' or 'output', got {compare!r}")
    apply_fn, params = _resolve_model(apply_fn, params)
    batches = None if batches is None else list(batches)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [path_str(p) for p, _ in flat]
    leaves = [x for _, x in flat]
    index = {p: i for i, p in enumerate(paths)}
    if batches is None:
        if method != "magnitude" or errors:
            raise ValueError(f"oneshot: method {method!r} needs calibration batches")
        pred = resolve_filter(layer_kernels if where is None else where)
        chosen = [p for p, x in zip(paths, leaves) if pred(p, x)]
        if not chosen:
            raise ValueError("oneshot: where= selects no leaf of the params")
        in_axes = {p: jnp.ndim(leaves[index[p]]) - 1 for p in chosen}
        groups = [[p] for p in chosen]
    else:
        chosen, calls = _plan(apply_fn, params, batches, where)
        in_axes = {c.path: c.in_axes for c in calls}
        groups = _groups(calls) if sequential else [[c for g in _groups(calls) for c in g]]
    per = _sparsities(sparsity, nm, params, chosen)
    for p in chosen:
        shape = jnp.shape(leaves[index[p]])
        if nm is not None:
            _layers.check_nm(nm, math.prod(shape[: in_axes[p]]), f"oneshot: layer '{p}'")
    nm_t = None if nm is None else tuple(int(v) for v in nm)
    opts = (int(blocksize), float(damp))
    gram = method == "sparsegpt" or errors
    masks = jax.tree.leaves(mask_like(params))
    errs: dict[str, jax.Array] = {}
    for group in groups:
        # batches is None only for magnitude without errors, which captures nothing
        current = jax.tree.unflatten(treedef, leaves)
        stats = (
            _stats(apply_fn, current, cast(list[Any], batches), frozenset(group), gram)
            if (batches is not None and method != "magnitude") or gram
            else {}
        )
        for p in group:
            new, keep, err = _solve(
                leaves[index[p]],
                stats.get(p),
                method=method,
                sp=per[p],
                nm=nm_t,
                compare=compare,
                in_axes=in_axes[p],
                opts=opts,
            )
            leaves[index[p]], masks[index[p]] = new, keep
            if gram:
                errs[p] = err
    return OneShotResult(
        jax.tree.unflatten(treedef, leaves), jax.tree.unflatten(treedef, masks), errs
    )
