"""Dataset loaders: IDX parsing, search order, and the message when files are missing."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from automl_bilevel.frontends.data import (
    IDX_FILES,
    DatasetNotFoundError,
    find_idx_dir,
    load_dataset,
    load_idx_dataset,
    read_idx,
)


def write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def make_fake(folder, n=12):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for _split, (img, lab) in IDX_FILES.items():
        write_idx(folder / img, rng.integers(0, 255, size=(n, 28, 28)))
        write_idx(folder / lab, np.arange(n) % 10)


def test_read_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)


def test_read_idx_rejects_garbage_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    header = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10)
    (tmp_path / "short").write_bytes(header + b"\x00" * 4)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_env_variable_and_argument_find_the_files(tmp_path, monkeypatch):
    make_fake(tmp_path / "root" / "fashion-mnist")
    monkeypatch.setenv("AUTOML_BILEVEL_DATA", str(tmp_path / "root"))
    assert find_idx_dir("fashion-mnist") == tmp_path / "root" / "fashion-mnist"
    make_fake(tmp_path / "direct")
    X, y = load_idx_dataset("mnist", "test", data_dir=tmp_path / "direct")
    assert X.shape == (12, 28, 28) and X.dtype == np.uint8 and list(y[:3]) == [0, 1, 2]


def test_missing_files_say_where_we_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOML_BILEVEL_DATA", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    import automl_bilevel.frontends.data as data

    monkeypatch.setattr(data, "candidate_dirs", lambda name, d=None: [tmp_path / "empty" / name])
    with pytest.raises(DatasetNotFoundError) as err:
        load_idx_dataset("fashion-mnist", data_dir=None)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "empty") in msg
    assert "AUTOML_BILEVEL_DATA" in msg and "dataset-fashion-mnist" in msg


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be"):
        load_idx_dataset("mnist", "valid")
    with pytest.raises(ValueError, match="unknown IDX dataset"):
        find_idx_dir("cifar")


def test_real_mnist_when_present():
    try:
        X, y = load_idx_dataset("mnist", "test")
    except DatasetNotFoundError:
        pytest.skip("MNIST IDX files not available on this machine")
    assert X.shape == (10000, 28, 28) and sorted(np.unique(y)) == list(range(10))


def test_sklearn_sets_and_subsampling():
    X, y, task = load_dataset("digits", max_samples=100)
    assert X.shape == (100, 64) and task == "classification"
    assert load_dataset("diabetes")[2] == "regression"
