"""Backprop kernels, found by name.

``names()`` lists every kernel hmnist knows; ``available()`` those whose
packages are installed; ``get(name)`` returns a ready kernel. Modules are
imported on first use, so choosing ``loop`` never loads Numba and a
missing peer (PyTorch, JAX) costs nothing until asked for.
"""

import importlib

from ..errors import HmnistError

# name -> (module, class); the module imports its framework at top level.
_REGISTRY = {
    "loop": ("loop", "LoopKernel"),
    "matmul": ("matmul", "MatmulKernel"),
    "numba": ("numba_parallel", "NumbaKernel"),
    "torch": ("torch_eager", "TorchKernel"),
    "torch-fast": ("torch_fast", "TorchFastKernel"),
    "jax": ("jax_scan", "JaxKernel"),
}
_cache = {}


class KernelUnavailable(HmnistError):
    """A known kernel whose framework is not installed."""


def names():
    """Return every kernel name, installed or not."""
    return list(_REGISTRY)


def get(name):
    """Return the kernel called ``name``.

    Raises ValueError for an unknown name and KernelUnavailable when the
    kernel's framework cannot be imported.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown kernel {name!r}; choose from {', '.join(names())}")
    if name not in _cache:
        module_name, class_name = _REGISTRY[name]
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ImportError as err:
            raise KernelUnavailable(
                f"kernel {name!r} needs a package that is not installed ({err}); "
                "install the 'peers' extra"
            ) from None
        _cache[name] = getattr(module, class_name)()
    return _cache[name]


def available():
    """Return the names of the kernels whose frameworks import."""
    found = []
    for name in names():
        try:
            get(name)
        except KernelUnavailable:
            continue
        found.append(name)
    return found
