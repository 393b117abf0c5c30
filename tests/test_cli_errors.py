"""Bad input and faults at the hmnist command: exit codes and one-line errors.

A table of bad option values for train, info, download and data verify:
each must exit 2 with exactly one line on stderr, the line given here.
Then faults at run time (exit 1): a learning rate that diverges, and a
model file that fails mid-write; neither may spoil an earlier file.
"""

import json
import re

import numpy as np
import pytest

from hmnist import cli, threads
from hmnist.network import Network

MAX_NUMBA = threads.max_numba_threads()
MIRROR_MUST = "must be an http:// or https:// URL with a host, got"


def bad_values(tmp_path):
    """Return (argv, stderr line) rows; paths live under ``tmp_path``."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    file, under = str(a_file), str(a_file / "x.npz")
    train = "hmnist train: error: argument"
    download = "hmnist download: error: argument"
    verify = "hmnist data verify: error: argument"
    return [
        # hmnist train
        (["train", "--kernel", "nope"], f"{train} --kernel: unknown kernel 'nope'; "),
        (["train", "--sizes", "784,30"], f"{train} --sizes: sizes must start at 784"),
        (["train", "--sizes", "784,0,10"], f"{train} --sizes: each size must be 1.."),
        (["train", "--sizes", "784,x,10"], f"{train} --sizes: sizes are integers"),
        (["train", "--epochs", "0"], f"{train} --epochs: must be 1..10000, got 0"),
        (["train", "--epochs", "10001"], f"{train} --epochs: must be 1..10000, got "),
        (["train", "--epochs", "1.5"], f"{train} --epochs: not an integer: '1.5'"),
        (["train", "--epochs"], f"{train} --epochs: expected one argument"),
        (
            ["train", "--batch-size", "0"],
            f"{train} --batch-size: must be 1..60000, got 0",
        ),
        (
            ["train", "--batch-size", "60001"],
            f"{train} --batch-size: must be 1..60000, got 60001",
        ),
        (["train", "--eta", "0"], f"{train} --eta: must be a finite number > 0, got 0"),
        (["train", "--eta", "-3"], f"{train} --eta: must be a finite number > 0"),
        (["train", "--eta", "nan"], f"{train} --eta: must be a finite number > 0"),
        (["train", "--eta", "1e999"], f"{train} --eta: must be a finite number > 0"),
        (["train", "--eta", "fast"], f"{train} --eta: not a number: 'fast'"),
        (["train", "--cost", "hinge"], f"{train} --cost: "),
        (["train", "--init", "xavier"], f"{train} --init: invalid choice: "),
        (["train", "--dtype", "float16"], f"{train} --dtype: invalid choice: "),
        (["train", "--seed", "-1"], f"{train} --seed: must be 0..4294967295, got -1"),
        (
            ["train", "--seed", str(2**32)],
            f"{train} --seed: must be 0..4294967295, got 4294967296",
        ),
        (
            ["train", "--train-size", "0"],
            f"{train} --train-size: must be 1..60000, got 0",
        ),
        (
            ["train", "--train-size", "60001"],
            f"{train} --train-size: must be 1..60000, got 60001",
        ),
        (
            ["train", "--blas-threads", "0"],
            f"{train} --blas-threads: must be 1..1024, got 0",
        ),
        (
            ["train", "--blas-threads", "1025"],
            f"{train} --blas-threads: must be 1..1024, got 1025",
        ),
        (
            ["train", "--numba-threads", "0"],
            f"{train} --numba-threads: must be 1..{MAX_NUMBA}, got 0",
        ),
        (
            ["train", "--numba-threads", str(MAX_NUMBA + 1)],
            f"{train} --numba-threads: must be 1..{MAX_NUMBA}, got {MAX_NUMBA + 1}",
        ),
        (["train", "--data", file], f"{train} --data: not a folder: {file!r}"),
        (["train", "--data", ""], f"{train} --data: empty folder name"),
        (
            ["train", "--save", str(tmp_path)],
            f"{train} --save: is a folder, not a file: {str(tmp_path)!r}",
        ),
        (["train", "--save", under], f"{train} --save: {file!r} is not a folder"),
        (["train", "--save", ""], f"{train} --save: empty file name"),
        (
            ["train", "--json", str(tmp_path)],
            f"{train} --json: is a folder, not a file: {str(tmp_path)!r}",
        ),
        (["train", "--json", under], f"{train} --json: {file!r} is not a folder"),
        (["train", "--bogus"], "hmnist: error: unrecognized arguments: --bogus"),
        # hmnist info
        (
            ["info", "--json=yes"],
            "hmnist info: error: argument --json: ignored explicit argument 'yes'",
        ),
        (["info", "extra"], "hmnist: error: unrecognized arguments: extra"),
        # hmnist download
        (["download", "--dest", file], f"{download} --dest: not a folder: {file!r}"),
        (["download", "--dest", ""], f"{download} --dest: empty folder name"),
        (
            ["download", "--mirror", "ftp://host/mnist/"],
            f"{download} --mirror: {MIRROR_MUST} 'ftp://host/mnist/'",
        ),
        (
            ["download", "--mirror", "http://"],
            f"{download} --mirror: {MIRROR_MUST} 'http://'",
        ),
        (
            ["download", "--mirror", "mirror.example/mnist"],
            f"{download} --mirror: {MIRROR_MUST} 'mirror.example/mnist'",
        ),
        (
            ["download", "--mirror", "http://host:99999/"],
            f"{download} --mirror: {MIRROR_MUST} 'http://host:99999/'",
        ),
        (
            ["download", "--timeout", "0"],
            f"{download} --timeout: must be > 0 and <= 3600, got 0",
        ),
        (
            ["download", "--timeout", "-1"],
            f"{download} --timeout: must be > 0 and <= 3600, got -1",
        ),
        (
            ["download", "--timeout", "3601"],
            f"{download} --timeout: must be > 0 and <= 3600, got 3601",
        ),
        (
            ["download", "--timeout", "nan"],
            f"{download} --timeout: must be > 0 and <= 3600, got nan",
        ),
        (
            ["download", "--timeout", "inf"],
            f"{download} --timeout: must be > 0 and <= 3600, got inf",
        ),
        (["download", "--timeout", "soon"], f"{download} --timeout: not a number: "),
        (
            ["download", "--retries", "-1"],
            f"{download} --retries: must be 0..100, got -1",
        ),
        (
            ["download", "--retries", "101"],
            f"{download} --retries: must be 0..100, got 101",
        ),
        (["download", "--retries", "two"], f"{download} --retries: not an integer: "),
        # hmnist data verify
        (["data", "verify", "--data", file], f"{verify} --data: not a folder: "),
        (["data", "verify", "--data", ""], f"{verify} --data: empty folder name"),
        (["data", "verify", "--data"], f"{verify} --data: expected one argument"),
        (
            ["data"],
            "hmnist data: error: the following arguments are required: COMMAND",
        ),
        (["data", "check"], "hmnist data: error: argument COMMAND: invalid choice: "),
    ]


def test_table_covers_every_option(tmp_path):
    # Every option of these commands has a bad value in the table.
    tried = {
        (" ".join(a for a in argv if not a.startswith("-"))[:11].strip(), option)
        for argv, _ in bad_values(tmp_path)
        for option in (a.split("=")[0] for a in argv if a.startswith("--"))
    }
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    data_sub = next(a for a in sub["data"]._actions if a.dest == "data_command")
    commands = {
        "train": sub["train"],
        "info": sub["info"],
        "download": sub["download"],
        "data verify": data_sub.choices["verify"],
    }
    for name, command in commands.items():
        for action in command._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert any(n.startswith(name) and o == option for n, o in tried), (
                        f"hmnist {name} {option} has no bad value"
                    )


def test_bad_values_exit_2_with_one_line(tmp_path, capsys):
    failures = []
    for argv, expected in bad_values(tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        out, err = capsys.readouterr()
        lines = err.splitlines()
        if (
            exit_info.value.code != 2
            or out
            or len(lines) != 1
            or not lines[0].startswith(expected)
        ):
            failures.append((argv, exit_info.value.code, err))
    assert failures == []


# ----------------------------------------------------------------------------
# Faults at run time: exit 1, one line, earlier files intact


def diverging_train(data_dir, *extra):
    """Return the argv of a run whose learning rate overflows the weights."""
    return [
        "train", "--data", str(data_dir), "--kernel", "loop", "--epochs", "4",
        "--train-size", "100", "--cost", "cross-entropy", "--eta", "1e308", *extra,
    ]  # fmt: skip


def test_divergence_stops_naming_the_epoch(tiny_mnist, capsys):
    assert cli.main(diverging_train(tiny_mnist)) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Warning" not in err
    last = err.splitlines()[-1]
    assert re.fullmatch(
        r"hmnist train: error: epoch \d+: the weights became NaN or infinite "
        r"\(eta 1e\+308 is too large for this network\)",
        last,
    )
    # Only the warm-up note may come before the error.
    assert len(err.splitlines()) <= 2


def test_divergence_keeps_the_saved_model_and_marks_the_json(
    tiny_mnist, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    model, record = out / "model.npz", out / "run.json"
    Network([784, 30, 10], seed=7).save(model)
    before = model.read_bytes()
    argv = diverging_train(tiny_mnist, "--save", str(model), "--json", str(record))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    epoch = int(re.search(r"error: epoch (\d+):", err).group(1))
    assert model.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["model.npz", "run.json"]
    document = json.loads(record.read_text())
    assert document["status"] == "diverged"
    assert document["error"].startswith(f"epoch {epoch}: ")
    assert len(document["epochs"]) == epoch
    assert "commit" not in document


def test_completed_run_json_says_complete(tiny_mnist, tmp_path, capsys):
    record = tmp_path / "run.json"
    argv = ["train", "--data", str(tiny_mnist), "--kernel", "loop", "--epochs", "2"]
    assert cli.main([*argv, "--train-size", "100", "--json", str(record)]) == 0
    document = json.loads(record.read_text())
    assert document["status"] == "complete"
    assert len(document["epochs"]) == 2


def failing_savez(file, **arrays):
    """Write a few bytes of a model, then fail as a full disk would."""
    file.write(b"PK\x03\x04 half a model")
    raise OSError(28, "No space left on device")


def test_save_failing_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    Network([784, 30, 10], seed=1).save(path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError):
        Network([784, 30, 10], seed=2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.npz"]


def test_cli_save_failing_mid_write_is_one_line(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "out" / "model.npz"
    Network([784, 30, 10], seed=1).save(path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", failing_savez)
    argv = ["train", "--data", str(tiny_mnist), "--kernel", "loop", "--epochs", "1"]
    assert cli.main([*argv, "--train-size", "100", "--save", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"hmnist train: error: {path}: cannot write the network "
        "(No space left on device)"
    )
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.npz"]
