"""Damaged IDX files by the thousand: each one is a one-line DataError.

Hypothesis draws a valid image/label pair and damages one file or both:
truncation, bytes appended, a flipped magic number, a header dimension
that disagrees with the data, images that are not 28 x 28, label counts
that disagree with the image count, labels out of range, and gzip
streams that are cut, carry a wrong trailer, or are garbage; in any
combination. Every damage alone makes the pair unreadable, and the
strategy never pairs two damages that could cancel out (at most one of
the damages that change a length), so every example must fail. The file
the reader names is the first damaged one it reads: images before labels.
"""

import contextlib
import gzip
import hashlib
import io
import math
from datetime import timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from hmnist import cli, download
from hmnist.data import FILES, DataError, read_pair

# A deadline far above the milliseconds an example takes: it flags a hang,
# not a slow machine.
DEADLINE = timedelta(seconds=10)
# Dimensions worth trying: small ones, ones whose product wraps around a
# 64-bit integer, and anything else a uint32 can hold.
DIM = st.one_of(
    st.integers(0, 64),
    st.sampled_from([2**21, 2**22, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
LENGTH_DAMAGES = [None, "truncate", "append", "header dim"]
GZIP_DAMAGES = [None, "gzip cut", "gzip trailer", "gzip garbage"]


def idx(dims, data):
    """Return an unsigned-byte IDX file: magic, big-endian dims, then data."""
    header = bytes([0, 0, 0x08, len(dims)])
    return header + b"".join(d.to_bytes(4, "big") for d in dims) + data


@st.composite
def damaged_file(draw, kind, n, rng):
    """Draw one file of ``kind`` for ``n`` samples.

    Return its bytes, the damages done, whether it is gzip'd, and the valid
    content it was made from.
    """
    damages = []
    if kind == "images":
        data = rng.integers(0, 256, n * 28 * 28, dtype=np.uint8)
        valid = idx([n, 28, 28], data.tobytes())
        rows, cols = 28, 28
        if draw(st.booleans()):
            rows, cols = draw(
                st.tuples(st.integers(0, 40), st.integers(0, 40)).filter(
                    lambda shape: shape != (28, 28)
                )
            )
            data = rng.integers(0, 256, n * rows * cols, dtype=np.uint8)
            damages.append("not 28x28")
        dims = [n, rows, cols]
    else:
        data = rng.integers(0, 10, n, dtype=np.uint8)
        valid = idx([n], data.tobytes())
        count = n
        if draw(st.booleans()):
            count = draw(st.integers(0, 8).filter(lambda c: c != n))
            data = rng.integers(0, 10, count, dtype=np.uint8)
            damages.append("count")
        dims = [count]
        if count and draw(st.booleans()):
            data[draw(st.integers(0, count - 1))] = draw(st.integers(10, 255))
            damages.append("label out of range")

    length_damage = draw(st.sampled_from(LENGTH_DAMAGES))
    header_dims = list(dims)
    if length_damage == "header dim":
        # Any dims whose product differs from the data's length.
        header_dims = [draw(DIM) if draw(st.booleans()) else d for d in dims]
        assume(math.prod(header_dims) != math.prod(dims))
    content = bytearray(idx(header_dims, data.tobytes()))
    if draw(st.booleans()):
        content[draw(st.integers(0, 3))] ^= draw(st.integers(1, 255))
        damages.append("magic")
    if length_damage == "truncate":
        content = content[: len(content) - draw(st.integers(1, len(content)))]
    elif length_damage == "append":
        content += draw(st.binary(min_size=1, max_size=64))
    if length_damage:
        damages.append(length_damage)

    gzip_damage = draw(st.sampled_from(GZIP_DAMAGES))
    gz = bool(gzip_damage) or draw(st.booleans())
    if gz:
        content = bytearray(gzip.compress(bytes(content), mtime=0))
    if gzip_damage == "gzip cut":
        content = content[: len(content) - draw(st.integers(1, len(content)))]
    elif gzip_damage == "gzip trailer":
        content[len(content) - draw(st.integers(1, 8))] ^= draw(st.integers(1, 255))
    elif gzip_damage == "gzip garbage":
        content = b"\x1f\x8b" + draw(st.binary(max_size=200))
    if gzip_damage:
        damages.append(gzip_damage)
    return bytes(content), damages, gz, valid


@st.composite
def damaged_pair(draw):
    """Draw an image/label pair with at least one damage; return both files."""
    n = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    images = draw(damaged_file("images", n, rng))
    labels = draw(damaged_file("labels", n, rng))
    assume(images[1] or labels[1])
    return {"images": images, "labels": labels}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Return one folder for every example; each example empties it first."""
    return tmp_path_factory.mktemp("fuzz")


def write_pair(folder, split, pair):
    """Write a drawn pair as ``split``'s files in folder; return their paths."""
    for path in Path(folder).iterdir():
        path.unlink()
    paths = {}
    for kind, (content, _, gz, _) in pair.items():
        name = FILES[f"{split}_{kind}"] + (".gz" if gz else "")
        paths[kind] = Path(folder) / name
        paths[kind].write_bytes(content)
    return paths


def first_damaged(pair, paths):
    """Return the path the reader must name: the first damaged file it reads."""
    return paths["images"] if pair["images"][1] else paths["labels"]


def run_cli(argv):
    """Run ``hmnist argv`` in this process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


# Header dims whose int64 product wraps to 0 once passed as a valid empty
# file and failed in numpy's reshape with a traceback.
WRAPPED = {
    "images": (idx([2**22, 2**21, 2**21], b""), ["header dim"], False, b""),
    "labels": (idx([1], b"\x07"), [], False, b""),
}


@settings(
    max_examples=1200,
    deadline=DEADLINE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(pair=damaged_pair())
@example(pair=WRAPPED)
def test_every_damaged_pair_is_one_line_data_error(pair, folder):
    paths = write_pair(folder, "train", pair)
    try:
        read_pair(paths["images"], paths["labels"])
    except DataError as err:
        message = str(err)
    else:
        raise AssertionError(f"damages {pair['images'][1]}, {pair['labels'][1]}")
    assert "\n" not in message
    assert message.startswith(f"{first_damaged(pair, paths)}: ")


@settings(
    max_examples=150,
    deadline=DEADLINE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(pair=damaged_pair(), split=st.sampled_from(["train", "test"]))
def test_damaged_files_through_the_cli(pair, split, folder):
    paths = write_pair(folder, split, pair)
    named = first_damaged(pair, paths)
    # The other split is the valid pair the damaged one was made from.
    other = "test" if split == "train" else "train"
    sums = {}
    for kind, (_, _, _, valid) in pair.items():
        Path(folder, FILES[f"{other}_{kind}"] + ".gz").write_bytes(gzip.compress(valid))
        sums[FILES[f"{split}_{kind}"]] = hashlib.sha256(valid).hexdigest()
        sums[FILES[f"{other}_{kind}"]] = hashlib.sha256(valid).hexdigest()

    with mock.patch.object(download, "CONTENT_SHA256", sums):
        code, out, err = run_cli(["data", "verify", "--data", str(folder)])
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("hmnist data: error: ")
    status = {}
    for line in out.splitlines():
        word, message = line.split(maxsplit=1)
        status[message.split(": ")[0]] = word
    for kind, (_, damages, _, _) in pair.items():
        assert status[str(paths[kind])] == ("mismatch" if damages else "ok")
    assert list(status.values()).count("ok") >= 2

    argv = ["train", "--kernel", "loop", "--epochs", "1", "--train-size", "1"]
    code, out, err = run_cli([*argv, "--data", str(folder)])
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"hmnist train: error: {named}: ")
