"""Write files atomically: a temporary file beside the target, then rename."""

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yield a file open for writing that replaces ``path`` only on success.

    The data goes to a temporary file in the same folder, is flushed to
    disk, and is renamed over ``path``; an exception or a kill before the
    rename leaves any earlier ``path`` whole and no temporary file behind
    (a kill can leave a ``.tmp`` file, never a half-written ``path``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain
        # open() would have left.
        os.fchmod(fd, _mode_of(path))
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _mode_of(path):
    """Return ``path``'s permission bits, or those of a new file under the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_json(path, document):
    """Write ``document`` to ``path`` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(document, f, indent=1)
        f.write("\n")
