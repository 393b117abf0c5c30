"""Read and validate MNIST's IDX files, find them, and cut the book's splits.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the
number of dimensions), one big-endian uint32 per dimension, then the data.
MNIST uses type 0x08 (unsigned byte): images are ``(n, 28, 28)``, labels
``(n,)``. Files may be gzip'd or raw; the reader tells them apart by the
gzip magic, not by the name.

Every fault is a :class:`DataError` whose message is one line naming the
file and what is wrong with it.
"""

import contextlib
import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import aligned_empty
from .errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
N_TRAIN_FILE = 60_000
N_TEST_FILE = 10_000
N_PIXELS = 28 * 28
N_CLASSES = 10
BOOK_TRAIN_SIZE = 50_000
DEFAULT_DIR = Path("data") / "mnist"

_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class MnistData:
    """The book's three splits, each an ``(x, y)`` pair.

    ``x`` has shape ``(n, 784)`` with pixels in [0, 1] in the run's dtype;
    ``y`` has shape ``(n,)``, dtype int64, labels 0-9. Only the training
    split is held as floats. The test and validation images are kept as
    bytes and converted on each access of ``test`` or ``validation``: as
    float64 they would add 126 MB to a training run.
    ``Network.evaluate`` takes the bytes (``test_images``) and converts them
    a chunk at a time.
    """

    train: tuple
    test_images: np.ndarray
    test_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    dtype: str

    @property
    def test(self):
        """Return the test split as ``(x, y)`` in the run's dtype."""
        return to_float(self.test_images, self.dtype), self.test_labels

    @property
    def validation(self):
        """Return the validation split as ``(x, y)`` in the run's dtype."""
        return to_float(self.validation_images, self.dtype), self.validation_labels


def data_dir(path=None):
    """Return the data folder: ``path``, else ``$HMNIST_DATA``, else ./data/mnist."""
    if path:
        return Path(path)
    env = os.environ.get("HMNIST_DATA")
    return Path(env) if env else DEFAULT_DIR


def find_file(folder, name):
    """Return the path of IDX file ``name`` in ``folder``, gzip'd or raw."""
    folder = Path(folder)
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{folder / name}[.gz]: file not found (give --data DIR or set "
        "HMNIST_DATA, or fetch the files with `hmnist download`)"
    )


