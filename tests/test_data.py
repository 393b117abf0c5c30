"""The IDX reader, its one-line errors, the book's splits and the data folder."""

import gzip
import re

import numpy as np
import pytest
from conftest import idx_bytes, write_idx, write_mnist

from hmnist import cli, data
from hmnist.data import (
    FILES,
    DataError,
    load_mnist,
    read_images,
    read_images_split,
    read_labels,
    to_float,
)


def images(n=4, rows=28, cols=28, seed=0):
    """Return ``n`` random uint8 images of ``rows`` x ``cols``."""
    return np.random.default_rng(seed).integers(0, 256, (n, rows, cols), np.uint8)


def assert_one_line_naming(err, path):
    """Check that a DataError's message is one line and names ``path``."""
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# ----------------------------------------------------------------------------
# Reading good files


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_images_and_labels_load_gzip_or_raw(tmp_path, gz):
    pixels = images(5)
    labels = np.array([0, 9, 3, 3, 7], np.uint8)
    images_path = write_idx(tmp_path / "img", idx_bytes(pixels), gz=gz)
    labels_path = write_idx(tmp_path / "lab", idx_bytes(labels), gz=gz)

    got = read_images(images_path)
    assert got.shape == (5, 784)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, pixels.reshape(5, 784))
    np.testing.assert_array_equal(read_labels(labels_path), labels)


def test_gzip_is_told_by_content_not_name(tmp_path):
    raw_named_gz = tmp_path / "img.gz"
    raw_named_gz.write_bytes(idx_bytes(images(2)))
    gz_named_raw = tmp_path / "img"
    gz_named_raw.write_bytes(gzip.compress(idx_bytes(images(2))))

    np.testing.assert_array_equal(read_images(raw_named_gz), read_images(gz_named_raw))


# ----------------------------------------------------------------------------
# Each kind of damage: one line, the file's name, what is wrong


def test_bad_magic(tmp_path):
    content = bytearray(idx_bytes(images(2)))
    content[0] = 0x12
    path = write_idx(tmp_path / "img", bytes(content))
    with pytest.raises(DataError) as err:
        read_images(path)
    assert "magic" in assert_one_line_naming(err, path)


def test_bad_type_code(tmp_path):
    path = write_idx(tmp_path / "img", idx_bytes(images(2), type_code=0x0D))
    with pytest.raises(DataError) as err:
        read_images(path)
    assert "magic" in assert_one_line_naming(err, path)


def test_images_of_wrong_size(tmp_path):
    path = write_idx(tmp_path / "img", idx_bytes(images(3, rows=27)))
    with pytest.raises(DataError) as err:
        read_images(path)
    assert "27x28" in assert_one_line_naming(err, path)


def test_ndim_mismatch(tmp_path):
    """A label file (1 dimension) given where images (3 dimensions) belong."""
    path = write_idx(tmp_path / "img", idx_bytes(np.arange(10)))
    with pytest.raises(DataError) as err:
        read_images(path)
    message = assert_one_line_naming(err, path)
    assert re.search(r"magic|dimension", message)


def test_truncated_data(tmp_path):
    path = write_idx(tmp_path / "img", idx_bytes(images(3))[:-5])
    with pytest.raises(DataError) as err:
        read_images(path)
    assert "truncated" in assert_one_line_naming(err, path)


def test_truncated_header(tmp_path):
    path = write_idx(tmp_path / "img", idx_bytes(images(3))[:9])
    with pytest.raises(DataError) as err:
        read_images(path)
    assert "truncated" in assert_one_line_naming(err, path)


def test_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "lab", idx_bytes(np.arange(10)) + b"\x00\x01")
    with pytest.raises(DataError) as err:
        read_labels(path)
    assert "trailing" in assert_one_line_naming(err, path)


# The training images are read a chunk at a time, straight into floats.


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("chunk_rows", [1, 3, 10_000])
@pytest.mark.parametrize("n_float", [1, 7, 20, 25])
def test_chunked_split_equals_the_whole_file(tmp_path, gz, dtype, chunk_rows, n_float):
    path = write_idx(tmp_path / "img", idx_bytes(images(20)), gz=gz)
    whole = read_images(path)
    x, rest = read_images_split(path, n_float, dtype, chunk_rows=chunk_rows)
    assert x.dtype == dtype and rest.dtype == np.uint8
    np.testing.assert_array_equal(x, to_float(whole[:n_float], dtype))
    np.testing.assert_array_equal(rest, whole[n_float:])


