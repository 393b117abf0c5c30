"""Fetch the four MNIST files from public mirrors and check them.

A file counts as good when the SHA-256 of its decompressed content is the
published data's. That check holds for any faithful copy: a mirror that
re-compressed the files (or a copy rebuilt from the images) has another
``.gz`` MD5 than the published one, but the same content. A download goes
to ``NAME.gz.part`` beside its target and is renamed only once verified,
so a partial or wrong download never leaves a file the reader would take.
An interrupted download resumes from its ``.part`` with an HTTP Range
request, and starts over when the server ignores the Range. The timeout
bounds silence, not a whole download: a server that keeps sending, however
slowly, is waited for.

Only the standard library speaks HTTP here (``urllib``); ``tqdm`` draws a
progress bar on stderr. Failures raise :class:`DownloadError`, whose
message is one line naming the file and every mirror tried.
"""

import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .data import FILES, data_dir, find_file, read_bytes, read_images, read_labels
from .errors import DataError, DownloadError

# Base URLs of public MNIST mirrors, tried in this order; each serves the
# four files as BASE/NAME.gz.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# SHA-256 of each file's decompressed content, as published with the data.
CONTENT_SHA256 = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 2
# Seconds to wait before retry k of one mirror: RETRY_PAUSE * k.
RETRY_PAUSE = 1.0
CHUNK = 1 << 16
USER_AGENT = "hmnist-download (Python urllib)"
# HTTP statuses worth asking the same mirror again for.
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Fetched:
    """One file that :func:`download` made sure of.

    ``url`` is where it came from, or None when a verified copy was
    already in place.
    """

    name: str
    path: Path
    url: str = None


@dataclass(frozen=True)
class FileCheck:
    """The verdict of :func:`verify` on one file.

    ``status`` is ``"ok"``, ``"mismatch"`` or ``"missing"``; ``message``
    names the file and, unless ok, what is wrong with it.
    """

    name: str
    status: str
    message: str


class _Incomplete(Exception):
    """The server closed the connection before the whole body arrived."""


def content_sha256(path):
    """Return the SHA-256 (hex) of ``path``'s decompressed content.

    Raises
    ------
    DataError
        When the file cannot be read or its gzip stream is damaged.
    """
    return hashlib.sha256(read_bytes(path)).hexdigest()


def file_url(mirror, name):
    """Return the URL of ``NAME.gz`` on the mirror with base URL ``mirror``."""
    return f"{mirror.rstrip('/')}/{name}.gz"


def download(dest=None, *, mirrors=None, checksums=None, timeout=DEFAULT_TIMEOUT,
             retries=DEFAULT_RETRIES, progress=None, on_file=None):  # fmt: skip
    """Make sure ``dest`` holds a verified copy of each MNIST file.

    Parameters
    ----------
    dest : str or Path, optional
        Folder to fill; see :func:`hmnist.data.data_dir` for the default.
    mirrors : sequence of str, optional
        Base URLs tried in order for each file (default :data:`MIRRORS`).
    checksums : dict, optional
        File name (without ``.gz``) -> SHA-256 of its decompressed content;
        its keys are the files fetched (default :data:`CONTENT_SHA256`).
    timeout : float
        Seconds a connection may stay silent before the attempt fails.
    retries : int
        Further attempts on one mirror after a timeout, a dropped
        connection or a server error; a 4xx status or a checksum mismatch
        moves on to the next mirror at once.
    progress : bool, optional
        Draw a progress bar per file on stderr; None draws one only when
        stderr is a terminal.
    on_file : callable, optional
        Called with each :class:`Fetched` as soon as its file is verified.

    Returns
    -------
    list of Fetched
        One per file, in the order of ``checksums``.

    Raises
    ------
    DownloadError
        When no mirror gives a verified copy of a file, or ``dest`` cannot
        be written. Files verified before it stay in place.
    """
    dest = data_dir(dest)
    mirrors = list(MIRRORS if mirrors is None else mirrors)
    checksums = CONTENT_SHA256 if checksums is None else checksums
    fetched = []
    for name, expected in checksums.items():
        present = _verified_copy(dest, name, expected)
        if present is not None:
            item = Fetched(name, present)
        else:
            try:
                dest.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DownloadError(
                    f"{dest}: cannot create folder ({err.strerror})"
                ) from None
            item = Fetched(
                name, *_fetch(name, dest, mirrors, expected, timeout, retries, progress)
            )
        fetched.append(item)
        if on_file is not None:
            on_file(item)
    return fetched


