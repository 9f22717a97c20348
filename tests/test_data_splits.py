"""The fixed data splits stored in ``experiments/splits.npz`` are scikit-learn's, and a
split stored for other labels is never used."""

import numpy as np
import pytest

from experiments import data


@pytest.mark.parametrize("name", data.DATASETS)
def test_stored_split_is_sklearns(name):
    y = data._raw(name)[1]
    stored = data._stored_split(name, y)
    assert stored is not None, f"{data.SPLITS_FILE} lacks {name}: run data.write_splits()"
    fresh = data._split_indices(y, *data.SPLIT_SIZES[name])
    for s, f in zip(stored, fresh, strict=True):
        np.testing.assert_array_equal(s, f)
    assert len(stored[0]) == data.TRAIN_SIZES[name]
    everything = np.concatenate(stored)
    assert len(np.unique(everything)) == len(everything)  # disjoint


def test_split_for_other_labels_is_recomputed():
    y = data._raw("digits")[1].copy()
    y[:2] = y[1::-1] if y[0] != y[1] else (y[0] + 1) % 10
    assert data._stored_split("digits", y) is None
    x = np.arange(len(y))[:, None]
    parts = data._split("digits", x, y)
    for part, idx in zip(parts[::2], data._split_indices(y, 180, 360), strict=True):
        np.testing.assert_array_equal(part[:, 0], idx)  # x_train, x_val, x_test


def test_write_splits_round_trips(tmp_path, monkeypatch):
    path = tmp_path / "splits.npz"
    data.write_splits(path)
    monkeypatch.setattr(data, "SPLITS_FILE", path)
    y = data._raw("mnist")[1]
    for s, f in zip(data._stored_split("mnist", y), data._split_indices(y, 500, 1000)):
        np.testing.assert_array_equal(s, f)
