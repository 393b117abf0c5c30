"""The ``hmnist`` command.

Only this module writes to the terminal: results to stdout, progress and
warnings to stderr. A user's mistake is one line on stderr and a non-zero
exit (2 for a bad option, 1 for a bad file or a failed run), never a
traceback.
"""

import argparse
import json
import sys
import warnings

import numpy as np

from . import costs, kernels, threads
from ._io import write_json
from .errors import DivergenceError, HmnistError
from .network import DTYPES, INITS

FORMAT_VERSION = 1
MNIST_IN, MNIST_OUT = 784, 10


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are a single line and exit 2."""

    def error(self, message):
        """Print ``prog: error: message`` on one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------
# Option types: each checks its range and says what was wrong.


def int_range(lo, hi=None):
    """Return an argparse type accepting integers in ``[lo, hi]``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def positive_float(text):
    """Parse a finite float greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def layer_sizes(text):
    """Parse ``784,30,10`` into a tuple; MNIST fixes the first and last."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"sizes are integers joined by commas, like 784,30,10; got {text!r}"
        ) from None
    if len(sizes) < 2 or sizes[0] != MNIST_IN or sizes[-1] != MNIST_OUT:
        raise argparse.ArgumentTypeError(
            f"sizes must start at {MNIST_IN} and end at {MNIST_OUT}, got {text}"
        )
    if not all(1 <= n <= 100_000 for n in sizes):
        raise argparse.ArgumentTypeError(f"each size must be 1..100000, got {text}")
    return sizes


def kernel_name(text):
    """Parse a kernel name known to the registry."""
    if text not in kernels.names():
        raise argparse.ArgumentTypeError(
            f"unknown kernel {text!r}; choose from {', '.join(kernels.names())}"
        )
    return text


def cost_name(text):
    """Parse a cost name."""
    try:
        return costs.check(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def numba_threads(text):
    """Parse a Numba thread count within the pool Numba started."""
    return int_range(1, threads.max_numba_threads())(text)


def folder(text):
    """Parse a folder's path: not empty, and not an existing file."""
    from pathlib import Path

    if not text.strip():
        raise argparse.ArgumentTypeError("empty folder name")
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text!r}")
    return text


def output_file(text):
    """Parse the path of a file to write: not empty, not a folder, nor under a file."""
    from pathlib import Path

    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("empty file name")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"is a folder, not a file: {text!r}")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{str(parent)!r} is not a folder")
            break
    return text


# ----------------------------------------------------------------------------
# Shared output helpers.


