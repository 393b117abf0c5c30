"""Atomic operations on int64 arrays, and a spin-wait hint, for Numba code.

Numba has no atomics of its own. These intrinsics emit LLVM's: loads
with acquire ordering, stores with release ordering, and read-modify-write
operations that are both, so that what a thread wrote before it
published a value is seen by the thread that reads the value. They are
what two of Numba's threads use to wait for each other without a
parallel region's fork and join (``hmnist.probe`` and the ``numba``
kernel). Every function takes a 1-D int64 array and an index.
"""

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# The CPU's hint that a loop is spinning: it saves power and, on x86, the
# pipeline flush when the awaited write arrives. Other CPUs spin without one.
_PAUSE = "llvm.x86.sse2.pause" if platform.machine() in ("x86_64", "AMD64") else None


def _slot_pointer(context, builder, array_type, array, index):
    """Return the LLVM pointer to ``array[index]`` of a 1-D array."""
    native = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, native, [index])


def _int64(context, builder, value, value_type):
    """Return ``value`` cast to an LLVM int64."""
    return context.cast(builder, value, value_type, types.int64)


@intrinsic
def load(typingctx, a, i):
    """Read ``a[i]`` atomically, with acquire ordering."""

    def codegen(context, builder, signature, args):
        ptr = _slot_pointer(context, builder, signature.args[0], *args)
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(a, i), codegen


@intrinsic
def store(typingctx, a, i, v):
    """Write ``a[i] = v`` atomically, with release ordering."""

    def codegen(context, builder, signature, args):
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        value = _int64(context, builder, args[2], signature.args[2])
        builder.store_atomic(value, ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(a, i, v), codegen


@intrinsic
def fetch_add(typingctx, a, i, v):
    """Add ``v`` to ``a[i]`` atomically; return the value it had before."""

    def codegen(context, builder, signature, args):
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        value = _int64(context, builder, args[2], signature.args[2])
        return builder.atomic_rmw("add", ptr, value, "acq_rel")

    return types.int64(a, i, v), codegen


@intrinsic
def compare_exchange(typingctx, a, i, expected, v):
    """Set ``a[i] = v`` if it holds ``expected``, atomically; return whether it did."""

    def codegen(context, builder, signature, args):
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        old = _int64(context, builder, args[2], signature.args[2])
        new = _int64(context, builder, args[3], signature.args[3])
        pair = builder.cmpxchg(ptr, old, new, "acq_rel", "acquire")
        return builder.extract_value(pair, 1)

    return types.boolean(a, i, expected, v), codegen


@intrinsic
def pause(typingctx):
    """Tell the CPU that this thread is spinning on a value another will write."""

    def codegen(context, builder, signature, args):
        if _PAUSE is not None:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), _PAUSE
            )
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen
