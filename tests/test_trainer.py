"""The shared SGD trainer: reproducibility, shuffles, divergence, callbacks."""

import json

import numpy as np
import pytest

from hmnist import kernels
from hmnist.data import load_mnist
from hmnist.errors import DivergenceError
from hmnist.network import Network
from hmnist.trainer import EpochResult, History, TrainConfig, shuffles, train

CORE = ("loop", "matmul", "numba")
SIZES = [12, 7, 5]


@pytest.fixture(scope="module")
def small_data():
    """Return ((x, y) to train, (x, y) to test) of 12 inputs and 5 classes."""
    rng = np.random.default_rng(0)
    x = rng.random((130, 12))
    # A learnable rule, so that the correct counts move between epochs.
    y = np.argmax(x[:, :5], axis=1)
    return (x[:100], y[:100]), (x[100:], y[100:])


def run(name, data, seed=0, epochs=3, **kwargs):
    """Train a fresh [12, 7, 5] network; return it and its history."""
    (train_data, test_data), net = data, Network(SIZES, seed=seed)
    options = {"batch_size": 10, "eta": 3.0, "cost": "quadratic", "seed": seed}
    options.update(kwargs)
    history = train(
        net, kernels.get(name), train_data, epochs=epochs, test_data=test_data,
        **options,
    )  # fmt: skip
    return net, history


def assert_same_parameters(a, b):
    """Check that two networks hold bit-identical parameters."""
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(p, q)


# ----------------------------------------------------------------------------
# Shuffles


def test_shuffles_are_seeded_permutations():
    first, again, other = shuffles(4, 50), shuffles(4, 50), shuffles(5, 50)
    orders = [next(first) for _ in range(3)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(50))
        np.testing.assert_array_equal(order, next(again))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], next(other))


# ----------------------------------------------------------------------------
# Runs


@pytest.mark.parametrize("name", CORE)
def test_same_seed_same_history_and_weights(small_data, name):
    net_a, history_a = run(name, small_data)
    net_b, history_b = run(name, small_data)
    counts = [e.correct for e in history_a.epochs]
    assert counts == [e.correct for e in history_b.epochs]
    assert max(counts) > 0
    assert_same_parameters(net_a, net_b)


def test_other_seed_other_weights(small_data):
    net_a, _ = run("loop", small_data, seed=0)
    net_b, _ = run("loop", small_data, seed=1)
    assert not np.allclose(net_a.weights[0], net_b.weights[0])


def test_train_is_train_epoch_over_the_seeded_shuffles(small_data):
    """Epoch e takes its samples in the e-th order of shuffles(seed)."""
    (x, y), _ = small_data
    trained, _ = run("loop", small_data, seed=3, epochs=2)

    by_hand, orders = Network(SIZES, seed=3), shuffles(3, len(x))
    for _ in range(2):
        kernels.get("loop").train_epoch(
            by_hand, x, y, next(orders), 10, 3.0, "quadratic"
        )

    assert_same_parameters(trained, by_hand)


@pytest.mark.parametrize("name", CORE)
def test_warm_up_leaves_the_network_alone(small_data, name):
    warmed, history = run(name, small_data, epochs=1, warm_up=True)
    cold, cold_history = run(name, small_data, epochs=1, warm_up=False)
    assert_same_parameters(warmed, cold)
    assert history.warmup_seconds > 0
    assert cold_history.warmup_seconds == 0


def test_history_records_each_epoch(small_data):
    net, history = run("matmul", small_data, epochs=4)
    _, (test_x, test_y) = small_data
    assert [e.epoch for e in history.epochs] == [0, 1, 2, 3]
    assert all(e.total == len(test_y) for e in history.epochs)
    assert history.epochs[-1].correct == net.evaluate(test_x, test_y)
    last = history.epochs[-1]
    assert last.accuracy == last.correct / last.total
    json.dumps(history.as_dict())


def test_without_test_data_counts_are_zero(small_data):
    (train_data, _) = small_data
    history = train(
        Network(SIZES), kernels.get("matmul"), train_data,
        epochs=1, batch_size=10, eta=3.0, cost="quadratic", seed=0,
    )  # fmt: skip
    assert (history.epochs[0].correct, history.epochs[0].total) == (0, 0)


def test_on_epoch_called_once_per_epoch(small_data):
    calls = []

    def on_epoch(result, history):
        calls.append((result, history, len(history.epochs)))

    _, history = run("matmul", small_data, epochs=3, on_epoch=on_epoch)

    assert len(calls) == 3
    for epoch, (result, seen, n_recorded) in enumerate(calls):
        assert isinstance(result, EpochResult)
        assert result.epoch == epoch
        assert seen is history
        assert n_recorded == epoch + 1
        assert seen.epochs[epoch] is result


def test_unknown_cost(small_data):
    with pytest.raises(ValueError, match="nope"):
        run("loop", small_data, cost="nope")


# ----------------------------------------------------------------------------
# Divergence


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", CORE)
def test_infinite_weights_raise_divergence_at_epoch_0(small_data, name):
    (train_data, test_data), net = small_data, Network(SIZES)
    net.weights[0][0, 0] = np.inf
    with pytest.raises(DivergenceError, match="epoch 0"):
        train(
            net, kernels.get(name), train_data, epochs=3, batch_size=10,
            eta=3.0, cost="quadratic", seed=0, test_data=test_data,
        )  # fmt: skip


def test_divergence_names_the_epoch_it_happened_in(small_data):
    (train_data, test_data), net = small_data, Network(SIZES)
    seen = []

    def poison_after_epoch_1(result, history):
        seen.append(result.epoch)
        if result.epoch == 1:
            net.biases[0][:] = np.nan

    with pytest.raises(DivergenceError, match="epoch 2") as err:
        train(
            net, kernels.get("matmul"), train_data, epochs=5, batch_size=10,
            eta=3.0, cost="quadratic", seed=0, test_data=test_data,
            on_epoch=poison_after_epoch_1,
        )  # fmt: skip
    assert seen == [0, 1]
    assert "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_infinite_eta_diverges(small_data):
    with pytest.raises(DivergenceError, match="epoch 0"):
        run("matmul", small_data, eta=np.inf)


# ----------------------------------------------------------------------------
# Config


def test_config_as_dict_is_json_ready():
    config = TrainConfig(sizes=(784, 30, 10))
    document = json.loads(json.dumps(config.as_dict()))
    assert document["sizes"] == [784, 30, 10]
    assert document["eta"] == 3.0
    assert History().as_dict() == {"warmup_seconds": 0.0, "epochs": []}


# ----------------------------------------------------------------------------
# The book's chapter 1 run on the real data


def test_numba_one_epoch_on_real_mnist_beats_88_percent(real_data_dir):
    mnist = load_mnist(real_data_dir)
    net = Network([784, 30, 10], init="standard", seed=0)
    history = train(
        net, kernels.get("numba"), mnist.train, epochs=1, batch_size=10,
        eta=3.0, cost="quadratic", seed=0, test_data=mnist.test,
    )  # fmt: skip
    result = history.epochs[0]
    assert result.total == 10_000
    assert result.correct > 8_800
