"""Network: shapes, seeded initialisation, feedforward, save and load."""

import os
import stat

import numpy as np
import pytest

from hmnist.data import to_float
from hmnist.errors import ModelError
from hmnist.network import Network, sigmoid


def sample_batch(n=9, n_in=6, seed=3):
    """Return ``n`` random inputs ``(n, n_in)`` in [0, 1) and labels 0-3."""
    rng = np.random.default_rng(seed)
    return rng.random((n, n_in)), rng.integers(0, 4, n)


# ----------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize("sizes", [[784, 30, 10], [12, 7, 5, 4], [3, 2]])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_shapes_and_dtype(sizes, dtype):
    net = Network(sizes, dtype=dtype)
    assert net.sizes == sizes
    assert net.n_layers == len(sizes) - 1
    assert [w.shape for w in net.weights] == list(zip(sizes[1:], sizes[:-1]))
    assert [b.shape for b in net.biases] == [(n,) for n in sizes[1:]]
    for p in net.weights + net.biases:
        assert p.dtype == dtype


@pytest.mark.parametrize("init", ["standard", "scaled"])
def test_same_seed_same_parameters(init):
    a, b = (
        Network([20, 8, 3], init=init, seed=7),
        Network([20, 8, 3], init=init, seed=7),
    )
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(p, q)


def test_different_seed_different_parameters():
    a, b = Network([20, 8, 3], seed=0), Network([20, 8, 3], seed=1)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert not np.allclose(p, q)


def test_standard_and_scaled_spreads():
    """standard: W, b ~ N(0, 1); scaled: W ~ N(0, 1/n_in), b ~ N(0, 1)."""
    n_in = 1000
    standard = Network([n_in, 400], init="standard", seed=0)
    scaled = Network([n_in, 400], init="scaled", seed=0)

    assert standard.weights[0].std() == pytest.approx(1.0, rel=0.05)
    assert scaled.weights[0].std() == pytest.approx(n_in**-0.5, rel=0.05)
    assert abs(standard.weights[0].mean()) < 0.01
    assert abs(scaled.weights[0].mean()) < 0.01 * n_in**-0.5
    for net in (standard, scaled):
        assert net.biases[0].std() == pytest.approx(1.0, rel=0.2)


def test_float32_network_is_float64_network_rounded():
    wide = Network([30, 12, 4], seed=5, dtype="float64")
    narrow = Network([30, 12, 4], seed=5, dtype="float32")
    for p, q in zip(wide.weights + wide.biases, narrow.weights + narrow.biases):
        np.testing.assert_array_equal(q, p.astype(np.float32))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sizes": [5]},
        {"sizes": [5, 0, 2]},
        {"sizes": [5, 2.5, 2]},
        {"sizes": [5, 2], "init": "xavier"},
        {"sizes": [5, 2], "dtype": "float16"},
        {"sizes": [5, 2], "dtype": "int64"},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        Network(**kwargs)


def test_copy_is_independent():
    net = Network([6, 4, 2])
    clone = net.copy()
    clone.weights[0][0, 0] += 1
    clone.biases[1][0] += 1
    assert net.weights[0][0, 0] != clone.weights[0][0, 0]
    assert net.biases[1][0] != clone.biases[1][0]


# ----------------------------------------------------------------------------
# Feedforward, predict, evaluate


def test_feedforward_by_hand():
    net = Network([6, 5, 4], seed=2)
    x, _ = sample_batch()
    out = np.empty((len(x), 4))
    for s, a in enumerate(x):
        for w, b in zip(net.weights, net.biases):
            a = 1 / (1 + np.exp(-(w @ a + b)))
        out[s] = a
    np.testing.assert_allclose(net.feedforward(x), out, rtol=1e-14)


def test_sigmoid_saturates_without_warnings():
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        np.testing.assert_array_equal(
            sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0, 0.5, 1]
        )


