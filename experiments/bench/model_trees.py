"""Params trees in the shapes of the models users prune, from real Flax modules.

ResNet-50 (with BatchNorm), BERT-base, GPT-2-small and a GPT-shaped 1.3B stack are
Linen modules; ViT-B/16 is an NNX module, its params taken as the pure dict of
``nnx.state(model, nnx.Param)``. Shapes come from ``jax.eval_shape`` of the module's
init (nothing is allocated); :func:`build` then fills them with random values drawn
like the modules' own initialisers (kernels normal with variance 1/fan-in or 0.02²,
biases 0, norm scales 1), leaf by leaf, so a 100M tree is made in seconds without
compiling the model. ``gpt_1p3b`` is meant for :func:`shapes` only (5.2 GB of float32).

Used by the ``models`` bench section; the studies' own models live in
``experiments/models.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

# ---------------------------------------------------------------- ResNet-50 (Linen)


class _Bottleneck(nn.Module):
    width: int
    stride: int

    @nn.compact
    def __call__(self, x):
        out = 4 * self.width
        y = nn.Conv(self.width, (1, 1), use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=True)(y))
        y = nn.Conv(self.width, (3, 3), self.stride, use_bias=False)(y)
        y = nn.relu(nn.BatchNorm(use_running_average=True)(y))
        y = nn.Conv(out, (1, 1), use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=True)(y)
        if x.shape[-1] != out or self.stride != 1:
            x = nn.Conv(out, (1, 1), self.stride, use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=True)(x)
        return nn.relu(x + y)


class ResNet50(nn.Module):
    classes: int = 1000
    base: int = 64  # the first stage's width (the tests take a narrow one)

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.base, (7, 7), 2, use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
        for stage, blocks in enumerate((3, 4, 6, 3)):
            for b in range(blocks):
                x = _Bottleneck(self.base * 2**stage, 2 if b == 0 and stage > 0 else 1)(x)
        return nn.Dense(self.classes)(x.mean(axis=(1, 2)))


# ------------------------------------------------------- transformers (Linen)


class _Block(nn.Module):
    width: int
    heads: int
    causal: bool

    @nn.compact
    def __call__(self, x):
        mask = nn.make_causal_mask(x[..., 0]) if self.causal else None
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(self.heads)(h, h, mask=mask)
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(h)))
        return x + h


class Transformer(nn.Module):
    """BERT-base (``causal=False``, token-type embeddings, pooler) or a GPT decoder."""

    vocab: int
    width: int
    depth: int
    heads: int
    positions: int
    causal: bool

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.width)(tokens)
        x = x + nn.Embed(self.positions, self.width)(jnp.arange(tokens.shape[1]))
        if not self.causal:
            x = x + nn.Embed(2, self.width)(jnp.zeros_like(tokens))
        for _ in range(self.depth):
            x = _Block(self.width, self.heads, self.causal)(x)
        x = nn.LayerNorm()(x)
        if not self.causal:
            return nn.tanh(nn.Dense(self.width)(x[:, 0]))  # BERT's pooler
        return x


# -------------------------------------------------------------- ViT-B/16 (NNX)


class _NnxBlock(nnx.Module):
    def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.fc1 = nnx.Linear(width, 4 * width, rngs=rngs)
        self.fc2 = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x))))


class ViT(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, *, width=768, depth=12, heads=12, patch=16, image=224):
        self.patch = nnx.Conv(3, width, (patch, patch), strides=patch, rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, width)))
        self.pos = nnx.Param(jnp.zeros((1, (image // patch) ** 2 + 1, width)))
        self.blocks = nnx.List([_NnxBlock(width, heads, rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, 1000, rngs=rngs)

    def __call__(self, x):
        x = self.patch(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        x = jnp.concatenate([jnp.broadcast_to(self.cls, (x.shape[0], 1, x.shape[-1])), x], 1)
        x = x + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


# ------------------------------------------------------------------ the trees


def _linen(module: nn.Module, *example) -> Callable[[], dict]:
    def abstract():
        init = lambda: module.init(jax.random.key(0), *example)["params"]  # noqa: E731
        return jax.eval_shape(init)

    return abstract


def _vit() -> dict:
    def make():
        return nnx.to_pure_dict(nnx.state(ViT(nnx.Rngs(0)), nnx.Param))

    return jax.eval_shape(make)


def _gpt(width, depth, heads, vocab=50257):
    return _linen(
        Transformer(vocab, width, depth, heads, 1024, causal=True), jnp.zeros((1, 8), jnp.int32)
    )


TREES: dict[str, Callable[[], dict]] = {
    "resnet50": _linen(ResNet50(), jnp.zeros((1, 224, 224, 3))),
    "vit_b16": _vit,
    "bert_base": _linen(
        Transformer(30522, 768, 12, 12, 512, causal=False), jnp.zeros((1, 8), jnp.int32)
    ),
    "gpt2_small": _gpt(768, 12, 12),
    "gpt_1p3b": _gpt(2048, 24, 16),
}


def tiny() -> dict:
    """A few-leaf stand-in for quick tests: a 2-block ResNet-like Linen tree."""
    return {
        "conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 8), jnp.float32)},
        "bn": {
            "scale": jax.ShapeDtypeStruct((8,), jnp.float32),
            "bias": jax.ShapeDtypeStruct((8,), jnp.float32),
        },
        **{
            f"block{i}": {
                "kernel": jax.ShapeDtypeStruct((3, 3, 8, 8), jnp.float32),
                "bias": jax.ShapeDtypeStruct((8,), jnp.float32),
            }
            for i in range(2)
        },
        "head": {
            "kernel": jax.ShapeDtypeStruct((8, 10), jnp.float32),
            "bias": jax.ShapeDtypeStruct((10,), jnp.float32),
        },
    }


TREES["tiny"] = tiny


def narrow_resnet50() -> dict:
    """ResNet-50's 161 leaves at an eighth of its width (0.4M params), for tests."""
    return _linen(ResNet50(classes=10, base=8), jnp.zeros((1, 32, 32, 3)))()


