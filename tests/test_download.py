"""hmnist download and hmnist data verify, against a mirror on 127.0.0.1.

The mirror is ``http.server`` in a thread on a free port. Each path
prefix (``/a/``, ``/b/``, ...) is one mirror with one behaviour: a good
server, one that sends other bytes, one that drops the connection early,
one that ignores Range, one that stalls, and so on. The files are tiny
synthetic IDX files, and the checksum table is the tests' own.
"""

import gzip
import hashlib
import http.server
import shutil
import socket
import threading

import numpy as np
import pytest
from conftest import idx_bytes, write_mnist

from hmnist import cli, download
from hmnist.data import FILES
from hmnist.errors import DownloadError

NAMES = list(FILES.values())
# A guard against hangs, not a timing claim: far above any honest run.
HANG_GUARD = 60


def tiny_files(seed=0):
    """Return name -> (gzip'd bytes, SHA-256 of the content) for four files."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (100, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 100),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 20),
    }
    files = {}
    for name, array in arrays.items():
        content = idx_bytes(array)
        files[name] = (gzip.compress(content), hashlib.sha256(content).hexdigest())
    return files


FILES_GZ = tiny_files()
CHECKSUMS = {name: digest for name, (_, digest) in FILES_GZ.items()}


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serve ``/PREFIX/NAME.gz`` as the plan for PREFIX says."""

    def log_message(self, *args):
        """Keep the test output quiet."""

    def do_GET(self):
        """Answer one GET as the mirror's behaviour says."""
        mirror = self.server.mirror
        _, prefix, name = self.path.split("/", 2)
        byte_range = self.headers.get("Range")
        with mirror.lock:
            mirror.requests.append((prefix, name, byte_range))
            seen = sum(1 for r in mirror.requests if r[:2] == (prefix, name))
        behaviour = mirror.plans.get(prefix, "ok")
        body = mirror.files.get(name.removesuffix(".gz"))
        if behaviour == "404" or body is None:
            self.send_error(404)
            return
        if behaviour == "500-once" and seen == 1:
            self.send_error(500)
            return
        if behaviour == "corrupt":
            body = gzip.compress(b"these are not the bytes you are looking for")
        if behaviour == "silent":
            mirror.stop.wait(HANG_GUARD)
            return
        if behaviour in ("truncate", "stall") or (
            behaviour in ("truncate-once", "stall-once") and seen == 1
        ):
            self.send_head(200, len(body))
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if behaviour.startswith("stall"):
                mirror.stop.wait(HANG_GUARD)
            return
        if byte_range and behaviour != "norange":
            start = int(byte_range.removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_head(206, len(body) - start, f"bytes {start}-{len(body) - 1}")
            self.wfile.write(body[start:])
            return
        self.send_head(200, len(body))
        self.wfile.write(body)

    def send_head(self, status, length, content_range=None):
        """Send the status line and headers of a body of ``length`` bytes."""
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(length))
        if content_range:
            self.send_header("Content-Range", f"{content_range}/{length}")
        self.end_headers()


class Mirror:
    """A local HTTP server whose path prefixes are mirrors with behaviours."""

    def __init__(self, files):
        self.files = {name: gz for name, (gz, _) in files.items()}
        self.plans = {}
        self.requests = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
        self.server.daemon_threads = True
        self.server.mirror = self
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def url(self, prefix, behaviour="ok"):
        """Return the base URL of mirror ``prefix``, which acts as ``behaviour``."""
        self.plans[prefix] = behaviour
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/{prefix}/"

    def asked(self, prefix):
        """Return the (name, Range header) of every request to ``prefix``."""
        return [(name, rng) for p, name, rng in self.requests if p == prefix]

    def close(self):
        """Release stalled handlers and stop the server."""
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror():
    """Return a running local mirror of the tiny files; stop it afterwards."""
    server = Mirror(FILES_GZ)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    """Retry at once: the tests need no back-off."""
    monkeypatch.setattr(download, "RETRY_PAUSE", 0)


def fetch(dest, mirrors, **options):
    """Run download() with the tests' checksums, in a thread bounded by HANG_GUARD."""
    options = {"checksums": CHECKSUMS, "timeout": 5, "retries": 0, **options}
    outcome = {}

    def run():
        try:
            outcome["value"] = download.download(dest, mirrors=mirrors, **options)
        except Exception as err:  # handed to the test's thread below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    assert not thread.is_alive(), "download hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def assert_complete(dest):
    """Check that dest holds exactly the four verified files, no leftovers."""
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    for name in NAMES:
        assert (dest / f"{name}.gz").read_bytes() == FILES_GZ[name][0]