def say(*parts):
    """Print progress to stderr."""
    print(*parts, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# hmnist train


def add_train(sub):
    """Add the ``train`` command."""
    p = sub.add_parser("train", help="train a network on MNIST and score each epoch")
    p.add_argument("--kernel", type=kernel_name, default="numba")
    p.add_argument("--sizes", type=layer_sizes, default=(784, 30, 10))
    p.add_argument("--epochs", type=int_range(1, 10_000), default=30)
    p.add_argument("--batch-size", type=int_range(1, 60_000), default=10)
    p.add_argument("--eta", type=positive_float, default=3.0)
    p.add_argument("--cost", type=cost_name, default="quadratic")
    p.add_argument("--init", choices=INITS, default="standard")
    p.add_argument("--dtype", choices=DTYPES, default="float64")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    p.add_argument("--train-size", type=int_range(1, 60_000), default=50_000)
    p.add_argument(
        "--blas-threads", type=int_range(1, 1024), default=None, metavar="N",
        help="NumPy's BLAS threads (default: BLAS's own for loop and matmul, "
        "1 for the other kernels)",
    )  # fmt: skip
    p.add_argument(
        "--numba-threads", type=numba_threads, default=None, metavar="N",
        help="Numba's threads (default: NUMBA_NUM_THREADS, the cores)",
    )  # fmt: skip
    p.add_argument("--data", type=folder, metavar="DIR", help="MNIST files' folder")
    p.add_argument(
        "--save", type=output_file, metavar="FILE", help="write the network (.npz)"
    )
    p.add_argument(
        "--json", type=output_file, metavar="FILE", help="write config and history"
    )
    p.set_defaults(run=run_train)


def run_train(args):
    """Train as the options say; print one line per epoch."""
    from .data import load_mnist
    from .network import Network
    from .trainer import TrainConfig, train

    config = TrainConfig(
        sizes=args.sizes, epochs=args.epochs, batch_size=args.batch_size,
        eta=args.eta, cost=args.cost, init=args.init, dtype=args.dtype,
        seed=args.seed, train_size=args.train_size, kernel=args.kernel,
    )  # fmt: skip
    kernel = kernels.get(config.kernel)
    data = load_mnist(args.data, train_size=config.train_size, dtype=config.dtype)
    net = Network(config.sizes, init=config.init, seed=config.seed, dtype=config.dtype)
    print(
        f"{config.kernel}: {list(config.sizes)} {config.cost} eta {config.eta} "
        f"batch {config.batch_size} {config.dtype}, "
        f"{len(data.train[1])} training / {len(data.test_labels)} test images",
        flush=True,
    )
    document = {"format_version": FORMAT_VERSION, "command": "train"}
    document["config"] = config.as_dict()
    # The history so far: a run that stops early says so in its JSON file.
    progress = {}

    def on_epoch(result, history):
        if result.epoch == 0:
            seconds = history.warmup_seconds
            say(f"warm-up (JIT compile, first BLAS call): {seconds:.2f} s")
        print(
            f"Epoch {result.epoch}: {result.correct}/{result.total} "
            f"({100 * result.accuracy:.2f}%)  {result.train_seconds:.2f} s",
            flush=True,
        )
        if args.json:
            progress.update(history.as_dict(), status="running")
            write_json(args.json, {**document, **progress})

    # A kernel that does not run on NumPy's BLAS gets it held at 1 unless
    # --blas-threads says otherwise: the evaluation after each epoch would
    # wake BLAS threads that stay busy-waiting for about 0.1 s (OpenBLAS idles
    # 2^28 CPU cycles before it sleeps), into the next epoch, on the cores
    # the kernel's own threads need.
    blas = args.blas_threads
    if blas is None and kernel.pool != "blas":
        blas = 1
    # Overflow warnings are noise: the trainer checks every epoch for NaN/inf.
    try:
        with (
            threads.limit(blas=blas, numba=args.numba_threads),
            np.errstate(over="ignore", invalid="ignore"),
        ):
            history = train(
                net, kernel, data.train, epochs=config.epochs,
                batch_size=config.batch_size, eta=config.eta, cost=config.cost,
                seed=config.seed, test_data=(data.test_images, data.test_labels),
                on_epoch=on_epoch,
            )  # fmt: skip
            document["runtime"] = {**threads.runtime_info(), "kernel": kernel.info()}
    except DivergenceError as err:
        if progress:
            progress.update(status="diverged", error=str(err))
            write_json(args.json, {**document, **progress})
        raise
    if args.json:
        document.update(history.as_dict(), status="complete")
        document.update(commit=threads.git_commit())
        write_json(args.json, document)
    if args.save:
        try:
            net.save(args.save)
        except OSError as err:
            raise HmnistError(
                f"{args.save}: cannot write the network ({err.strerror or err})"
            ) from None
        say(f"saved the network to {args.save}")
    return 0


# ----------------------------------------------------------------------------
# hmnist info


def add_info(sub):
    """Add the ``info`` command."""
    p = sub.add_parser("info", help="show the CPU, NumPy's BLAS, Numba and threads")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_info)


def run_info(args):
    """Print the runtime: CPU, cores, BLAS libraries, Numba's threading."""
    from . import probe
    from .network import Network

    # One tiny run starts Numba's thread pool, so the layer it chose is known.
    net = Network([4, 3, 2])
    x, y = np.zeros((2, 4)), np.zeros(2, dtype=np.int64)
    kernels.get("numba").warm_up(net, x, y, "quadratic", batch_size=2)
    info = {**threads.runtime_info(), "commit": threads.git_commit()}
    info["core_round_trip_ns"] = probe.round_trip_ns()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"CPU        {info['cpu']} ({info['cores']} cores)")
    print(f"Python     {info['python']}   NumPy {info['numpy']}")
    print(
        f"Numba      {info['numba']}   threading layer {info['threading_layer']}, "
        f"{info['numba_threads']} of {info['numba_max_threads']} threads"
    )
    for lib in info["threadpool_info"]:
        print(
            f"{lib['user_api']:<10} {lib['internal_api']} {lib.get('version')} "
            f"({lib.get('architecture')}, {lib['num_threads']} threads) "
            f"{lib['filepath']}"
        )
    trip = info["core_round_trip_ns"]
    if trip is not None:
        print(f"cores      a cache line's round trip between two cores: {trip:.0f} ns")
    for name, value in info["env"].items():
        if value is not None:
            print(f"env        {name}={value}")
    return 0


