"""The ResNet family of the elastic study: ResNet-(6N+2) in miniature for 14x14 digits.

A 3x3 stem (stride 2), then three stages of ``N`` basic blocks with ``width``,
``2 width`` and ``4 width`` channels; block 0 of stages 1 and 2 halves the resolution and
has a 1x1 projection shortcut; global average pooling and a dense head. Parameters are
named ``stem/...``, ``stage{s}_block{b}/{conv1,conv2,shortcut}/kernel``,
``stage{s}_block{b}/alpha`` and ``head/...``, so the default block regex of
:func:`jaxsparse.transfer.elastic` finds the blocks.

There is no normalisation layer (no batch statistics to carry): each residual branch is
scaled by a learnable scalar ``alpha`` (SkipInit, De & Smith, NeurIPS 2020), initialised
to 0.2 rather than 0: Adam moves a scalar by about the learning rate a step, so from 0 the
residual branches of a 150-step training would barely open. Convolutions are written as
im2col matmuls: on a CPU, XLA's convolution of these few channels is ~10x slower.

:func:`init_params` draws the parameters with numpy from the same distributions as the
modules' initialisers: XLA compiles a ResNet's ``init`` for about a minute, and eagerly it
took ~45 s per depth on the shared CPU; numpy takes milliseconds.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments.models import he_normal

ALPHA_INIT = 0.2  # small, so deep stacks start near identity, large enough to learn fast
PRUNABLE = r"^stage\d+_block\d+/.*kernel$"  # block convs and shortcuts; stem, head dense


class Conv(nn.Module):
    """A k x k convolution (k = 1 or 3, 'SAME' padding) as a matmul over patches, or
    with ``im2col=False`` as XLA's convolution (slower to run on a CPU, but one op where
    im2col has a dozen: several times faster to compile)."""

    features: int
    size: int = 3
    stride: int = 1
    im2col: bool = True

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", he_normal, (self.size, self.size, cin, self.features))
        s = self.stride
        if not self.im2col:
            return jax.lax.conv_general_dilated(
                x, kernel, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        if self.size == 1:
            return x[:, ::s, ::s] @ kernel[0, 0]
        h, w = x.shape[1:3]
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate(
            [xp[:, i : i + h : s, j : j + w : s] for i in range(3) for j in range(3)], -1
        )
        return patches @ kernel.reshape(9 * cin, self.features)


class Block(nn.Module):
    """A basic block: conv3-relu-conv3, scaled by ``alpha``, plus the shortcut."""

    features: int
    stride: int = 1
    im2col: bool = True

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(Conv, im2col=self.im2col)
        y = nn.relu(conv(self.features, stride=self.stride, name="conv1")(x))
        y = conv(self.features, name="conv2")(y)
        alpha = self.param("alpha", nn.initializers.constant(ALPHA_INIT), ())
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, self.stride, name="shortcut")(x)
        return nn.relu(x + alpha * y)


class ResNet(nn.Module):
    """ResNet-(6N+2): ``blocks`` (N) basic blocks in each of three stages."""

    blocks: int
    width: int = 8
    stem_stride: int = 2
    im2col: bool = True
    input_shape: tuple = (14, 14, 1)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        x = nn.relu(Conv(self.width, stride=self.stem_stride, im2col=self.im2col, name="stem")(x))
        for s in range(3):
            for b in range(self.blocks):
                stride = 2 if (b == 0 and s > 0) else 1
                x = Block(self.width * 2**s, stride, self.im2col, name=f"stage{s}_block{b}")(x)
        return nn.Dense(self.num_classes, name="head")(x.mean((1, 2)))


def _truncated_normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    """``std`` times a standard normal truncated to [-2, 2], rescaled to unit variance,
    as ``jax.nn.initializers.variance_scaling(..., "truncated_normal")`` draws."""
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2
    return (std / 0.87962566103423978 * x).astype(np.float32)


def init_params(model: ResNet, keys) -> dict:
    """The params of ``model`` for every key of ``keys``, stacked (a leading seed axis).

    Kernels of convolutions: He normal (fan-in = k * k * in channels); the head: LeCun
    normal kernel and zero bias; ``alpha``: :data:`ALPHA_INIT` (the initialisers the
    modules declare). Each seed's numbers come from a numpy generator seeded by its key.
    """
    import jax

    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, int(np.prod(model.input_shape))))
    )["params"]
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    seeds = [np.asarray(jax.random.key_data(k)).ravel() for k in keys]
    out = [[] for _ in paths]
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for i, (path, leaf) in enumerate(paths):
            name = "/".join(str(getattr(p, "key", p)) for p in path)
            if name.endswith("alpha"):
                x = np.full(leaf.shape, ALPHA_INIT, np.float32)
            elif name.endswith("bias"):
                x = np.zeros(leaf.shape, np.float32)
            else:  # a kernel: (k, k, in, out) or the head's (in, out)
                gain = 1.0 if name.startswith("head") else 2.0
                fan_in = int(np.prod(leaf.shape[:-1]))
                x = _truncated_normal(rng, leaf.shape, np.sqrt(gain / fan_in))
            out[i].append(x)
    return jax.tree.unflatten(treedef, [jnp.asarray(np.stack(xs)) for xs in out])
