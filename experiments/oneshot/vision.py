"""The oneshot study's vision stage: a LeNet-300-100 trained dense on real digits, then
pruned once with each method (issue 18's "second, vision case").

The classifier and its training round are the lottery study's (``experiments.models``:
``LeNet300``, ``classifier_train_fn``; ``experiments.data``'s fixed splits). Both hidden
layers are pruned (784x300 and 300x100 on MNIST); the 100x10 output layer stays dense, as
the transformer's head does. Calibration is the first ``vision_calib`` training images.
"""

from __future__ import annotations

import re
import time

import numpy as np

from experiments.oneshot.config import METHODS

PRUNABLE = r"hidden_\d+/kernel$"
PATTERNS = ((2, 4),)  # m divides every pruned layer's input (784 or 64, 300)
BATCH = 128


def _accuracy(model, x, y):
    import jax
    import jax.numpy as jnp

    x, y = jnp.asarray(x), jnp.asarray(y)

    @jax.jit
    def f(p):
        return jnp.mean(jnp.argmax(model.apply({"params": p}, x), -1) == y)

    return lambda p: float(f(p))


def train_dense(cfg, ds, log):
    """Trains LeNet-300-100 dense (Adam) with the lottery study's training round;
    ``(model, params, info)``."""
    import jax
    import optax

    import jaxsparse as js
    from experiments import models

    model = models.build("lenet300", ds.input_shape, ds.num_classes)
    arrays = jax.device_put(ds.arrays())
    params = jax.jit(model.init)(jax.random.key(cfg.seed), arrays["x_train"][:1])["params"]
    state = js.SparseTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(cfg.vision_lr)
    )
    train_fn = models.classifier_train_fn(
        model, arrays, batch_size=BATCH, steps=cfg.vision_steps, eval_every=cfg.vision_steps
    )
    t0 = time.perf_counter()
    state, evals = jax.jit(train_fn)(state, jax.random.key(cfg.seed + 1))
    jax.block_until_ready(state.params)
    train_s = time.perf_counter() - t0
    params = state.params
    info = {
        "data": ds.name,
        "sizes": ds.sizes(),
        "steps": cfg.vision_steps,
        "batch": BATCH,
        "lr": cfg.vision_lr,
        "train_s": train_s,
        "params": models.num_params(params),
        "train_acc": _accuracy(model, ds.x_train, ds.y_train)(params),
        "val_acc": float(evals["val_acc"][-1]),
        "test_acc": float(evals["test_acc"][-1]),
    }
    log(
        f"vision: LeNet-300-100 on {ds.name} ({ds.sizes()}), {cfg.vision_steps} steps in "
        f"{train_s:.1f} s: train acc {info['train_acc']:.4f}, test acc {info['test_acc']:.4f}"
    )
    return model, params, info


def _pruned_counts(mask) -> dict[str, int]:
    from jaxsparse.filters import path_str

    return {
        path_str(p): int(np.size(m) - np.sum(np.asarray(m)))  # on the host: no eager program
        for p, m in _flat(mask)
        if re.search(PRUNABLE, path_str(p))
    }


def run_vision(cfg, log) -> dict:
    """The vision stage: dense training, then the accuracy grid; a dict for results.json."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js
    from experiments import data as data_lib

    t0 = time.perf_counter()
    ds = data_lib.load(cfg.vision_data)
    model, params, info = train_dense(cfg, ds, log)
    test_acc = _accuracy(model, ds.x_test, ds.y_test)

    def apply_fn(p, x):
        return model.apply({"params": p}, x)

    x_cal = ds.x_train[: cfg.vision_calib]
    calib = [jnp.asarray(x_cal[i : i + BATCH]) for i in range(0, len(x_cal), BATCH)]
    settings = [(f"{s:g}", {"sparsity": s}) for s in cfg.vision_sparsity_list()]
    settings += [(f"{n}:{m}", {"nm": (n, m)}) for n, m in PATTERNS]
    rows = []
    for method in METHODS:
        for name, pattern in settings:
            t1 = time.perf_counter()
            out = js.oneshot.prune(
                apply_fn, params, calib, method=method, where=PRUNABLE, **pattern
            )
            jax.block_until_ready(out)
            rows.append(
                {
                    "method": method,
                    "pattern": name,
                    "test_acc": test_acc(out.params),
                    "sparsity": float(js.sparsity(out.mask, where=PRUNABLE)),
                    "pruned": _pruned_counts(out.mask),
                    "prune_s": time.perf_counter() - t1,
                }
            )
            log(f"vision {method:9s} {name:>4s}: test acc {rows[-1]['test_acc']:.4f}")
    for name, pattern in settings:
        mask = _random_mask(params, pattern.get("sparsity"), pattern.get("nm"), cfg.seed)
        pruned = js.apply_mask(params, mask)
        rows.append(
            {
                "method": "random",
                "pattern": name,
                "test_acc": test_acc(pruned),
                "sparsity": float(js.sparsity(mask, where=PRUNABLE)),
                "pruned": _pruned_counts(mask),
            }
        )
    shapes = {
        js.filters.path_str(p): list(x.shape)
        for p, x in _flat(params)
        if re.search(PRUNABLE, js.filters.path_str(p))
    }
    info.update(calib=len(x_cal), pruned_shapes=shapes, stage_s=time.perf_counter() - t0, grid=rows)
    log(f"vision stage: {info['stage_s']:.1f} s")
    return info


def _random_mask(params, sparsity, nm, seed):
    """Random masks on the pruned kernels (NumPy), exact counts: ``round(sparsity * n)``
    a layer, or ``n`` of every ``m`` consecutive inputs of each output."""
    import jax

    from jaxsparse.filters import path_str

    rng = np.random.default_rng([seed, 4])

    def one(path, x):
        if not re.search(PRUNABLE, path_str(path)):
            return np.ones(x.shape, bool)
        s = rng.random(x.shape)
        if nm is not None:
            n, m = nm
            g = s.reshape(x.shape[0] // m, m, x.shape[1])
            rank = np.argsort(np.argsort(g, axis=1), axis=1)
            return (rank >= m - n).reshape(x.shape)  # the n largest scores of each group
        k = round(sparsity * x.size)
        keep = np.ones(x.size, bool)
        keep[np.argsort(s, axis=None)[:k]] = False
        return keep.reshape(x.shape)

    return jax.tree_util.tree_map_with_path(one, params)


def _flat(tree):
    import jax

    return jax.tree_util.tree_flatten_with_path(tree)[0]