# ----------------------------------------------------------------------------
# hmnist export, predict, serve: the draw-a-digit page and image files

DEFAULT_MODEL = "model.npz"


def find_model(path):
    """Return ``path``, else ./model.npz if it exists; else say how to make one."""
    from pathlib import Path

    from .errors import ModelError

    if path:
        return Path(path)
    if Path(DEFAULT_MODEL).is_file():
        return Path(DEFAULT_MODEL)
    raise ModelError(
        f"no model: give --model FILE, or make ./{DEFAULT_MODEL} with "
        f"`hmnist train --save {DEFAULT_MODEL}`"
    )


def add_export(sub):
    """Add the ``export`` command."""
    p = sub.add_parser(
        "export", help="write the draw-a-digit page and its model into a folder"
    )
    p.add_argument("model", metavar="MODEL", help="a saved network (.npz)")
    p.add_argument("--out", metavar="DIR", required=True, help="folder to write")
    p.set_defaults(run=run_export)


def run_export(args):
    """Write the page, model.js and model.json; print what was written."""
    from pathlib import Path

    from .page import export

    document = export(args.model, args.out)
    sizes = ",".join(map(str, document["sizes"]))
    print(f"wrote {Path(args.out) / 'index.html'} with model.js and model.json")
    print(f"model {sizes} {document['dtype']} sha256 {document['sha256']}")
    return 0


def add_predict(sub):
    """Add the ``predict`` command."""
    p = sub.add_parser("predict", help="classify image files of handwritten digits")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG, JPEG, ... files")
    p.add_argument("--model", metavar="FILE", help=f"default ./{DEFAULT_MODEL}")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_predict)


def run_predict(args):
    """Print each image's predicted digit and the ten output activations."""
    from .images import load_digit
    from .network import Network
    from .page import N_INPUTS, N_OUTPUTS

    path = find_model(args.model)
    net = Network.load(path)
    if net.sizes[0] != N_INPUTS or net.sizes[-1] != N_OUTPUTS:
        raise HmnistError(
            f"{path}: sizes {net.sizes}; digits need {N_INPUTS} inputs "
            f"and {N_OUTPUTS} outputs"
        )
    x = np.stack([load_digit(image) for image in args.images])
    outputs = net.feedforward(x)
    digits = np.argmax(outputs, axis=1)
    if args.json:
        rows = [
            {"image": image, "digit": int(digit), "outputs": out.tolist()}
            for image, digit, out in zip(args.images, digits, outputs)
        ]
        document = {"format_version": FORMAT_VERSION, "command": "predict"}
        print(json.dumps({**document, "model": str(path), "predictions": rows}))
        return 0
    width = max(len(image) for image in args.images)
    print(f"{'image':<{width}}  digit  outputs 0-9")
    for image, digit, out in zip(args.images, digits, outputs):
        values = " ".join(f"{v:.4f}" for v in out)
        print(f"{image:<{width}}  {digit:>5}  {values}")
    return 0


def add_serve(sub):
    """Add the ``serve`` command."""
    p = sub.add_parser("serve", help="serve the draw-a-digit page on this machine")
    p.add_argument("--model", metavar="FILE", help=f"default ./{DEFAULT_MODEL}")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    p.add_argument(
        "--port", type=int_range(0, 65535), default=8000, help="0: any free port"
    )
    p.set_defaults(run=run_serve)


def run_serve(args):
    """Serve the page until interrupted; print its address."""
    from .page import make_server

    path = find_model(args.model)
    try:
        server = make_server(path, args.host, args.port)
    except OSError as err:
        raise HmnistError(
            f"cannot listen on {args.host}:{args.port}: {err.strerror or err}"
        ) from None
    host, port = server.server_address[:2]
    sizes = ",".join(map(str, server.document["sizes"]))
    print(f"serving {path} ({sizes}) at http://{host}:{port}/", flush=True)
    say("press Ctrl-C to stop")
    with server:
        server.serve_forever()
    return 0


# ----------------------------------------------------------------------------
# hmnist download, hmnist data verify


def mirror_url(text):
    """Parse a mirror's base URL: http:// or https:// and a host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"must be an http:// or https:// URL with a host, got {text!r}"
        )
    return text


def timeout_seconds(text):
    """Parse a timeout: a number of seconds in (0, 3600]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 3600, got {text}")
    return value


