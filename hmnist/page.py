"""The draw-a-digit page: the model in a form it loads, and a local server.

The page (``hmnist/web/``: ``index.html``, ``hmnist.js``, ``style.css``)
runs the network in plain JavaScript. It reads the model from
``model.js``, a script that sets ``window.HMNIST_MODEL``, because a page
opened from the file system may load scripts but not fetch JSON.
``model.json`` holds the same document for other readers.

The document gives every weight and bias as a JSON number. Python writes
a float64 as the shortest decimal that reads back to the same float64,
and JavaScript's numbers are float64, so the page computes with exactly
the saved parameters (a float32 model is widened to float64 exactly).

:func:`serve` answers GET requests for these files from memory with the
standard library's ``http.server``; it is meant for one user on
127.0.0.1, not for the open network.
"""

import hashlib
import http.server
import json
import os
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .errors import ModelError
from .network import Network

FORMAT_VERSION = 1
PAGE_FILES = ("index.html", "hmnist.js", "style.css")
N_INPUTS, N_OUTPUTS = 784, 10
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
}


def arrays_sha256(net):
    """Return the SHA-256 of the parameters as float64 little-endian bytes.

    The arrays are hashed in the order ``w0, b0, w1, b1, ...``, each in C
    order, so a reader of ``model.json`` can check that it rebuilt them
    exactly.
    """
    digest = hashlib.sha256()
    for w, b in zip(net.weights, net.biases):
        for array in (w, b):
            digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    return digest.hexdigest()


def model_document(path):
    """Return the page's model document for the saved network at ``path``.

    Parameters
    ----------
    path : str or Path
        A network written by :meth:`Network.save`.

    Returns
    -------
    dict
        ``format_version``, ``sizes``, ``dtype`` (of the saved arrays),
        ``source`` (file name and SHA-256 of its bytes), ``sha256`` (of the
        arrays, see :func:`arrays_sha256`) and ``layers``: one
        ``{"weights": [[...], ...], "biases": [...]}`` per layer, weights
        ``(n_out, n_in)`` as nested lists.

    Raises
    ------
    ModelError
        When the file is not a model or its sizes do not fit the page.
    """
    path = Path(path)
    net = Network.load(path)
    if net.sizes[0] != N_INPUTS or net.sizes[-1] != N_OUTPUTS:
        raise ModelError(
            f"{path}: sizes {net.sizes}; the page needs {N_INPUTS} inputs "
            f"and {N_OUTPUTS} outputs"
        )
    layers = [
        {
            "weights": w.astype(np.float64).tolist(),
            "biases": b.astype(np.float64).tolist(),
        }
        for w, b in zip(net.weights, net.biases)
    ]
    return {
        "format_version": FORMAT_VERSION,
        "sizes": net.sizes,
        "dtype": net.dtype.name,
        "source": {"file": path.name, "sha256": file_sha256(path)},
        "sha256": arrays_sha256(net),
        "layers": layers,
    }


def file_sha256(path):
    """Return the SHA-256 of the bytes of ``path``, as hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_files(document):
    """Return ``{"model.json": bytes, "model.js": bytes}`` for a document."""
    text = json.dumps(document, separators=(",", ":"))
    script = (
        "// The hmnist model for the draw-a-digit page, written by hmnist.\n"
        f"window.HMNIST_MODEL = {text};\n"
    )
    return {"model.json": (text + "\n").encode(), "model.js": script.encode()}


def page_files():
    """Return ``{name: bytes}`` for the page's static files."""
    folder = Path(__file__).with_name("web")
    return {name: (folder / name).read_bytes() for name in PAGE_FILES}


def export(model_path, out_dir):
    """Write the page and the model into ``out_dir``, each file atomically.

    Parameters
    ----------
    model_path : str or Path
        A network written by :meth:`Network.save`.
    out_dir : str or Path
        Created if missing. Gets ``index.html``, ``hmnist.js``,
        ``style.css``, ``model.js`` and ``model.json``; opening
        ``index.html`` from the file system shows the working page.

    Returns
    -------
    dict
        The model document (see :func:`model_document`).
    """
    document = model_document(model_path)
    files = {**page_files(), **model_files(document)}
    for name, content in files.items():
        with atomic_write(Path(out_dir) / name) as f:
            f.write(content)
        # A temporary file is private (0600); a page is for anyone to read.
        os.chmod(Path(out_dir) / name, 0o644)
    return document


def make_server(model_path, host="127.0.0.1", port=0):
    """Return an HTTP server for the page with the model at ``model_path``.

    Parameters
    ----------
    model_path : str or Path
        A network written by :meth:`Network.save`.
    host : str
        The address to listen on.
    port : int
        The port; 0 lets the system choose a free one
        (``server.server_address[1]`` tells which).

    Returns
    -------
    http.server.ThreadingHTTPServer
        Bound and listening; call ``serve_forever()``.
    """
    document = model_document(model_path)
    files = {**page_files(), **model_files(document)}
    routes = {f"/{name}": content for name, content in files.items()}
    routes["/"] = files["index.html"]

    class Handler(http.server.BaseHTTPRequestHandler):
        """Answer GET and HEAD for the page's files from memory."""

        def do_GET(self):
            """Send the file asked for, or 404."""
            self.send(head_only=False)

        def do_HEAD(self):
            """Send the headers of the file asked for, or 404."""
            self.send(head_only=True)

        def send(self, head_only):
            """Write the status, headers and (unless ``head_only``) the body."""
            path = self.path.split("?", 1)[0]
            content = routes.get(path)
            if content is None:
                self.send_error(404, "not one of the page's files")
                return
            kind = _TYPES.get(Path(path).suffix, _TYPES[".html"])
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head_only:
                self.wfile.write(content)

        def log_message(self, format, *args):
            """Keep the request log quiet; the command prints the address."""

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.document = document
    return server