def one_line(message):
    """Check that an error message is a single line; return it."""
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------
# download(): good, bad and flaky mirrors


def test_good_mirror_gives_four_verified_files(mirror, tmp_path):
    dest = tmp_path / "mnist"
    fetched = fetch(dest, [mirror.url("a")])
    assert_complete(dest)
    assert [f.name for f in fetched] == NAMES
    assert all(f.url.startswith(mirror.url("a")) for f in fetched)
    assert mirror.asked("a") == [(f"{name}.gz", None) for name in NAMES]


def test_verified_files_are_skipped(mirror, tmp_path):
    fetch(tmp_path, [mirror.url("a")])
    again = fetch(tmp_path, [mirror.url("b")])
    assert mirror.asked("b") == []
    assert all(f.url is None for f in again)
    assert_complete(tmp_path)


def test_raw_verified_file_is_skipped(mirror, tmp_path):
    name = NAMES[1]
    (tmp_path / name).write_bytes(gzip.decompress(FILES_GZ[name][0]))
    fetch(tmp_path, [mirror.url("a")])
    assert f"{name}.gz" not in [n for n, _ in mirror.asked("a")]


def test_bad_file_in_place_is_replaced(mirror, tmp_path):
    name = NAMES[0]
    (tmp_path / f"{name}.gz").write_bytes(b"\x1f\x8bnot a gzip stream")
    fetch(tmp_path, [mirror.url("a")])
    assert_complete(tmp_path)


def test_corrupt_mirror_leaves_no_file_and_next_mirror_serves(mirror, tmp_path):
    fetched = fetch(tmp_path, [mirror.url("bad", "corrupt"), mirror.url("good")])
    assert_complete(tmp_path)
    assert len(mirror.asked("bad")) == 4
    assert all("/good/" in f.url for f in fetched)


def test_corrupt_only_mirror_fails_and_leaves_nothing(mirror, tmp_path):
    url = mirror.url("bad", "corrupt")
    with pytest.raises(DownloadError) as err:
        fetch(tmp_path, [url], retries=2)
    message = one_line(str(err.value))
    assert message.startswith(f"{NAMES[0]}.gz: ")
    assert f"{url}{NAMES[0]}.gz (checksum mismatch)" in message
    assert list(tmp_path.iterdir()) == []
    # A fresh copy that fails its checksum is not asked for again.
    assert len(mirror.asked("bad")) == 1


def test_404_moves_on_to_the_next_mirror(mirror, tmp_path):
    fetch(tmp_path, [mirror.url("gone", "404"), mirror.url("good")], retries=3)
    assert_complete(tmp_path)
    assert len(mirror.asked("gone")) == 4


def test_every_mirror_failing_names_file_and_mirrors(mirror, tmp_path):
    urls = [mirror.url("gone", "404"), mirror.url("bad", "corrupt")]
    with pytest.raises(DownloadError) as err:
        fetch(tmp_path, urls)
    message = one_line(str(err.value))
    assert NAMES[0] in message
    assert f"{urls[0]}{NAMES[0]}.gz (HTTP 404" in message
    assert f"{urls[1]}{NAMES[0]}.gz (checksum mismatch)" in message
    assert list(tmp_path.iterdir()) == []


def test_unreachable_mirror_moves_on(mirror, tmp_path):
    # A port that was just free: nothing listens there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fetch(tmp_path, [f"http://127.0.0.1:{port}/", mirror.url("good")], retries=1)
    assert_complete(tmp_path)