def add_download(sub):
    """Add the ``download`` command."""
    from .download import DEFAULT_RETRIES, DEFAULT_TIMEOUT, MIRRORS

    p = sub.add_parser(
        "download", help="fetch the four MNIST files from public mirrors and verify"
    )
    p.add_argument(
        "--dest", type=folder, metavar="DIR",
        help="folder to fill (default: $HMNIST_DATA, else data/mnist)",
    )  # fmt: skip
    p.add_argument(
        "--mirror", type=mirror_url, action="append", metavar="URL",
        help="base URL of a mirror; repeat to try several in order "
        f"(default: {' '.join(MIRRORS)})",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=timeout_seconds, default=DEFAULT_TIMEOUT, metavar="S",
        help="give up on a connection silent for S seconds (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--retries", type=int_range(0, 100), default=DEFAULT_RETRIES, metavar="N",
        help="further tries per mirror after a timeout or a dropped connection "
        "(default %(default)s)",
    )  # fmt: skip
    p.set_defaults(run=run_download)


def run_download(args):
    """Fetch every file not already verified; print one line per file."""
    from .download import download

    def report(item):
        where = f"from {item.url}" if item.url else "already there"
        print(f"ok       {item.path}  ({where})", flush=True)

    download(
        args.dest, mirrors=args.mirror, timeout=args.timeout, retries=args.retries,
        on_file=report,
    )  # fmt: skip
    return 0


def add_data(sub):
    """Add the ``data`` command and its ``verify`` subcommand."""
    p = sub.add_parser("data", help="check the MNIST files")
    data_sub = p.add_subparsers(
        dest="data_command", metavar="COMMAND", required=True, parser_class=Parser
    )
    v = data_sub.add_parser(
        "verify", help="check the four files against the published SHA-256 sums"
    )
    v.add_argument(
        "--data", type=folder, metavar="DIR",
        help="folder of the MNIST files (default: $HMNIST_DATA, else data/mnist)",
    )  # fmt: skip
    v.set_defaults(run=run_verify)


def run_verify(args):
    """Print ok, mismatch or missing per file; fail if any is not ok."""
    from .data import data_dir
    from .download import verify
    from .errors import DataError

    checks = verify(args.data)
    for check in checks:
        print(f"{check.status:<8} {check.message}")
    failed = [check for check in checks if check.status != "ok"]
    if failed:
        raise DataError(
            f"{len(failed)} of {len(checks)} files failed the check in "
            f"{data_dir(args.data)}; fetch them with `hmnist download --dest "
            f"{data_dir(args.data)}`"
        )
    return 0


# ----------------------------------------------------------------------------
# hmnist bench, hmnist report: the benchmark matrix and its tables

REGRESSION_EXIT = 3


def add_bench(sub):
    """Add the ``bench`` command."""
    from .bench import PRESETS

    p = sub.add_parser(
        "bench", help="time the kernels over a matrix of cells; write JSON results"
    )
    p.add_argument(
        "--preset", choices=PRESETS, default="quick",
        help="the matrix the other options change (default quick)",
    )  # fmt: skip
    p.add_argument("--kernels", nargs="+", type=kernel_name, metavar="NAME")
    p.add_argument(
        "--threads", nargs="+", type=int_range(1, 1024), metavar="N",
        help="threads of each kernel's own pool (BLAS, or Numba's with BLAS at 1)",
    )  # fmt: skip
    p.add_argument(
        "--blas-threads", nargs="+", type=int_range(1, 1024), metavar="N",
        help="BLAS threads, set apart from Numba's (a missing axis is 1)",
    )  # fmt: skip
    p.add_argument("--numba-threads", nargs="+", type=numba_threads, metavar="N")
    p.add_argument("--batch-sizes", nargs="+", type=int_range(1, 60_000), metavar="N")
    p.add_argument("--sizes", nargs="+", type=layer_sizes, metavar="784,...,10")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES)
    p.add_argument("--repeats", type=int_range(1, 1000), help="timed runs per cell")
    p.add_argument(
        "--samples", type=int_range(1, 60_000),
        help="samples each run trains (loop and torch: a tenth)",
    )  # fmt: skip
    p.add_argument(
        "--peak-size", type=int_range(16, 16_384), metavar="N",
        help="side of the square matrix product that measures the peak",
    )  # fmt: skip
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    p.add_argument(
        "--out", type=output_file, metavar="FILE",
        help="results file (default results/bench-PRESET-TIME-PID.json)",
    )  # fmt: skip
    p.add_argument("--data", metavar="DIR", help="folder of the MNIST files")
    p.add_argument(
        "--resume", action="store_true",
        help="keep the cells --out already holds (same machine and commit)",
    )  # fmt: skip
    p.add_argument("--verbose", "-v", action="store_true", help="a line per cell")
    p.set_defaults(run=run_bench)