def shapes(name: str) -> dict:
    """The tree's ``ShapeDtypeStruct`` leaves, nothing allocated."""
    return TREES[name]()


def _value(path, leaf, rng) -> np.ndarray:
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    last = names[-1]
    if leaf.ndim < 2 or last in ("cls", "pos"):
        if last in ("scale",):
            return np.ones(leaf.shape, np.float32)
        if last in ("bias",):
            return np.zeros(leaf.shape, np.float32)
        return (0.02 * rng.standard_normal(leaf.shape, np.float32)).astype(np.float32)
    if last == "embedding":
        return 0.02 * rng.standard_normal(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    if leaf.ndim == 3:  # attention's (in, heads, head_dim) or (heads, head_dim, out)
        fan_in = leaf.shape[0] if "out" not in names else leaf.shape[0] * leaf.shape[1]
    return rng.standard_normal(leaf.shape, np.float32) / np.float32(np.sqrt(fan_in))


def build(name: str, seed: int = 0) -> dict:
    """The tree with random values (float32, on the default device)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map_with_path(lambda p, s: jnp.asarray(_value(p, s, rng)), shapes(name))


def summary(tree) -> dict:
    """Params, leaves and kernels (the leaves the default ``where`` prunes)."""
    from jaxsparse.filters import prunable

    leaves = jax.tree.leaves(tree)
    return {
        "params": int(sum(np.prod(x.shape) for x in leaves)),
        "leaves": len(leaves),
        "kernels": sum(jax.tree.leaves(prunable(tree))),
    }


FULL_NAMES = ("resnet50", "vit_b16", "bert_base", "gpt2_small", "gpt_1p3b")
