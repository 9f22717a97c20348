"""Group specs for the common cases: neurons, conv channels, attention heads.

The helpers read the params (a Linen params or variables dict, an NNX ``State`` or its
pure dict) and return a plain group spec, ready to edit: add an entry to a set (a
slimming coefficient, a residual branch) or merge the dicts of several calls. Each
set is named by its layer's module path.

The regexes they write match the module's own path, optionally under ``params/`` or
``batch_stats/`` and optionally followed by NNX's ``/value``, so one spec serves
the params, the whole variables dict (BatchNorm statistics included) and an NNX state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jaxsparse.filters import path_str

_NORM_LEAVES = ("scale", "bias", "mean", "var")


def _pattern(module: str, leaves: Sequence[str]) -> str:
    alt = "|".join(re.escape(n) for n in leaves)
    prefix = re.escape(module) + "/" if module else ""
    return rf"^(?:(?:params|batch_stats)/)?{prefix}(?:{alt})(?:/value)?$"


def _modules(tree: chex.ArrayTree) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{module_path: {leaf_name: shape}}``; a top-level ``params`` collection is entered."""
    if isinstance(tree, Mapping) and "params" in tree:
        tree = tree["params"]
    mods: dict[str, dict[str, tuple[int, ...]]] = {}
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        p = path_str(path)
        p = p.removesuffix("/value")
        module, _, leaf = p.rpartition("/")
        mods.setdefault(module, {})[leaf] = tuple(jnp.shape(x))
    return mods


def _natural(path: str) -> list[tuple[int, int, str]]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path)]


def _layers(mods: Mapping[str, Mapping[str, Any]], ndims: tuple[int, ...]) -> list[str]:
    found = [m for m, leaves in mods.items() if len(leaves.get("kernel", ())) in ndims]
    return sorted(found, key=_natural)


def _chain(
    mods: Mapping[str, Mapping[str, Any]],
    layers: Sequence[str],
    norms: Sequence[str | None],
    consumer: str | None,
    who: str,
) -> dict[str, list[tuple[str, int]]]:
    for name in [*layers, *(n for n in norms if n), *([consumer] if consumer else [])]:
        if name not in mods:
            raise ValueError(f"{who}: no module {name!r} in the params")
    for name in layers:
        if "kernel" not in mods[name]:
            raise ValueError(f"{who}: module {name!r} has no kernel")
    spec = {}
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else consumer
        if nxt is None:
            break
        width, fan_in = mods[layer]["kernel"][-1], mods[nxt].get("kernel", (None, None))[-2]
        if width != fan_in:
            raise ValueError(
                f"{who}: '{layer}/kernel' has {width} outputs but '{nxt}/kernel' takes "
                f"{fan_in} inputs: not a chain (pass the layers in order)"
            )
        entries = [(_pattern(layer, ["kernel"]), -1)]
        if "bias" in mods[layer]:
            entries.append((_pattern(layer, ["bias"]), 0))
        norm = norms[i]
        if norm:
            entries.append((_pattern(norm, _NORM_LEAVES), 0))
        entries.append((_pattern(nxt, ["kernel"]), -2))
        spec[layer] = entries
    return spec


def _norms(norms: Sequence[str | None] | None, layers: Sequence[str], who: str) -> list:
    norms = [None] * len(layers) if norms is None else list(norms)
    if len(norms) != len(layers):
        raise ValueError(f"{who}: {len(layers)} layers but {len(norms)} norms")
    return norms


