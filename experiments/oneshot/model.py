"""The pre-trained model of the oneshot study: a byte-level decoder-only transformer, and
its corpus: the Python sources of the installed optax (a pinned, offline text)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

VOCAB = 256  # bytes


class Block(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")(h, mask=mask)
        h = nn.LayerNorm()(x)
        h = nn.gelu(nn.Dense(4 * self.width, name="fc1")(h))
        return x + nn.Dense(self.width, name="fc2")(h)


class ByteLM(nn.Module):
    """Pre-LN GPT-style decoder over bytes; ``__call__(tokens) -> logits``."""

    layers: int
    width: int
    heads: int
    context: int

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, self.width)(tokens)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.context, self.width))
        x = x + pos[: tokens.shape[-1]]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.layers):
            x = Block(self.width, self.heads, name=f"block_{i}")(x, mask)
        return nn.Dense(VOCAB, name="head")(nn.LayerNorm()(x))


# the prunable layers: every Dense in the blocks (the papers leave embeddings and head)
PRUNABLE = r"block_\d+/.*kernel$"


def in_axes(path: str) -> int:
    """How many leading axes of a kernel are its inputs (attention's ``out`` has two)."""
    return 2 if path.endswith("attn/out/kernel") else 1


def corpus(package: str = "optax") -> tuple[np.ndarray, np.ndarray, dict]:
    """``(train_bytes, heldout_bytes, info)``: every ``.py`` file of the installed
    ``package`` in sorted order; every tenth file is held out. ``info`` names the version,
    the files and a SHA-256 over paths and contents."""
    import importlib
    import importlib.metadata

    root = Path(importlib.import_module(package).__file__).parent
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    digest = hashlib.sha256()
    train, held = [], []
    for i, name in enumerate(files):
        data = (root / name).read_bytes()
        digest.update(name.encode() + b"\0" + data + b"\0")
        (held if i % 10 == 0 else train).append(data)
    info = {
        "package": package,
        "version": importlib.metadata.version(package),
        "files": len(files),
        "heldout_files": len(held),
        "sha256": digest.hexdigest(),
        "list_sha256": hashlib.sha256("\n".join(files).encode()).hexdigest(),
    }
    as_array = lambda parts: np.frombuffer(b"\n".join(parts), np.uint8).astype(np.int32)  # noqa: E731
    tr, he = as_array(train), as_array(held)
    info.update(train_bytes=int(tr.size), heldout_bytes=int(he.size))
    return tr, he, info


def windows(data: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random windows of ``length`` bytes."""
    start = rng.integers(0, data.size - length, size=n)
    return np.stack([data[s : s + length] for s in start])


def heldout_windows(data: np.ndarray, n: int, length: int) -> np.ndarray:
    """``n`` windows spread evenly over the held-out bytes (the same every run)."""
    start = np.linspace(0, data.size - length - 1, n).astype(int)
    return np.stack([data[s : s + length] for s in start])


def nll(logits, targets):
    """Mean negative log-likelihood (nats a byte)."""
    logp = logits - jnp.max(logits, -1, keepdims=True)
    logp = logp - jnp.log(jnp.sum(jnp.exp(logp), -1, keepdims=True))
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], -1))
