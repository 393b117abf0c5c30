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
from ._io import atomic_write
from .errors import HmnistError
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


# ----------------------------------------------------------------------------
# Shared output helpers.


def write_json(path, document):
    """Write ``document`` to ``path`` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(document, f, indent=1)
        f.write("\n")


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
    p.add_argument("--blas-threads", type=int_range(1, 1024), default=None)
    p.add_argument("--numba-threads", type=numba_threads, default=None)
    p.add_argument("--data", metavar="DIR", help="folder of the MNIST files")
    p.add_argument("--save", metavar="FILE", help="write the trained network (.npz)")
    p.add_argument("--json", metavar="FILE", help="write config and history as JSON")
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
        f"{len(data.train[1])} training / {len(data.test[1])} test images",
        flush=True,
    )
    document = {"format_version": FORMAT_VERSION, "command": "train"}
    document["config"] = config.as_dict()

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
            write_json(args.json, {**document, **history.as_dict()})

    with threads.limit(blas=args.blas_threads, numba=args.numba_threads):
        history = train(
            net, kernel, data.train, epochs=config.epochs,
            batch_size=config.batch_size, eta=config.eta, cost=config.cost,
            seed=config.seed, test_data=data.test, on_epoch=on_epoch,
        )  # fmt: skip
        document["runtime"] = {**threads.runtime_info(), "kernel": kernel.info()}
    if args.json:
        document.update(history.as_dict(), commit=threads.git_commit())
        write_json(args.json, document)
    if args.save:
        net.save(args.save)
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
    from .network import Network

    # One tiny run starts Numba's thread pool, so the layer it chose is known.
    net = Network([4, 3, 2])
    x, y = np.zeros((2, 4)), np.zeros(2, dtype=np.int64)
    kernels.get("numba").warm_up(net, x, y, "quadratic", batch_size=2)
    info = {**threads.runtime_info(), "commit": threads.git_commit()}
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
    for name, value in info["env"].items():
        if value is not None:
            print(f"env        {name}={value}")
    return 0


# ----------------------------------------------------------------------------
# Entry point

COMMANDS = [add_train, add_info]


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
    except KeyboardInterrupt:
        print(f"hmnist {args.command}: interrupted", file=sys.stderr)
        return 130