def neurons(
    params: chex.ArrayTree,
    layers: Sequence[str] | None = None,
    *,
    norms: Sequence[str | None] | None = None,
) -> dict[str, list[tuple[str, int]]]:
    """Group spec of the hidden neurons of a chain of Dense layers (an MLP, an FFN).

    Neuron ``j`` of a layer is output column ``j`` of its kernel, ``bias[j]``, entry
    ``j`` of its norm (if any), and input row ``j`` of the next layer's kernel. The last
    layer's outputs are the model's and form no set.

    Args:
      params: params, variables dict or NNX state.
      layers: module paths of the chain, in data-flow order (e.g. one transformer
        block's ``["block_0/ffn_in", "block_0/ffn_out"]``); default: every module with a
        2-D kernel, in natural order of their paths (right for Linen's ``Dense_0``,
        ``Dense_1``... and NNX lists; pass other names in order).
      norms: optionally, per layer, the module path of a norm on its outputs (or
        ``None``).

    Returns:
      ``{layer_path: [(regex, axis), ...]}`` for every layer but the last.

    Raises:
      ValueError: a named module that does not exist, or layers whose widths do not
        chain.

    Examples:
        >>> params = {"Dense_0": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)},
        ...           "Dense_1": {"kernel": jnp.ones((8, 2)), "bias": jnp.ones(2)}}
        >>> spec = js.structured.neurons(params)
        >>> list(spec), js.structured.check_spec(spec, params)
        (['Dense_0'], {'Dense_0': 8})

    References:
      Han et al., "Learning both Weights and Connections", NeurIPS 2015 (neurons with
      no alive connection are removed); Chen et al., "EarlyBERT", ACL 2021 (FFN units).
    """
    mods = _modules(params)
    layers = _layers(mods, (2,)) if layers is None else list(layers)
    return _chain(mods, layers, _norms(norms, layers, "neurons"), None, "neurons")


def channels(
    params: chex.ArrayTree,
    convs: Sequence[str] | None = None,
    *,
    norms: Sequence[str | None] | None = None,
) -> dict[str, list[tuple[str, int]]]:
    """Group spec of the output channels of a chain of Conv(+BatchNorm) layers.

    Channel ``c`` of a conv is: the last axis of its kernel, ``bias[c]``, entry ``c`` of
    its norm's ``scale``, ``bias``, ``mean`` and ``var`` (the last two live in
    ``batch_stats``: see :func:`shrink`), and the input-channel axis (``-2``) of the
    next conv's kernel. The last conv's channels are a set too when the first Dense
    layer takes exactly that many inputs, i.e. after global pooling; a flatten of a
    spatial map mixes channels and positions in one axis, so then the last conv is left
    out. Not covered (write those sets by hand): residual additions (all convs feeding one
    sum share a set), grouped or depthwise convs, concatenations.

    Args:
      params: params, variables dict or NNX state.
      convs: module paths of the conv chain, in data-flow order; default: every module
        with a kernel of rank >= 3, in natural order of their paths (right for Linen's
        ``Conv_0``, ``Conv_1``... and NNX lists; pass other names in order).
      norms: per conv, the module path of its norm (or ``None``). Default: the modules
        with a 1-D ``scale`` and no kernel, paired in natural order, if there are as many
        as convs (or none at all).

    Returns:
      ``{conv_path: [(regex, axis), ...]}``.

    Raises:
      ValueError: a named module that does not exist, widths that do not chain, or
        norms that cannot be paired without ``norms=``.

    Examples:
        >>> params = {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 8)), "bias": jnp.ones(8)},
        ...           "BatchNorm_0": {"scale": jnp.ones(8), "bias": jnp.ones(8)},
        ...           "Conv_1": {"kernel": jnp.ones((3, 3, 8, 16)), "bias": jnp.ones(16)},
        ...           "BatchNorm_1": {"scale": jnp.ones(16), "bias": jnp.ones(16)},
        ...           "Dense_0": {"kernel": jnp.ones((16, 10)), "bias": jnp.ones(10)}}
        >>> js.structured.check_spec(js.structured.channels(params), params)
        {'Conv_0': 8, 'Conv_1': 16}

    References:
      Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017; Liu et al.,
      "Network Slimming", ICCV 2017; You et al., "Drawing Early-Bird Tickets", ICLR 2020.
    """
    mods = _modules(params)
    convs = _layers(mods, (3, 4, 5)) if convs is None else list(convs)
    if norms is None:
        found = sorted(
            (m for m, lv in mods.items() if "kernel" not in lv and len(lv.get("scale", ())) == 1),
            key=_natural,
        )
        if found and len(found) != len(convs):
            raise ValueError(
                f"channels: {len(convs)} convs but {len(found)} norm layers {found[:4]}; "
                "pass norms=[...] (None for a conv without one)"
            )
        norms = found or None
    norms = _norms(norms, convs, "channels")
    dense = _layers(mods, (2,))
    consumer = None
    if convs and dense and mods[dense[0]]["kernel"][0] == mods[convs[-1]]["kernel"][-1]:
        consumer = dense[0]
    return _chain(mods, convs, norms, consumer, "channels")