@pytest.mark.parametrize(
    "content",
    [
        idx_bytes(images(5))[:-5],
        idx_bytes(images(5))[:-784],
        idx_bytes(images(5))[:9],
        idx_bytes(images(5))[:2],
        idx_bytes(images(5)) + b"\x00",
        idx_bytes(images(5, rows=27)),
        idx_bytes(images(5, rows=27))[:-3],
        idx_bytes(np.arange(5)),
        b"",
    ],
    ids=[
        "cut-in-a-row", "cut-a-row", "cut-header", "cut-magic", "trailing",
        "27x28", "27x28-cut", "labels", "empty",
    ],
)  # fmt: skip
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_chunked_split_fails_like_the_whole_file(tmp_path, content, gz):
    path = write_idx(tmp_path / "img", content, gz=gz)
    with pytest.raises(DataError) as whole:
        read_images(path)
    with pytest.raises(DataError) as chunked:
        read_images_split(path, 2, "float64", chunk_rows=2)
    assert str(chunked.value) == str(whole.value)
    assert_one_line_naming(chunked, path)


def test_chunked_split_trusts_no_count_in_the_header(tmp_path):
    # Two billion images claimed, three present: a one-line error, no
    # attempt to hold them.
    content = idx_bytes(images(3))
    content = content[:4] + (2**31).to_bytes(4, "big") + content[8:]
    path = write_idx(tmp_path / "img", content)
    with pytest.raises(DataError) as err:
        read_images_split(path, 60_000, "float64")
    assert "truncated" in assert_one_line_naming(err, path)


@pytest.mark.parametrize(
    "content",
    [
        b"\x1f\x8b" + b"not a deflate stream at all" * 3,
        gzip.compress(idx_bytes(images(5)))[:-12],
        gzip.compress(idx_bytes(images(5)))[:-1000],
    ],
    ids=["garbage", "cut-short", "cut-mid-data"],
)
def test_chunked_split_of_damaged_gzip(tmp_path, content):
    path = tmp_path / "img.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_images_split(path, 2, "float64", chunk_rows=2)
    assert "gzip" in assert_one_line_naming(err, path)


def test_label_out_of_range(tmp_path):
    path = write_idx(tmp_path / "lab", idx_bytes([3, 9, 10, 2]))
    with pytest.raises(DataError) as err:
        read_labels(path)
    message = assert_one_line_naming(err, path)
    assert "label 10" in message
    assert "index 2" in message


def test_image_and_label_counts_differ(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=5)
    labels_path = tmp_path / (FILES["train_labels"] + ".gz")
    write_idx(tmp_path / FILES["train_labels"], idx_bytes(np.zeros(19)))
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, train_size=10)
    message = assert_one_line_naming(err, labels_path)
    assert "19 labels for 20 images" in message


@pytest.mark.parametrize(
    "content",
    [
        b"\x1f\x8b" + b"not a deflate stream at all" * 3,
        gzip.compress(idx_bytes(np.arange(100)))[:-12],
    ],
    ids=["garbage", "cut-short"],
)
def test_damaged_gzip(tmp_path, content):
    path = tmp_path / "lab.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_labels(path)
    assert "gzip" in assert_one_line_naming(err, path)


def test_missing_file_says_how_to_get_data(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=5)
    (tmp_path / (FILES["test_labels"] + ".gz")).unlink()
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, train_size=10)
    message = assert_one_line_naming(err, tmp_path / FILES["test_labels"])
    assert "--data" in message
    assert "HMNIST_DATA" in message


def test_missing_file_hint_names_a_real_command(tmp_path, capsys):
    """A command the error message suggests must exist in the CLI."""
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path)
    for command in re.findall(r"`hmnist (\w+)", str(err.value)):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0, f"the hint suggests `hmnist {command}`"


def test_too_few_training_images(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=5)
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, train_size=21)
    assert_one_line_naming(err, tmp_path / (FILES["train_images"] + ".gz"))


@pytest.mark.parametrize("train_size", [0, 60_001])
def test_train_size_out_of_range(tmp_path, train_size):
    with pytest.raises(ValueError):
        load_mnist(tmp_path, train_size=train_size)