def read_bytes(path):
    """Return the decompressed content of ``path`` (gzip'd or raw)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: damaged gzip stream ({err})") from None


def parse_header(path, head, ndim):
    """Check an IDX header at the start ``head`` of a file; return its dimensions.

    Returns ``(dims, header_bytes)``. ``head`` is the whole file when it is
    shorter than the header.
    """
    if len(head) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(head)} bytes)")
    zero, dtype_code, found_ndim = head[:2], head[2], head[3]
    magic = int.from_bytes(head[:4], "big")
    expected = (_UBYTE << 8) | ndim
    if zero != b"\x00\x00" or dtype_code != _UBYTE or found_ndim != ndim:
        raise DataError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected:08x}"
        )
    header = 4 + 4 * ndim
    if len(head) < header:
        raise DataError(f"{path}: truncated header ({len(head)} bytes)")
    dims = tuple(
        int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    return dims, header


def check_length(path, dims, header, n_bytes):
    """Raise DataError unless an IDX file with ``dims`` has ``n_bytes`` bytes."""
    # Python ints: a numpy int64 product can wrap around and pass the check.
    size = math.prod(dims)
    if n_bytes != header + size:
        what = "truncated" if n_bytes < header + size else "trailing bytes"
        raise DataError(
            f"{path}: {what}: dimensions {'x'.join(map(str, dims))} need "
            f"{header + size} bytes, file has {n_bytes}"
        )


def parse_idx(path, content, ndim):
    """Check an IDX header and length; return the data as a uint8 array."""
    dims, header = parse_header(path, content, ndim)
    check_length(path, dims, header, len(content))
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims)


def check_image_size(path, dims):
    """Raise DataError unless the images of an IDX file with ``dims`` are 28x28."""
    if dims[1:] != (28, 28):
        rows, cols = dims[1:]
        raise DataError(f"{path}: images are {rows}x{cols}, expected 28x28")


def read_images(path):
    """Read an IDX image file; return uint8 ``(n, 784)``."""
    images = parse_idx(path, read_bytes(path), ndim=3)
    check_image_size(path, images.shape)
    return images.reshape(len(images), N_PIXELS)


@contextlib.contextmanager
def _content_stream(path):
    """Yield a function ``read(n)`` returning the next bytes of ``path``'s content.

    The content is decompressed as it is read when the file is gzip'd;
    faults are DataErrors, as in :func:`read_bytes`.
    """
    path = Path(path)
    try:
        raw = open(path, "rb")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    with raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if gzipped else raw

        def read(n):
            try:
                return stream.read(n)
            except (OSError, EOFError, zlib.error) as err:
                if gzipped:
                    raise DataError(f"{path}: damaged gzip stream ({err})") from None
                raise DataError(f"{path}: cannot read ({err.strerror})") from None

        yield read


def _count_rest(read):
    """Read a stream to its end; return how many bytes were left."""
    n = 0
    while data := read(1 << 20):
        n += len(data)
    return n


def read_images_split(path, n_float, dtype, chunk_rows=10_000):
    """Read an IDX image file, the first ``n_float`` images as floats, others as bytes.

    Returns ``(x, rest)``: ``x`` ``(min(n_float, n), 784)`` with pixels in
    [0, 1] in ``dtype``, ``rest`` uint8 ``(n - len(x), 784)``. The file is
    decompressed ``chunk_rows`` images at a time straight into ``x``, so
    that its bytes and its floats are never all in memory together, and it
    is checked as :func:`read_images` checks it, with the same messages.
    """
    with _content_stream(path) as read:
        head = read(16)
        dims, header = parse_header(path, head, ndim=3)
        if dims[1:] != (28, 28):
            # The faults in the order read_images finds them: length, then size.
            check_length(path, dims, header, len(head) + _count_rest(read))
            check_image_size(path, dims)
        n = dims[0]
        # ``x`` has at most ``n_float`` rows, whatever the header claims; the
        # rest is kept as it arrives, so a lying header costs no memory.
        x = aligned_empty((min(n_float, n), N_PIXELS), dtype)
        rest = [np.empty((0, N_PIXELS), np.uint8)]
        n_read = header
        for first, end in ((0, len(x)), (len(x), n)):
            for start in range(first, end, chunk_rows):
                rows = min(chunk_rows, end - start)
                data = read(rows * N_PIXELS)
                n_read += len(data)
                if len(data) < rows * N_PIXELS:
                    check_length(path, dims, header, n_read)
                pixels = np.frombuffer(data, np.uint8).reshape(rows, N_PIXELS)
                if start < len(x):
                    x[start : start + rows] = pixels
                else:
                    rest.append(pixels)
        check_length(path, dims, header, n_read + _count_rest(read))
    x /= 255
    return x, np.concatenate(rest)


def read_labels(path):
    """Read an IDX label file; return uint8 ``(n,)`` with values 0-9."""
    labels = parse_idx(path, read_bytes(path), ndim=1)
    if labels.size and labels.max() >= N_CLASSES:
        index = int(np.argmax(labels >= N_CLASSES))
        raise DataError(
            f"{path}: label {labels[index]} at index {index} is out of range 0-9"
        )
    return labels


def read_pair(images_path, labels_path):
    """Read matching image and label files; check that their counts agree."""
    images = read_images(images_path)
    labels = read_labels(labels_path)
    check_counts(images_path, labels_path, len(images), len(labels))
    return images, labels


def check_counts(images_path, labels_path, n_images, n_labels):
    """Raise DataError unless an image file and a label file have as many items."""
    if n_images != n_labels:
        raise DataError(
            f"{labels_path}: {n_labels} labels for {n_images} images "
            f"in {Path(images_path).name}"
        )


def to_float(images, dtype):
    """Scale uint8 pixels to floats in [0, 1] in ``dtype``, starting on a cache line."""
    x = aligned_empty(images.shape, dtype)
    x[...] = images
    x /= 255
    return x


def load_mnist(path=None, *, train_size=BOOK_TRAIN_SIZE, dtype="float64"):
    """Load MNIST and cut the book's splits.

    Parameters
    ----------
    path : str or Path, optional
        Folder with the four standard files; see :func:`data_dir`.
    train_size : int
        The first ``train_size`` training images train; the rest of the
        60,000 are the validation set (the book's 50,000 / 10,000 split by
        default). The 10,000 test images are the test set.
    dtype : str
        ``"float64"`` or ``"float32"``: the dtype of the pixel arrays.

    Returns
    -------
    MnistData
    """
    folder = data_dir(path)
    if not 1 <= train_size <= N_TRAIN_FILE:
        raise ValueError(f"train_size must be 1..{N_TRAIN_FILE}, got {train_size}")
    files = {key: find_file(folder, name) for key, name in FILES.items()}
    # The training images go straight into floats, never all held as bytes.
    train_x, validation_x = read_images_split(files["train_images"], train_size, dtype)
    train_y = read_labels(files["train_labels"])
    n_train = len(train_x) + len(validation_x)
    check_counts(files["train_images"], files["train_labels"], n_train, len(train_y))
    test_x, test_y = read_pair(files["test_images"], files["test_labels"])
    if n_train < train_size:
        raise DataError(
            f"{files['train_images']}: {n_train} images, fewer than the "
            f"{train_size} asked for training"
        )
    labels = train_y.astype(np.int64)
    return MnistData(
        train=(train_x, labels[:train_size]),
        test_images=test_x,
        test_labels=test_y.astype(np.int64),
        validation_images=validation_x,
        validation_labels=labels[train_size:],
        dtype=dtype,
    )
