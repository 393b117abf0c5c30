"""The hmnist command, run in-process on tiny data (and once as a process)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import threadpoolctl

from hmnist import cli
from hmnist.data import FILES, load_mnist
from hmnist.network import Network

EPOCH_LINE = re.compile(r"^Epoch (\d+): (\d+)/(\d+) \((\d+\.\d\d)%\)  \d+\.\d\d s$")


def fast_train(data_dir, *extra):
    """Return the argv of a quick ``hmnist train`` on ``data_dir``."""
    return [
        "train", "--data", str(data_dir), "--train-size", "100",
        "--epochs", "1", "--kernel", "matmul", *extra,
    ]  # fmt: skip


def epoch_lines(out):
    """Return the regex matches of the epoch lines in ``out``."""
    lines = [line for line in out.splitlines() if line.startswith("Epoch")]
    matches = [EPOCH_LINE.match(line) for line in lines]
    assert all(matches), f"epoch lines out of format: {lines}"
    return matches


# ----------------------------------------------------------------------------
# Usage errors: exit 2, one line on stderr, no traceback


@pytest.mark.parametrize(
    "bad",
    [
        ["--batch-size", "0"],
        ["--kernel", "nope"],
        ["--cost", "nope"],
        ["--eta", "-1"],
        ["--eta", "nan"],
        ["--eta", "inf"],
        ["--eta", "0"],
        ["--sizes", "100,30,10"],
        ["--sizes", "784,30,5"],
        ["--sizes", "784"],
        ["--sizes", "garbage"],
        ["--sizes", "784,,10"],
        ["--epochs", "0"],
        ["--init", "xavier"],
        ["--numba-threads", "0"],
    ],
    ids=lambda bad: " ".join(bad),
)
def test_usage_error_is_one_line_and_exit_2(tiny_mnist, capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(fast_train(tiny_mnist, *bad))
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "error" in err
    assert "Traceback" not in err


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_usage_error_in_a_process_has_no_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "hmnist", "train", "--batch-size", "0"],
        capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert "--batch-size" in done.stderr


@pytest.mark.parametrize("kernel", ["matmul", "loop"])
def test_a_run_without_the_numba_kernel_never_imports_numba(
    tiny_mnist, tmp_path, kernel
):
    record = tmp_path / "run.json"
    argv = [*fast_train(tiny_mnist, "--json", str(record)), "--kernel", kernel]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hmnist", *argv],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "hmnist.trainer" in imported  # the import log is there
    assert not [
        name for name in imported if name.split(".")[0] in ("numba", "llvmlite")
    ]
    runtime = json.loads(record.read_text())["runtime"]
    assert runtime["threading_layer"] == "not loaded"
    assert runtime["numba_threads"] is None


# ----------------------------------------------------------------------------
# Data errors: exit 1, one line naming the file


def test_missing_data_dir_exit_1_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli.main(fast_train(missing)) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    assert str(missing / FILES["train_images"]) in err
    assert "Traceback" not in err


def test_damaged_file_exit_1(tiny_mnist, capsys):
    path = tiny_mnist / (FILES["test_labels"] + ".gz")
    path.write_bytes(path.read_bytes()[:20])
    assert cli.main(fast_train(tiny_mnist)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert str(path) in err


def test_train_size_beyond_the_file_exit_1(tiny_mnist, capsys):
    assert cli.main(fast_train(tiny_mnist, "--train-size", "500")) == 1
    assert capsys.readouterr().err.count("\n") == 1


# ----------------------------------------------------------------------------
# Runs


def test_epoch_lines(tiny_mnist, capsys):
    assert cli.main(fast_train(tiny_mnist, "--epochs", "3")) == 0
    matches = epoch_lines(capsys.readouterr().out)
    assert [int(m[1]) for m in matches] == [0, 1, 2]
    for m in matches:
        correct, total = int(m[2]), int(m[3])
        assert total == 30
        assert float(m[4]) == pytest.approx(100 * correct / total, abs=0.005)


def test_data_from_environment(tiny_mnist, monkeypatch, capsys):
    monkeypatch.setenv("HMNIST_DATA", str(tiny_mnist))
    argv = fast_train(tiny_mnist)
    del argv[1:3]
    assert "--data" not in argv
    assert cli.main(argv) == 0
    assert len(epoch_lines(capsys.readouterr().out)) == 1


def test_json_has_config_and_every_epoch(tiny_mnist, tmp_path, capsys):
    path = tmp_path / "out" / "run.json"
    argv = fast_train(tiny_mnist, "--epochs", "2", "--eta", "0.5", "--json", str(path))
    assert cli.main(argv) == 0
    printed = epoch_lines(capsys.readouterr().out)
    document = json.loads(path.read_text())

    assert document["format_version"] == cli.FORMAT_VERSION
    config = document["config"]
    assert config["sizes"] == [784, 30, 10]
    assert config["eta"] == 0.5
    assert config["kernel"] == "matmul"
    assert config["epochs"] == 2
    assert config["train_size"] == 100
    epochs = document["epochs"]
    assert len(epochs) == 2
    for record, line in zip(epochs, printed):
        for key in ("correct", "total", "accuracy", "train_seconds", "eval_seconds"):
            assert key in record
        assert (record["correct"], record["total"]) == (int(line[2]), int(line[3]))
        assert record["accuracy"] == record["correct"] / record["total"]


@pytest.mark.parametrize(
    "kernel, extra, expected",
    [("numba", [], 1), ("numba", ["--blas-threads", "2"], 2), ("matmul", [], 2)],
    ids=["numba holds BLAS at 1", "numba as told", "matmul keeps BLAS's own"],
)
def test_train_holds_blas_at_1_for_a_kernel_not_on_blas(
    tiny_mnist, tmp_path, capsys, kernel, extra, expected
):
    path = tmp_path / "run.json"
    argv = fast_train(tiny_mnist, "--json", str(path), *extra)
    argv[argv.index("--kernel") + 1] = kernel
    # BLAS starts at 2 threads here whatever the machine's cores.
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert cli.main(argv) == 0
    pools = json.loads(path.read_text())["runtime"]["threadpool_info"]
    blas = [pool["num_threads"] for pool in pools if pool["user_api"] == "blas"]
    assert blas and set(blas) == {expected}


def test_saved_network_scores_the_last_epoch(tiny_mnist, tmp_path, capsys):
    """Uses the default kernel (numba) end to end."""
    path = tmp_path / "net.npz"
    argv = ["train", "--data", str(tiny_mnist), "--train-size", "100"]
    argv += ["--epochs", "2", "--save", str(path)]
    assert cli.main(argv) == 0
    last = epoch_lines(capsys.readouterr().out)[-1]

    test_x, test_y = load_mnist(tiny_mnist, train_size=100).test
    net = Network.load(path)
    assert net.sizes == [784, 30, 10]
    assert net.evaluate(test_x, test_y) == int(last[2])