def bench_options(args):
    """Return the matrix the options ask for, preset values filling the gaps."""
    from .bench import CHILD_KERNELS, COST, ETA, PRESETS, SLOW_KERNELS
    from .data import data_dir

    preset = PRESETS[args.preset]
    own = (args.threads, args.blas_threads, args.numba_threads)
    if not any(own):
        own = (preset.threads, preset.blas_threads, preset.numba_threads)

    def pick(value, default):
        return list(default if value is None else value)

    names = args.kernels or preset.kernels or kernels.names()
    return {
        "preset": args.preset, "kernels": list(dict.fromkeys(names)),
        "threads": list(own[0] or ()), "blas_threads": list(own[1] or ()),
        "numba_threads": list(own[2] or ()),
        "batch_sizes": pick(args.batch_sizes, preset.batch_sizes),
        "sizes": [list(s) for s in pick(args.sizes, preset.sizes)],
        "dtypes": pick(args.dtypes, preset.dtypes),
        "samples": args.samples or preset.samples,
        "repeats": args.repeats or preset.repeats,
        "peak_size": args.peak_size or preset.peak_size,
        "seed": args.seed, "cost": COST, "eta": ETA, "slow_kernels": SLOW_KERNELS,
        "child_kernels": list(CHILD_KERNELS), "data": str(data_dir(args.data)),
    }  # fmt: skip


def bench_line(cell, record):
    """Return the one-line summary of a measured cell."""
    accuracy = record["test_accuracy"]
    return (
        f"{cell.label()}: {record['seconds_per_epoch']:.3g} s/epoch "
        f"(IQR {record['iqr_seconds_per_epoch']:.2g}), "
        f"{record['samples_per_second']:,.0f} samples/s, "
        f"{record['gflops']:.2f} GFLOP/s ({100 * record['fraction_of_peak']:.1f}% "
        f"of peak), accuracy "
        + ("-" if accuracy is None else f"{100 * accuracy:.2f}%")
        + f", warm-up {record['warmup_seconds']:.2f} s"
    )


def run_bench(args):
    """Measure the matrix; save after every cell; print the speedup table."""
    from pathlib import Path

    from tqdm import tqdm

    from . import bench, report

    if args.resume and not args.out:
        say("hmnist bench: error: --resume needs --out FILE, the file to resume")
        return 2
    options = bench_options(args)
    # Load every kernel (and its framework) first: threadpoolctl limits only
    # libraries already loaded.
    loaded = {}
    for name in options["kernels"]:
        try:
            loaded[name] = kernels.get(name)
        except kernels.KernelUnavailable as err:
            say(f"hmnist bench: skipped: {err}")
    if not loaded:
        raise HmnistError("none of the kernels asked for is installed")
    options["kernels"] = list(loaded)
    cells = bench.make_cells(
        {name: kernel.pool for name, kernel in loaded.items()},
        threads=options["threads"], blas_threads=options["blas_threads"],
        numba_threads=options["numba_threads"], batch_sizes=options["batch_sizes"],
        sizes=options["sizes"], dtypes=options["dtypes"],
    )  # fmt: skip
    with_numba = [c for c in cells if c.numba_threads]
    most = threads.max_numba_threads() if with_numba else None
    too_many = [c for c in with_numba if c.numba_threads > most]
    if too_many:
        say(
            f"hmnist bench: skipped {len(too_many)} cells that need more than "
            f"{most} Numba threads (NUMBA_NUM_THREADS)"
        )
        cells = [c for c in cells if c not in too_many]
    if not cells:
        raise HmnistError("the options leave no cell to measure")

    out = Path(args.out or bench.default_out(args.preset))
    document = bench.new_document(options)
    if args.resume and out.exists():
        old = bench.read_results(out)
        if not bench.same_origin(document, old):
            raise HmnistError(
                f"{out}: measured on {report.machine_label(old)} at commit "
                f"{old.get('commit')}, not this machine and commit "
                f"{document['commit']}; cannot resume it, choose another --out"
            )
        document.update(started=old["started"], peaks=old["peaks"], cells=old["cells"])
    todo = bench.pending(document, cells)
    if args.resume:
        say(
            f"hmnist bench: {out}: {len(cells) - len(todo)} of {len(cells)} "
            "cells already measured"
        )

    measured = 0
    bar = tqdm(total=len(todo), unit="cell", file=sys.stderr, disable=None)

    def on_cell(cell, record):
        """Advance the bar; at --verbose, print the cell's line."""
        nonlocal measured
        measured += 1
        bar.update()
        if args.verbose:
            bar.write(bench_line(cell, record), file=sys.stderr)

    def show_warning(message, category, *_, **__):
        """Print a warning as one line that keeps clear of the bar."""
        bar.write(f"hmnist bench: warning: {message}", file=sys.stderr)

    try:
        with bar, warnings.catch_warnings():
            warnings.showwarning = show_warning
            bench.run(
                document, todo, out, loaded, data_dir=args.data,
                samples=options["samples"], repeats=options["repeats"],
                seed=options["seed"], peak_size=options["peak_size"], on_cell=on_cell,
            )  # fmt: skip
    except KeyboardInterrupt:
        saved = "no cell finished, nothing written"
        if measured:
            saved = f"{len(document['cells'])} cells saved in {out}"
        say(f"hmnist bench: interrupted; {saved}")
        return 130
    except OSError as err:
        where = err.filename or out
        raise HmnistError(f"{where}: cannot write ({err.strerror or err})") from None

    if not document["cells"]:
        raise HmnistError("no cell could be measured; nothing written")
    label = report.machine_label(document)
    cells_done = report.gather_cells([(out, document)])
    print(report.speedup_table(cells_done, [label]).to_markdown())
    say(f"hmnist bench: {measured} cells measured; results in {out}")
    return 0


