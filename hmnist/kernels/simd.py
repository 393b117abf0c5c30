"""Explicit SIMD vectors for Numba code: one register's width of floats.

Numba vectorises loops on its own, but only a loop's innermost level, and
it sums a vector of partial results back into one number wherever that
loop ends. The ``numba`` kernel needs sums that stay in registers across
tiles of a matrix row, so it writes its vectors out: ``load`` a vector
from along an array's last axis, do arithmetic on it with ``+ - * /`` (a
number on either side is spread over the lanes), ``store`` it back, and
``hsum`` its lanes at the end. Multiplies and adds may be fused into one instruction, as
the kernel's ``contract`` fast-math flag allows elsewhere.

A vector is as wide as the CPU's widest register: ``LANE_BYTES`` is 64
with AVX-512, 32 with AVX2 and 16 otherwise, or when ``NUMBA_CPU_NAME``
makes Numba compile for a CPU other than this one. ``lanes(dtype)`` says
how many numbers that is. ``exp`` calls glibc's vector exponential
(libmvec) where there is one for that width, and otherwise one scalar
``exp`` a lane.

What it leaves out: masked loads and stores (a caller handles the end of
a row that does not fill a vector), integer vectors, and any operation
the kernel does not use.
"""

import operator

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model


def _lane_bytes():
    """Return the width in bytes of this CPU's widest vector register."""
    if numba.config.CPU_NAME is not None:
        return 16
    features = llvm.get_host_cpu_features()
    return 64 if features.get("avx512f") else 32 if features.get("avx2") else 16


def _vector_exp_names():
    """Return libmvec's exp by dtype bits at this width, or None without libmvec."""
    if numba.config.CPU_NAME is not None or LANE_BYTES == 16:
        # The 16-byte variants need SSE4.1, which a generic CPU may lack.
        return None
    try:
        llvm.load_library_permanently("libmvec.so.1")
    except RuntimeError:
        return None
    # glibc's vector ABI names: e for AVX-512, d for AVX2, then the lanes.
    isa = "e" if LANE_BYTES == 64 else "d"
    return {
        64: f"_ZGV{isa}N{LANE_BYTES // 8}v_exp",
        32: f"_ZGV{isa}N{LANE_BYTES // 4}v_expf",
    }


LANE_BYTES = _lane_bytes()
VECTOR_EXP = _vector_exp_names()


def lanes(dtype):
    """Return how many numbers of ``dtype`` fill one vector."""
    return LANE_BYTES // np.dtype(dtype).itemsize


@overload(lanes)
def _lanes(dtype):
    """Define ``lanes(a.dtype)`` in compiled code, a constant."""
    n = LANE_BYTES * 8 // dtype.dtype.bitwidth
    return lambda dtype: n