def heads(
    params: chex.ArrayTree, modules: Sequence[str] | None = None
) -> dict[str, list[tuple[str, int]]]:
    """Group spec of the heads of Flax multi-head attention layers.

    For ``MultiHeadDotProductAttention`` (Linen) or ``MultiHeadAttention`` (NNX), head
    ``h`` is ``[:, h, :]`` of the ``query``, ``key`` and ``value`` kernels
    (``[features, heads, head_dim]``), ``[h, :]`` of their biases and ``[h]`` of the
    ``out`` kernel (``[heads, head_dim, features]``). After :func:`shrink`, build the
    layer with ``num_heads = widths[set]`` and ``qkv_features = num_heads * head_dim``.

    Args:
      params: params, variables dict or NNX state.
      modules: module paths of the attention layers; default: every module with
        ``query``, ``key``, ``value`` and ``out`` sub-modules holding 3-D kernels.

    Returns:
      ``{attention_path: [(regex, axis), ...]}`` (``"attention"`` for params of a bare
      attention layer).

    Raises:
      ValueError: no attention layer found, or a named module without the projections.

    Examples:
        >>> d, h, k = 8, 4, 2
        >>> params = {"attn": {"query": {"kernel": jnp.ones((d, h, k)), "bias": jnp.ones((h, k))},
        ...                    "key": {"kernel": jnp.ones((d, h, k)), "bias": jnp.ones((h, k))},
        ...                    "value": {"kernel": jnp.ones((d, h, k)), "bias": jnp.ones((h, k))},
        ...                    "out": {"kernel": jnp.ones((h, k, d)), "bias": jnp.ones(d)}}}
        >>> js.structured.check_spec(js.structured.heads(params), params)
        {'attn': 4}

    References:
      Michel et al., "Are Sixteen Heads Really Better than One?", NeurIPS 2019;
      Chen et al., "EarlyBERT", ACL 2021 (heads pruned by slimming coefficients).
    """
    mods = _modules(params)
    proj = ("query", "key", "value", "out")

    def is_attention(m: str) -> bool:
        pre = f"{m}/" if m else ""
        return all(len(mods.get(pre + p, {}).get("kernel", ())) == 3 for p in proj)

    parents = {m.rpartition("/")[0] for m in mods}
    modules = sorted(filter(is_attention, parents), key=_natural) if modules is None else modules
    if not modules:
        raise ValueError("heads: no attention layer (query/key/value/out with 3-D kernels)")
    spec = {}
    for m in modules:
        if not is_attention(m):
            raise ValueError(f"heads: {m!r} has no query/key/value/out projections")
        pre = f"{m}/" if m else ""
        qkv = [_pattern(f"{pre}{p}", ["kernel"]) for p in proj[:3]]
        entries = [(q, 1) for q in qkv]
        entries += [
            (_pattern(f"{pre}{p}", ["bias"]), 0) for p in proj[:3] if "bias" in mods[pre + p]
        ]
        entries.append((_pattern(f"{pre}out", ["kernel"]), 0))
        spec[m or "attention"] = entries
    return spec
