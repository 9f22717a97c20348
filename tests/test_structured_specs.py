"""Spec helpers on real Flax models (Linen and NNX): the shrunk model computes what the
masked full model computes."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxsparse as js
from jaxsparse import structured
from tests._structured_models import CNN, MLP, init_variables, prune_groups

RNG = np.random.default_rng(0)


def _x(*shape):
    return jnp.asarray(RNG.standard_normal(shape), jnp.float32)


def _rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _prune_groups(tree, spec, fraction=0.4, scope="global", **kw):
    return prune_groups(tree, spec, fraction, scope, **kw)[0]


# --- neurons ----------------------------------------------------------------------------


def test_neurons_spec_and_shrunk_mlp_matches_masked():
    x = _x(8, 5)
    model = MLP((7, 9, 6))
    params = init_variables(model, x)["params"]
    spec = structured.neurons(params)
    assert structured.check_spec(spec, params) == {"Dense_0": 7, "Dense_1": 9, "Dense_2": 6}
    assert [a for _, a in spec["Dense_1"]] == [-1, 0, -2]  # kernel out, bias, next kernel in
    gmask = _prune_groups(params, spec)
    full = jax.jit(model.apply)(
        {"params": js.apply_mask(params, structured.expand(gmask, spec, params))}, x
    )
    small, widths = structured.shrink(params, gmask, spec)
    assert widths == {k: int(v.sum()) for k, v in gmask.items()}
    out = jax.jit(MLP(tuple(widths[f"Dense_{i}"] for i in range(3))).apply)({"params": small}, x)
    assert small["Dense_1"]["kernel"].shape == (widths["Dense_0"], widths["Dense_1"])
    assert _rel_err(out, full) <= 1e-5


def test_neurons_explicit_layers_norms_and_errors():
    params = {
        "up": {"kernel": jnp.ones((4, 6)), "bias": jnp.ones(6)},
        "norm": {"scale": jnp.ones(6), "bias": jnp.ones(6)},
        "down": {"kernel": jnp.ones((6, 4))},
        "other": {"kernel": jnp.ones((3, 3))},
    }
    spec = structured.neurons(params, ["up", "down"], norms=["norm", None])
    assert structured.check_spec(spec, params) == {"up": 6}
    m = structured.expand({"up": jnp.arange(6) % 2 == 0}, spec, params)
    np.testing.assert_array_equal(m["norm"]["scale"], np.arange(6) % 2 == 0)
    np.testing.assert_array_equal(m["down"]["kernel"][:, 0], np.arange(6) % 2 == 0)
    assert bool(m["other"]["kernel"].all())
    with pytest.raises(ValueError, match="'up/kernel' has 6 outputs but 'other/kernel' takes 3"):
        structured.neurons(params, ["up", "other"])
    with pytest.raises(ValueError, match="no module 'nope'"):
        structured.neurons(params, ["up", "nope"])
    with pytest.raises(ValueError, match="module 'norm' has no kernel"):
        structured.neurons(params, ["up", "norm"])
    with pytest.raises(ValueError, match="2 layers but 1 norms"):
        structured.neurons(params, ["up", "down"], norms=["norm"])


# --- channels (Linen CNN with BatchNorm) --------------------------------------------------


def test_channels_spec_covers_batch_stats_and_the_pooled_dense():
    model = CNN((6, 8, 10))
    variables = init_variables(model, _x(2, 6, 6, 2))
    spec = structured.channels(variables["params"])
    assert structured.channels(variables) == spec  # a variables dict is read the same way
    counts = {"Conv_0": 6, "Conv_1": 8, "Conv_2": 10}
    assert structured.check_spec(spec, variables["params"]) == counts
    assert structured.check_spec(spec, variables) == counts
    mask = structured.expand({k: jnp.arange(n) != 1 for k, n in counts.items()}, spec, variables)
    for leaf in ("mean", "var"):
        np.testing.assert_array_equal(mask["batch_stats"]["BatchNorm_2"][leaf], np.arange(10) != 1)
    np.testing.assert_array_equal(mask["params"]["Dense_0"]["kernel"][:, 0], np.arange(10) != 1)


def test_channels_without_pooling_or_norms_and_errors():
    params = {
        "Conv_0": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones(4)},
        "Conv_1": {"kernel": jnp.ones((3, 3, 4, 5)), "bias": jnp.ones(5)},
        "Dense_0": {"kernel": jnp.ones((5 * 7 * 7, 10))},  # a flatten of a 7x7 map
    }
    assert structured.check_spec(structured.channels(params), params) == {"Conv_0": 4}
    params["Norm_0"] = {"scale": jnp.ones(4)}
    with pytest.raises(ValueError, match="2 convs but 1 norm layers"):
        structured.channels(params)
    spec = structured.channels(params, norms=["Norm_0", None])
    assert structured.check_spec(spec, params) == {"Conv_0": 4}
    params["Norm_0"] = {"scale": jnp.ones(3)}
    with pytest.raises(ValueError, match="'Norm_0/scale' has 3 along axis 0"):
        structured.check_spec(structured.channels(params, norms=["Norm_0", None]), params)


def test_shrunk_cnn_with_batchnorm_matches_masked_in_eval_mode():
    x = _x(4, 6, 6, 2)
    model = CNN((6, 8, 10))
    variables = init_variables(model, x)
    spec = structured.channels(variables)
    gmask = _prune_groups(variables["params"], spec, 0.5)
    mask = structured.expand(gmask, spec, variables)
    full = jax.jit(model.apply)(js.apply_mask(variables, mask), x)
    small, widths = structured.shrink(variables, gmask, spec)
    assert small["batch_stats"]["BatchNorm_1"]["mean"].shape == (widths["Conv_1"],)
    out = jax.jit(CNN(tuple(widths[f"Conv_{i}"] for i in range(3))).apply)(small, x)
    assert _rel_err(out, full) <= 1e-5
    # params alone shrink the same way (the batch_stats entries are simply absent)
    small_p, _ = structured.shrink(variables["params"], gmask, spec)
    jax.tree.map(np.testing.assert_array_equal, small_p, small["params"])


# --- NNX --------------------------------------------------------------------------------


class NnxCNN(nnx.Module):
    def __init__(self, widths: Sequence[int], rngs: nnx.Rngs):
        c_in, convs, bns = 2, [], []
        for w in widths:
            convs.append(nnx.Conv(c_in, w, (3, 3), rngs=rngs))
            bns.append(nnx.BatchNorm(w, rngs=rngs))
            c_in = w
        self.convs, self.bns = nnx.List(convs), nnx.List(bns)
        self.head = nnx.Linear(c_in, 5, rngs=rngs)

    def __call__(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = nnx.relu(bn(conv(x)))
        return self.head(jnp.mean(x, axis=(1, 2)))


def _nnx_model(widths, seed=0):
    """An NNX model with NumPy-filled state (no initialiser compiles)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: NnxCNN(widths, nnx.Rngs(0))))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = js.filters.path_str(path).removesuffix("/value")
        n = rng.standard_normal(s.shape).astype(np.float32)
        if len(s.shape) >= 2:
            return jnp.asarray(n / np.sqrt(np.prod(s.shape[:-1])))
        return jnp.asarray(1 + 0.3 * np.abs(n) if name.endswith(("scale", "var")) else 0.1 * n)

    model = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))
    model.eval()
    return model