def add_report(sub):
    """Add the ``report`` command."""
    p = sub.add_parser(
        "report", help="speedup and thread-scaling tables and plots from results"
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE",
        help="hmnist bench results, and hmnist train --json files for accuracy",
    )  # fmt: skip
    p.add_argument(
        "--out-dir", type=folder, metavar="DIR",
        help="where to write (default: beside the first file)",
    )  # fmt: skip
    p.add_argument("--compare", metavar="OLD.json", help="an earlier bench file")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    p.add_argument(
        "--threshold", type=positive_float, default=10.0, metavar="PERCENT",
        help=f"slower than --compare by more than this is a regression (exit "
        f"{REGRESSION_EXIT}); default 10",
    )  # fmt: skip
    p.set_defaults(run=run_report)


def run_report(args):
    """Write tables and plots; print the speedup table; exit 3 on a regression."""
    from . import report

    try:
        built = report.build(
            args.files, out_dir=args.out_dir, compare=args.compare,
            threshold=args.threshold, plots=not args.no_plots,
        )  # fmt: skip
    except OSError as err:
        raise HmnistError(
            f"{err.filename or args.out_dir}: cannot write ({err.strerror or err})"
        ) from None
    for name in ("speedup", "compare"):
        if name in built.tables:
            table = built.tables[name]
            print(f"## {table.title}\n\n{table.to_markdown()}\n")
    for note in built.notes:
        say(f"hmnist report: {note}")
    folder_written = built.written[0].parent if built.written else "-"
    say(f"hmnist report: wrote {len(built.written)} files to {folder_written}")
    if built.regressions:
        say(
            f"hmnist report: {built.regressions} cells are more than "
            f"{args.threshold:g}% slower than {args.compare}"
        )
        return REGRESSION_EXIT
    return 0


# ----------------------------------------------------------------------------
# Entry point

COMMANDS = [
    add_train,
    add_info,
    add_export,
    add_predict,
    add_serve,
    add_download,
    add_data,
    add_bench,
    add_report,
]


def build_parser():
    """Return the ``hmnist`` argument parser with every command."""
    parser = Parser(prog="hmnist", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None):
    """Run the ``hmnist`` command; return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", threads.OversubscriptionWarning)
            return args.run(args) or 0
    except HmnistError as err:
        print(f"hmnist {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        # A file the user named cannot be written or read (disk full,
        # permissions): say which and why, in one line.
        where = f"{err.filename}: " if err.filename else ""
        print(f"hmnist {args.command}: error: {where}{err.strerror or err}",
              file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print(f"hmnist {args.command}: interrupted", file=sys.stderr)
        return 130