def test_predict_and_evaluate():
    net = Network([6, 5, 4], seed=2)
    x, y = sample_batch(n=25)
    predicted = np.argmax(net.feedforward(x), axis=1)
    np.testing.assert_array_equal(net.predict(x), predicted)
    assert net.evaluate(x, predicted) == 25
    expected = int(np.sum(predicted == y))
    assert net.evaluate(x, y) == expected
    assert net.evaluate(x, y, chunk=4) == expected


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_evaluate_scales_uint8_pixels_like_floats(dtype):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (37, 6), dtype=np.uint8)
    y = rng.integers(0, 4, 37)
    net = Network([6, 5, 4], seed=2, dtype=dtype)
    predicted = net.predict(to_float(pixels, dtype))
    assert net.evaluate(pixels, predicted, chunk=10) == 37
    assert net.evaluate(pixels, y, chunk=10) == int(np.sum(predicted == y))


def test_float32_network_computes_in_float32():
    net = Network([6, 5, 4], dtype="float32")
    x, _ = sample_batch()
    assert net.feedforward(x.astype(np.float32)).dtype == np.float32


# ----------------------------------------------------------------------------
# Save and load


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip(tmp_path, dtype):
    net = Network([10, 7, 5, 3], init="scaled", seed=4, dtype=dtype)
    path = tmp_path / "net.npz"
    net.save(path)
    loaded = Network.load(path)

    assert loaded.sizes == net.sizes
    assert loaded.dtype == dtype
    for p, q in zip(net.weights + net.biases, loaded.weights + loaded.biases):
        assert q.dtype == p.dtype
        np.testing.assert_array_equal(p, q)
    x, _ = sample_batch(n_in=10)
    np.testing.assert_array_equal(loaded.feedforward(x), net.feedforward(x))


def test_load_rejects_shapes_that_do_not_fit(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        format=np.int64(1),
        sizes=np.array([4, 3, 2]),
        w0=np.zeros((3, 5)),
        b0=np.zeros(3),
        w1=np.zeros((2, 3)),
        b1=np.zeros(2),
    )
    with pytest.raises(ModelError, match="layer 0"):
        Network.load(path)


def test_load_rejects_missing_layer(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, format=np.int64(1), sizes=np.array([4, 3, 2]), w0=np.zeros((3, 4)))
    with pytest.raises(ModelError):
        Network.load(path)


def test_load_rejects_npz_without_sizes(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ModelError):
        Network.load(path)


@pytest.mark.parametrize(
    "sizes", [np.int64(5), np.array([4.5, 2.0]), np.array([4])], ids=str
)
def test_load_rejects_malformed_sizes(tmp_path, sizes):
    path = tmp_path / "bad.npz"
    np.savez(path, format=np.int64(1), sizes=sizes)
    with pytest.raises(ModelError, match="bad.npz"):
        Network.load(path)


def write_text(path):
    """Write a text file."""
    path.write_text("not a model\n")


def write_empty(path):
    """Write an empty file."""
    path.write_bytes(b"")


def write_npy(path):
    """Write a single array in .npy format (not .npz)."""
    with open(path, "wb") as f:
        np.save(f, np.zeros((3, 4)))


@pytest.mark.parametrize("write", [write_text, write_empty, write_npy])
def test_load_rejects_a_file_that_is_not_npz(tmp_path, write):
    path = tmp_path / "net.npz"
    write(path)
    with pytest.raises(ModelError, match="net.npz"):
        Network.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(ModelError):
        Network.load(tmp_path / "nowhere.npz")


def test_save_leaves_ordinary_permissions(tmp_path):
    """A new file gets the umask's mode, a replaced file keeps its own."""
    umask = os.umask(0o022)
    try:
        path = tmp_path / "net.npz"
        Network([8, 5, 3]).save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)
        Network([8, 5, 3]).save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(umask)


def test_save_is_atomic(tmp_path, monkeypatch):
    """A save that fails halfway leaves the earlier file whole, no temp files."""
    path = tmp_path / "net.npz"
    first = Network([8, 5, 3], seed=1)
    first.save(path)
    before = path.read_bytes()

    def broken_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        Network([8, 5, 3], seed=2).save(path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]
    loaded = Network.load(path)
    for p, q in zip(first.weights, loaded.weights):
        np.testing.assert_array_equal(p, q)