def verify(folder=None, checksums=None):
    """Check the four MNIST files: IDX structure and content SHA-256.

    Parameters
    ----------
    folder : str or Path, optional
        See :func:`hmnist.data.data_dir`.
    checksums : dict, optional
        File name -> SHA-256 of its decompressed content (default
        :data:`CONTENT_SHA256`).

    Returns
    -------
    list of FileCheck
        One per file, in the order of :data:`hmnist.data.FILES`.
    """
    folder = data_dir(folder)
    checksums = CONTENT_SHA256 if checksums is None else checksums
    checks, counts, paths = {}, {}, {}
    for key, name in FILES.items():
        try:
            path = find_file(folder, name)
        except DataError:
            message = f"{folder / name}[.gz]: not found"
            checks[key] = FileCheck(name, "missing", message)
            continue
        paths[key] = path
        reader = read_images if key.endswith("images") else read_labels
        try:
            counts[key] = len(reader(path))
            digest = content_sha256(path)
        except DataError as err:
            checks[key] = FileCheck(name, "mismatch", str(err))
            continue
        if digest != checksums.get(name):
            message = (
                f"{path}: content SHA-256 {digest[:16]}... is not the published "
                f"{str(checksums.get(name))[:16]}..."
            )
            checks[key] = FileCheck(name, "mismatch", message)
        else:
            checks[key] = FileCheck(name, "ok", str(path))
    for split in ("train", "test"):
        images, labels = f"{split}_images", f"{split}_labels"
        if images in counts and labels in counts and counts[images] != counts[labels]:
            message = (
                f"{paths[labels]}: {counts[labels]} labels for {counts[images]} "
                f"images in {paths[images].name}"
            )
            checks[labels] = FileCheck(FILES[labels], "mismatch", message)
    return [checks[key] for key in FILES]


def _verified_copy(dest, name, expected):
    """Return the path of a verified ``name`` (gzip'd or raw) in dest, or None."""
    for path in (dest / f"{name}.gz", dest / name):
        if path.is_file() and _matches(path, expected):
            return path
    return None


def _matches(path, expected):
    """Return True when ``path``'s decompressed content has SHA-256 ``expected``."""
    try:
        return content_sha256(path) == expected
    except DataError:
        return False


def _fetch(name, dest, mirrors, expected, timeout, retries, progress):
    """Download ``name`` from the first mirror that gives a verified copy."""
    target = dest / f"{name}.gz"
    part = dest / f"{name}.gz.part"
    tried = []
    for mirror in mirrors:
        url = file_url(mirror, name)
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(RETRY_PAUSE * attempt)
            resumed = part.is_file() and part.stat().st_size > 0
            try:
                _get(url, part, timeout, progress, target.name)
            except urllib.error.HTTPError as err:
                reason = f"HTTP {err.code} {_one_line(err.reason)}"
                err.close()
                if err.code in _TRANSIENT_STATUS:
                    continue
                break
            except (_Incomplete, http.client.HTTPException, OSError) as err:
                reason = _describe(err, timeout)
                continue
            if _matches(part, expected):
                _replace(part, target)
                return target, url
            part.unlink()
            reason = "checksum mismatch"
            # A stale .part may have spoilt the copy; a fresh one would not.
            if not resumed:
                break
        tries = f", {attempt + 1} tries" if attempt else ""
        tried.append(f"{url} ({reason}{tries})")
    kept = f"; {part.name} is kept to resume" if part.is_file() else ""
    raise DownloadError(
        f"{target.name}: no mirror gave a verified copy; tried {'; '.join(tried)}{kept}"
    )


def _get(url, part, timeout, progress, label):
    """Fetch ``url`` into ``part``, resuming from its size if the server can."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        # 416: nothing past ``offset``; the checksum judges the .part as is.
        if err.code == 416 and offset:
            err.close()
            return
        raise
    with response:
        mode = "wb"
        if offset and response.status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink()
                raise _Incomplete(f"server resumed at byte {start}, not {offset}")
            mode = "ab"
        else:
            offset = 0
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = None if length is None else offset + length
        bar = tqdm(
            total=total, initial=offset, desc=label, unit="B", unit_scale=True,
            unit_divisor=1024, file=sys.stderr, leave=False,
            disable=None if progress is None else not progress,
        )  # fmt: skip
        with bar, _open(part, mode) as f:
            received = 0
            while chunk := response.read1(CHUNK):
                _write(f, chunk, part)
                received += len(chunk)
                bar.update(len(chunk))
    if length is not None and received < length:
        raise _Incomplete(f"connection closed after {received} of {length} bytes")


def _range_start(content_range):
    """Return the first byte of a ``Content-Range: bytes A-B/N`` value, or None."""
    unit, _, spec = content_range.partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _open(part, mode):
    """Open the .part file, or raise DownloadError naming it."""
    try:
        return open(part, mode)
    except OSError as err:
        raise DownloadError(f"{part}: cannot write ({err.strerror})") from None


def _write(f, chunk, part):
    """Append ``chunk`` to the open .part file, or raise DownloadError."""
    try:
        f.write(chunk)
    except OSError as err:
        raise DownloadError(f"{part}: cannot write ({err.strerror})") from None


def _replace(part, target):
    """Rename the verified .part over ``target``, or raise DownloadError."""
    try:
        part.replace(target)
    except OSError as err:
        raise DownloadError(f"{target}: cannot write ({err.strerror})") from None


def _describe(err, timeout):
    """Say in a few words why one attempt failed."""
    if isinstance(err, urllib.error.URLError):
        if isinstance(err.reason, TimeoutError):
            return f"no data for {timeout:g} s"
        reason = getattr(err.reason, "strerror", None) or err.reason
        return f"cannot connect: {_one_line(reason)}"
    if isinstance(err, TimeoutError):
        return f"no data for {timeout:g} s"
    if isinstance(err, OSError) and err.strerror:
        return f"connection lost: {_one_line(err.strerror)}"
    if isinstance(err, _Incomplete):
        return str(err)
    return f"{type(err).__name__}: {_one_line(err)}" if str(err) else type(err).__name__


def _one_line(text):
    """Return ``text`` as a string with every run of whitespace one space."""
    return " ".join(str(text).split())