# ----------------------------------------------------------------------------
# load_mnist: splits, scaling, dtype


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_load_mnist_splits(tmp_path, dtype, gz):
    arrays = write_mnist(tmp_path, n_train=50, n_test=12, gz=gz)
    mnist = load_mnist(tmp_path, train_size=35, dtype=dtype)

    train_x = arrays["train_images"].reshape(50, 784) / 255
    test_x = arrays["test_images"].reshape(12, 784) / 255
    (tx, ty), (vx, vy), (sx, sy) = mnist.train, mnist.validation, mnist.test
    assert (tx.shape, vx.shape, sx.shape) == ((35, 784), (15, 784), (12, 784))
    for x in (tx, vx, sx):
        assert x.dtype == dtype
    for y in (ty, vy, sy):
        assert y.dtype == np.int64
    tol = 1e-7 if dtype == "float32" else 0
    np.testing.assert_allclose(tx, train_x[:35], rtol=tol, atol=tol)
    np.testing.assert_allclose(vx, train_x[35:], rtol=tol, atol=tol)
    np.testing.assert_allclose(sx, test_x, rtol=tol, atol=tol)
    np.testing.assert_array_equal(ty, arrays["train_labels"][:35])
    np.testing.assert_array_equal(vy, arrays["train_labels"][35:])
    np.testing.assert_array_equal(sy, arrays["test_labels"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_floats_start_on_a_cache_line(tmp_path, dtype):
    # The numba kernel's 64-byte loads run at half speed across two lines.
    arrays = write_mnist(tmp_path, n_train=20, n_test=3)
    x = load_mnist(tmp_path, train_size=15, dtype=dtype).train[0]
    floats = data.to_float(arrays["train_images"].reshape(20, 784), dtype)
    for a in (x, floats):
        assert a.ctypes.data % 64 == 0
        assert a.flags.c_contiguous and a.dtype == dtype
    np.testing.assert_array_equal(floats[:15], x)


def test_pixels_span_zero_to_one(tmp_path):
    arrays = write_mnist(tmp_path, n_train=10, n_test=3)
    arrays["train_images"][0, 0, :2] = [0, 255]
    write_idx(tmp_path / FILES["train_images"], idx_bytes(arrays["train_images"]))
    x = load_mnist(tmp_path, train_size=10).train[0]
    assert x.min() == 0.0
    assert x.max() == 1.0


def test_whole_training_file_can_train(tmp_path):
    write_mnist(tmp_path, n_train=10, n_test=3)
    mnist = load_mnist(tmp_path, train_size=10)
    assert len(mnist.train[0]) == 10
    assert mnist.validation[0].shape == (0, 784)


def test_real_mnist_book_splits(real_data_dir):
    mnist = load_mnist(real_data_dir, dtype="float32")
    assert [len(s[1]) for s in (mnist.train, mnist.validation, mnist.test)] == [
        50_000,
        10_000,
        10_000,
    ]
    assert mnist.train[0].min() == 0.0
    assert mnist.train[0].max() == 1.0
    assert set(np.unique(mnist.test[1])) == set(range(10))


# ----------------------------------------------------------------------------
# Where the data is: --data, then $HMNIST_DATA, then ./data/mnist


@pytest.fixture
def three_folders(tmp_path, monkeypatch):
    """Return (arg, env, default) folders whose test labels differ."""
    monkeypatch.chdir(tmp_path)
    folders = tmp_path / "arg", tmp_path / "env", tmp_path / "data" / "mnist"
    for seed, folder in enumerate(folders):
        write_mnist(folder, n_train=10, n_test=20, seed=seed)
    return folders


def labels_in(folder):
    """Return the test labels load_mnist reads from ``folder`` (None: default)."""
    return load_mnist(folder, train_size=10).test[1]


def test_data_arg_beats_environment(three_folders, monkeypatch):
    arg, env, _ = three_folders
    monkeypatch.setenv("HMNIST_DATA", str(env))
    assert data.data_dir(arg) == arg
    np.testing.assert_array_equal(labels_in(str(arg)), labels_in(arg))
    assert not np.array_equal(labels_in(arg), labels_in(None))


def test_environment_beats_default(three_folders, monkeypatch):
    _, env, default = three_folders
    monkeypatch.setenv("HMNIST_DATA", str(env))
    assert data.data_dir() == env
    np.testing.assert_array_equal(labels_in(None), labels_in(env))
    assert not np.array_equal(labels_in(None), labels_in(default))


def test_default_is_data_mnist_in_current_folder(three_folders, monkeypatch):
    _, env, default = three_folders
    monkeypatch.delenv("HMNIST_DATA", raising=False)
    assert data.data_dir().resolve() == default.resolve()
    np.testing.assert_array_equal(labels_in(None), labels_in(default))
    assert not np.array_equal(labels_in(None), labels_in(env))