def test_nnx_state_and_pure_dict_expand_and_shrink():
    x = _x(4, 6, 6, 2)
    model = _nnx_model((6, 8, 10))
    _, state = nnx.split(model)
    spec = structured.channels(state)
    counts = {"convs/0": 6, "convs/1": 8, "convs/2": 10}
    assert structured.check_spec(spec, state) == counts
    gmask = _prune_groups(state, spec, 0.5, scope="layerwise")
    assert {k: int(v.sum()) for k, v in gmask.items()} == {"convs/0": 3, "convs/1": 4, "convs/2": 5}

    mask = structured.expand(gmask, spec, state)
    nnx.update(model, js.apply_mask(state, mask))
    forward = nnx.jit(lambda model, x: model(x))
    full = forward(model, x)
    widths_want = {k: int(v.sum()) for k, v in gmask.items()}

    small_state, widths = structured.shrink(state, gmask, spec)
    assert widths == widths_want
    small = _nnx_model(tuple(widths[f"convs/{i}"] for i in range(3)))
    nnx.update(small, small_state)
    assert _rel_err(forward(small, x), full) <= 1e-5

    pure = nnx.to_pure_dict(state)
    pure_mask = structured.expand(gmask, spec, pure)
    jax.tree.map(np.testing.assert_array_equal, pure_mask, nnx.to_pure_dict(mask))
    small_pure, widths_pure = structured.shrink(pure, gmask, spec)
    assert widths_pure == widths
    _, small_abstract = nnx.split(small)
    nnx.replace_by_pure_dict(small_abstract, small_pure)
    nnx.update(small, small_abstract)
    assert _rel_err(forward(small, x), full) <= 1e-5