class Vector(types.Type):
    """Numba's type of one register of ``dtype`` numbers."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = LANE_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    """Hold a Vector as an LLVM vector value, in a register."""

    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _vector_pointer(context, builder, array_type, array, index_type, index):
    """Return an LLVM pointer to the vector that starts at ``array[index]``."""
    native = context.make_array(array_type)(context, builder, array)
    indices = [
        context.cast(builder, i, t, types.intp)
        for i, t in zip(cgutils.unpack_tuple(builder, index), index_type)
    ]
    ptr = cgutils.get_item_pointer(context, builder, array_type, native, indices)
    vector = context.get_value_type(Vector(array_type.dtype))
    return builder.bitcast(ptr, vector.as_pointer())


@intrinsic
def _load(typingctx, a, index):
    """Return the vector at ``a[index]`` along the last axis; ``index`` a tuple."""
    vector = Vector(a.dtype)

    def codegen(context, builder, signature, args):
        ptr = _vector_pointer(context, builder, a, args[0], index, args[1])
        return builder.load(ptr, align=a.dtype.bitwidth // 8)

    return vector(a, index), codegen


@intrinsic
def _store(typingctx, v, a, index):
    """Write the vector ``v`` at ``a[index]`` along the last axis."""

    def codegen(context, builder, signature, args):
        ptr = _vector_pointer(context, builder, a, args[1], index, args[2])
        builder.store(args[0], ptr, align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(v, a, index), codegen


def load(a, *index):
    """Return the vector ``a[i, ..., k:k + lanes]``, ``index`` being ``(i, ..., k)``.

    The last axis must be contiguous. Indexing the whole array, not a
    row of it, spares a view and its reference count, which threads
    that share the array would contend for.
    """
    raise NotImplementedError("simd.load runs in compiled code only")


def store(v, a, *index):
    """Write the vector ``v`` to ``a[i, ..., k:k + lanes]``; see :func:`load`."""
    raise NotImplementedError("simd.store runs in compiled code only")


@overload(load)
def _load_overload(a, *index):
    """Define :func:`load` in compiled code."""
    return lambda a, *index: _load(a, index)


@overload(store)
def _store_overload(v, a, *index):
    """Define :func:`store` in compiled code."""
    return lambda v, a, *index: _store(v, a, index)


@intrinsic
def splat(typingctx, x, like):
    """Return ``x`` in every lane of a vector of ``like``'s dtype.

    ``like`` is an array or a vector.
    """
    vector = like if isinstance(like, Vector) else Vector(like.dtype)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], vector.dtype)
        llvm_type = context.get_value_type(vector)
        undef = ir.Constant(llvm_type, ir.Undefined)
        first = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), vector.lanes), None)
        return builder.shuffle_vector(first, undef, zeros)

    return vector(x, like), codegen


@intrinsic
def hsum(typingctx, v):
    """Return the sum of ``v``'s lanes, added in halves: a fixed order."""

    def codegen(context, builder, signature, args):
        x, n = args[0], v.lanes
        while n > 1:
            n //= 2
            low = ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(n)))
            high = ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(n, 2 * n)))
            x = builder.fadd(
                builder.shuffle_vector(x, x, low), builder.shuffle_vector(x, x, high)
            )
        return builder.extract_element(x, ir.Constant(ir.IntType(32), 0))

    return v.dtype(v), codegen


@intrinsic
def exp(typingctx, v):
    """Return ``e ** v`` lane by lane: libmvec's, else a scalar ``exp`` a lane."""

    def codegen(context, builder, signature, args):
        llvm_type = context.get_value_type(v)
        if VECTOR_EXP is None:
            name = f"llvm.exp.v{v.lanes}f{v.dtype.bitwidth}"
        else:
            name = VECTOR_EXP[v.dtype.bitwidth]
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(llvm_type, [llvm_type]), name
        )
        return builder.call(fn, [args[0]])

    return v(v), codegen


def _binary(instruction):
    """Return an intrinsic applying ``instruction`` to two vectors of one type."""

    @intrinsic
    def apply(typingctx, a, b):
        def codegen(context, builder, signature, args):
            # contract: a multiply followed by an add may become one FMA.
            return getattr(builder, instruction)(*args, flags=("contract",))

        return a(a, b), codegen

    return apply


_ARITHMETIC = {
    operator.add: _binary("fadd"),
    operator.sub: _binary("fsub"),
    operator.mul: _binary("fmul"),
    operator.truediv: _binary("fdiv"),
}


def _overload_arithmetic(op, apply):
    """Define ``op`` on two vectors, or on a vector and a number."""

    @overload(op)
    def vector_op(a, b):
        number = (types.Float, types.Integer)
        if isinstance(a, Vector) and isinstance(b, Vector):
            return lambda a, b: apply(a, b)
        if isinstance(a, Vector) and isinstance(b, number):
            return lambda a, b: apply(a, splat(b, a))
        if isinstance(a, number) and isinstance(b, Vector):
            return lambda a, b: apply(splat(a, b), b)
        return None


for _op, _apply in _ARITHMETIC.items():
    _overload_arithmetic(_op, _apply)


@intrinsic
def _fneg(typingctx, v):
    """Return ``-v``, lane by lane."""

    def codegen(context, builder, signature, args):
        return builder.fneg(args[0])

    return v(v), codegen


@overload(operator.neg)
def _negate(v):
    """Define ``-v`` on a vector."""
    if isinstance(v, Vector):
        return lambda v: _fneg(v)
    return None