def test_nothing_listening_is_named(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
    with pytest.raises(DownloadError) as err:
        fetch(tmp_path, [url], retries=1)
    message = one_line(str(err.value))
    assert (
        f"{url}{NAMES[0]}.gz (cannot connect: Connection refused, 2 tries)" in message
    )


def test_server_error_is_retried(mirror, tmp_path):
    fetch(tmp_path, [mirror.url("flaky", "500-once")], retries=1)
    assert_complete(tmp_path)
    assert len(mirror.asked("flaky")) == 8


def test_truncated_stream_resumes_with_range(mirror, tmp_path):
    fetch(tmp_path, [mirror.url("cut", "truncate-once")], retries=1)
    assert_complete(tmp_path)
    asked = mirror.asked("cut")
    name = f"{NAMES[0]}.gz"
    half = len(FILES_GZ[NAMES[0]][0]) // 2
    assert asked[:2] == [(name, None), (name, f"bytes={half}-")]


def test_stream_cut_every_time_keeps_only_the_part(mirror, tmp_path):
    url = mirror.url("cut", "truncate")
    with pytest.raises(DownloadError) as err:
        fetch(tmp_path, [url], retries=1)
    message = one_line(str(err.value))
    size = len(FILES_GZ[NAMES[0]][0])
    assert f"(connection closed after {size // 2} of {size} bytes, 2 tries)" in message
    assert message.endswith(f"{NAMES[0]}.gz.part is kept to resume")
    assert [p.name for p in tmp_path.iterdir()] == [f"{NAMES[0]}.gz.part"]


def test_silent_server_times_out_without_hanging(mirror, tmp_path):
    url = mirror.url("mute", "silent")
    with pytest.raises(DownloadError) as err:
        fetch(tmp_path, [url], timeout=0.3, retries=1)
    message = one_line(str(err.value))
    assert f"{url}{NAMES[0]}.gz (no data for 0.3 s, 2 tries)" in message
    assert list(tmp_path.iterdir()) == []


def test_stall_mid_body_times_out_and_resumes(mirror, tmp_path):
    fetch(tmp_path, [mirror.url("slow", "stall-once")], timeout=0.3, retries=1)
    assert_complete(tmp_path)
    half = len(FILES_GZ[NAMES[0]][0]) // 2
    assert mirror.asked("slow")[1] == (f"{NAMES[0]}.gz", f"bytes={half}-")


def test_stalled_mirror_then_good_mirror(mirror, tmp_path):
    mirrors = [mirror.url("slow", "stall"), mirror.url("good")]
    fetch(tmp_path, mirrors, timeout=0.3)
    assert_complete(tmp_path)


def test_resume_from_part_file_sends_range(mirror, tmp_path):
    name = NAMES[0]
    body = FILES_GZ[name][0]
    (tmp_path / f"{name}.gz.part").write_bytes(body[:1000])
    fetch(tmp_path, [mirror.url("a")])
    assert_complete(tmp_path)
    assert mirror.asked("a")[0] == (f"{name}.gz", "bytes=1000-")


def test_range_ignored_restarts_from_zero(mirror, tmp_path):
    name = NAMES[0]
    body = FILES_GZ[name][0]
    (tmp_path / f"{name}.gz.part").write_bytes(body[:1000])
    fetch(tmp_path, [mirror.url("plain", "norange")])
    assert_complete(tmp_path)
    assert mirror.asked("plain")[0] == (f"{name}.gz", "bytes=1000-")


def test_stale_part_is_dropped_and_fetched_afresh(mirror, tmp_path):
    name = NAMES[0]
    (tmp_path / f"{name}.gz.part").write_bytes(b"stale bytes from elsewhere")
    fetch(tmp_path, [mirror.url("a")], retries=1)
    assert_complete(tmp_path)
    assert [rng for n, rng in mirror.asked("a") if n == f"{name}.gz"] == [
        "bytes=26-",
        None,
    ]


def test_complete_part_answered_416_is_installed(mirror, tmp_path):
    name = NAMES[0]
    (tmp_path / f"{name}.gz.part").write_bytes(FILES_GZ[name][0])
    fetch(tmp_path, [mirror.url("a")])
    assert_complete(tmp_path)


def test_progress_bar_goes_to_stderr(mirror, tmp_path, capsys):
    fetch(tmp_path, [mirror.url("a")], progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert NAMES[0] in err


def test_unwritable_dest_is_one_line(mirror, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(DownloadError) as err:
        fetch(tmp_path / "file" / "mnist", [mirror.url("a")])
    assert one_line(str(err.value)).startswith(str(tmp_path / "file" / "mnist"))


# ----------------------------------------------------------------------------
# hmnist download


def test_cli_download_then_verify(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "CONTENT_SHA256", CHECKSUMS)
    dest = tmp_path / "mnist"
    argv = ["download", "--dest", str(dest), "--mirror", mirror.url("gone", "404")]
    argv += ["--mirror", mirror.url("a"), "--timeout", "5", "--retries", "0"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 4
    for line, name in zip(lines, NAMES):
        assert line == f"ok       {dest / name}.gz  (from {mirror.url('a')}{name}.gz)"
    assert_complete(dest)
    assert cli.main(["download", "--dest", str(dest), "--mirror", mirror.url("b")]) == 0
    assert "already there" in capsys.readouterr().out
    assert cli.main(["data", "verify", "--data", str(dest)]) == 0
    out, _ = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["ok"] * 4


def test_cli_download_failure_is_one_line_exit_1(mirror, tmp_path, capsys):
    url = mirror.url("bad", "corrupt")
    argv = ["download", "--dest", str(tmp_path), "--mirror", url, "--retries", "0"]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"hmnist download: error: {NAMES[0]}.gz: no mirror")
    assert url in err
    assert list(tmp_path.iterdir()) == []


def test_cli_download_of_the_real_files(real_data_dir, tmp_path, capsys):
    # The real files, served locally, pass the real published checksums.
    files = {n: ((real_data_dir / f"{n}.gz").read_bytes(), None) for n in NAMES}
    server = Mirror(files)
    try:
        dest = tmp_path / "mnist"
        argv = ["download", "--dest", str(dest), "--mirror", server.url("real")]
        assert cli.main(argv) == 0
    finally:
        server.close()
    assert len(capsys.readouterr().out.splitlines()) == 4
    for name in NAMES:
        assert (dest / f"{name}.gz").read_bytes() == files[name][0]


# ----------------------------------------------------------------------------
# hmnist data verify


def test_verify_real_data(real_data_dir, capsys):
    assert cli.main(["data", "verify", "--data", str(real_data_dir)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    assert [line.split()[0] for line in lines] == ["ok"] * 4
    for line, name in zip(lines, NAMES):
        assert line.endswith(str(real_data_dir / f"{name}.gz"))


def test_verify_copy_with_other_compression_is_ok(real_data_dir, tmp_path, capsys):
    # Decompressed or recompressed, a faithful copy has the published content.
    for name in NAMES:
        content = gzip.decompress((real_data_dir / f"{name}.gz").read_bytes())
        if "images" in name:
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / f"{name}.gz").write_bytes(gzip.compress(content, 1))
    assert cli.main(["data", "verify", "--data", str(tmp_path)]) == 0


def test_verify_tiny_files_mismatch(tiny_mnist, capsys):
    assert cli.main(["data", "verify", "--data", str(tiny_mnist)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["mismatch"] * 4
    assert all("content SHA-256" in line for line in lines)
    assert err.count("\n") == 1
    assert err.startswith("hmnist data: error: 4 of 4 files failed the check")
    assert "hmnist download" in err


def test_verify_reports_each_file(tmp_path, monkeypatch, capsys):
    # Own checksums: two good files, one damaged, one missing.
    arrays = write_mnist(tmp_path)
    sums = {}
    for key, name in FILES.items():
        content = idx_bytes(arrays[key])
        sums[name] = hashlib.sha256(content).hexdigest()
    monkeypatch.setattr(download, "CONTENT_SHA256", sums)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-5])
    assert cli.main(["data", "verify", "--data", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    status = [line.split()[0] for line in out.splitlines()]
    assert status == ["ok", "mismatch", "ok", "missing"]
    assert f"{path}: damaged gzip stream" in out
    assert "2 of 4 files failed" in err


def test_verify_counts_that_disagree(tmp_path, monkeypatch, capsys):
    write_mnist(tmp_path)
    shutil.copy(
        tmp_path / "t10k-labels-idx1-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    )
    sums = {n: download.content_sha256(tmp_path / f"{n}.gz") for n in NAMES}
    monkeypatch.setattr(download, "CONTENT_SHA256", sums)
    assert cli.main(["data", "verify", "--data", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("mismatch ")
    assert "30 labels for 120 images" in out[1]


# ----------------------------------------------------------------------------
# Missing data: every command says how to get it


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--kernel", "loop", "--epochs", "1", "--data"],
        ["data", "verify", "--data"],
    ],
)
def test_missing_data_says_hmnist_download(argv, tmp_path, capsys):
    assert cli.main([*argv, str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "hmnist download" in err
    assert str(tmp_path) in err