# --- heads and an EarlyBERT-style encoder block -------------------------------------------


class Block(nn.Module):
    heads: int
    ffn: int
    d: int = 12
    head_dim: int = 3

    @nn.compact
    def __call__(self, x):
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, qkv_features=self.heads * self.head_dim, name="attn"
        )(nn.LayerNorm(name="ln1")(x))
        x = x + h
        h = nn.gelu(nn.Dense(self.ffn, name="ffn_in")(nn.LayerNorm(name="ln2")(x)))
        return x + nn.Dense(self.d, name="ffn_out")(h)


def test_heads_spec_by_value():
    params = init_variables(Block(4, 16), _x(2, 5, 12))["params"]
    spec = structured.heads(params)
    assert list(spec) == ["attn"]
    assert structured.check_spec(spec, params) == {"attn": 4}
    m = structured.expand({"attn": jnp.array([True, False, True, True])}, spec, params)
    for p in ("query", "key", "value"):
        assert not m["attn"][p]["kernel"][:, 1].any() and m["attn"][p]["kernel"][:, 0].all()
        assert not m["attn"][p]["bias"][1].any()
    assert not m["attn"]["out"]["kernel"][1].any() and m["attn"]["out"]["bias"].all()
    assert list(structured.heads({"params": params["attn"]})) == ["attention"]
    nnx_attn = nnx.eval_shape(
        lambda: nnx.MultiHeadAttention(
            num_heads=4, in_features=8, qkv_features=16, decode=False, rngs=nnx.Rngs(0)
        )
    )
    state = nnx.split(nnx_attn)[1]
    assert structured.check_spec(structured.heads(state), state) == {"attention": 4}
    with pytest.raises(ValueError, match="no attention layer"):
        structured.heads({"Dense_0": {"kernel": jnp.ones((2, 2))}})
    with pytest.raises(ValueError, match="'ffn_in' has no query"):
        structured.heads(params, ["ffn_in"])


def test_shrunk_encoder_block_matches_masked_heads_and_ffn():
    x = _x(3, 5, 12)
    model = Block(4, 16)
    params = init_variables(model, x)["params"]
    spec = {**structured.heads(params), **structured.neurons(params, ["ffn_in", "ffn_out"])}
    gmask = _prune_groups(params, spec, 0.25, "layerwise", rates={"ffn": 0.4})
    assert {k: int(v.sum()) for k, v in gmask.items()} == {"attn": 3, "ffn_in": 10}
    full = jax.jit(model.apply)(
        {"params": js.apply_mask(params, structured.expand(gmask, spec, params))}, x
    )
    small, widths = structured.shrink(params, gmask, spec)
    out = jax.jit(Block(widths["attn"], widths["ffn_in"]).apply)({"params": small}, x)
    assert _rel_err(out, full) <= 1e-5
