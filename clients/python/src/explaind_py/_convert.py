"""numpy arrays and Python values to and from explaind's messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from ._proto import explaind_pb2 as pb

# ElementType -> numpy dtype (little-endian), for the types numpy can hold.
DTYPES: dict[int, np.dtype] = {
    pb.ELEMENT_TYPE_FLOAT: np.dtype("<f4"),
    pb.ELEMENT_TYPE_UINT8: np.dtype("u1"),
    pb.ELEMENT_TYPE_INT8: np.dtype("i1"),
    pb.ELEMENT_TYPE_UINT16: np.dtype("<u2"),
    pb.ELEMENT_TYPE_INT16: np.dtype("<i2"),
    pb.ELEMENT_TYPE_INT32: np.dtype("<i4"),
    pb.ELEMENT_TYPE_INT64: np.dtype("<i8"),
    pb.ELEMENT_TYPE_BOOL: np.dtype("?"),
    pb.ELEMENT_TYPE_FLOAT16: np.dtype("<f2"),
    pb.ELEMENT_TYPE_DOUBLE: np.dtype("<f8"),
    pb.ELEMENT_TYPE_UINT32: np.dtype("<u4"),
    pb.ELEMENT_TYPE_UINT64: np.dtype("<u8"),
}
_ELEMENT_TYPES = {dt: et for et, dt in DTYPES.items()}

ParamLike = Union[bool, int, float, str, Sequence[int], Sequence[float], np.ndarray, pb.ParamValue]


def element_type_name(element_type: int) -> str:
    """ELEMENT_TYPE_INT64 -> "int64" (the numpy name when there is one)."""
    dt = DTYPES.get(element_type)
    if dt is not None:
        return dt.name
    return pb.ElementType.Name(element_type).removeprefix("ELEMENT_TYPE_").lower()


def _refuse(what: str, a: np.ndarray, bad: np.ndarray, target: np.dtype, why: str) -> None:
    if bad.any():
        at = tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape))
        raise ValueError(
            f"{what}: element {list(at)} is {a[at]!r} ({a.dtype}); {why}, so it cannot be sent "
            f"as {target.name} without changing it"
        )


def cast(value: Any, target: np.dtype, what: str) -> np.ndarray:
    """`value` as a C-ordered little-endian array of `target`, or ValueError when that would change
    a value: a fraction or an out-of-range number to an integer type, anything but 0 and 1 to
    bool, an integer a float type does not hold exactly, or a finite float that overflows.
    Rounding a float to a narrower float (float64 to float32) is the one change accepted."""
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what}: numpy dtype {a.dtype} is not a number type")
    if a.dtype != target and a.size:
        kind = target.kind
        if kind == "b":
            _refuse(what, a, (a != 0) & (a != 1), target, "bool takes 0 and 1 only")
        elif kind in "iu":
            info = np.iinfo(target)
            if a.dtype.kind == "f":
                _refuse(what, a, ~np.isfinite(a), target, "it is not finite")
                _refuse(what, a, a != np.trunc(a), target, "it is not an integer")
                # Bounds as floats: min and max + 1 are powers of two, exact in every float type.
                lo, hi = float(info.min), float(info.max) + 1.0
                _refuse(what, a, (a < lo) | (a >= hi), target, "it is out of range")
            elif a.dtype.kind in "iu":
                if int(a.min()) < info.min or int(a.max()) > info.max:
                    big = a.astype(object)  # exact comparisons, in the error case only
                    _refuse(what, a, (big < info.min) | (big > info.max), target,
                            "it is out of range")
        else:  # a float type
            with np.errstate(over="ignore", invalid="ignore"):
                out = a.astype(target)
                if a.dtype.kind == "f":
                    _refuse(what, a, np.isinf(out) & np.isfinite(a), target, "it overflows")
                else:
                    back = np.where(np.isfinite(out), out, 0).astype(a.dtype)
                    _refuse(what, a, ~np.isfinite(out) | (back != a), target,
                            f"{target.name} does not hold it exactly")
    return np.ascontiguousarray(a, dtype=target)


def to_tensor(array: np.ndarray) -> pb.Tensor:
    """A numpy array (of a dtype in DTYPES) as a Tensor message."""
    dt = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    et = _ELEMENT_TYPES.get(dt)
    if et is None:
        raise TypeError(f"no ElementType for numpy dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype=dt).tobytes(order="C")
    return pb.Tensor(element_type=et, shape=list(array.shape), data=data)


def from_tensor(tensor: pb.Tensor) -> np.ndarray:
    """A Tensor message as a (writable) numpy array."""
    dt = DTYPES.get(tensor.element_type)
    if dt is None:
        raise TypeError(f"no numpy dtype for {pb.ElementType.Name(tensor.element_type)}")
    shape = tuple(int(d) for d in tensor.shape)
    return np.frombuffer(tensor.data, dtype=dt).reshape(shape).copy()


def param_value(name: str, value: ParamLike) -> pb.ParamValue:
    """A Python value as a ParamValue: bool -> flag, int -> integer, float -> number,
    str -> text, a sequence of ints -> integers, of numbers -> numbers."""
    if isinstance(value, pb.ParamValue):
        return value
    if isinstance(value, (bool, np.bool_)):
        return pb.ParamValue(flag=bool(value))
    if isinstance(value, (int, np.integer)):
        return pb.ParamValue(integer=int(value))
    if isinstance(value, (float, np.floating)):
        return pb.ParamValue(number=float(value))
    if isinstance(value, str):
        return pb.ParamValue(text=value)
    if isinstance(value, (Sequence, np.ndarray)):
        items = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
               for v in items):
            return pb.ParamValue(integers=pb.IntegerList(values=[int(v) for v in items]))
        if all(isinstance(v, (int, float, np.integer, np.floating))
               and not isinstance(v, (bool, np.bool_)) for v in items):
            return pb.ParamValue(numbers=pb.NumberList(values=[float(v) for v in items]))
    raise TypeError(
        f"parameter {name}: {type(value).__name__} {value!r} is not a bool, int, float, str or "
        f"a list of ints or of numbers"
    )


def python_value(value: pb.ParamValue) -> Any:
    """A ParamValue as a Python value (None when unset)."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    if kind in ("numbers", "integers"):
        return list(getattr(value, kind).values)
    return getattr(value, kind)


TargetsLike = Union[None, int, str, Sequence[int], tuple[str, int]]


def targets(value: TargetsLike) -> pb.Targets | None:
    """None (the predicted class), an index, a list of indices, "all", "predicted" or
    ("top_k", k) as a Targets message."""
    if value is None:
        return None
    if isinstance(value, str):
        if value == "all":
            return pb.Targets(all=pb.AllOutputs())
        if value == "predicted":
            return pb.Targets(predicted=pb.PredictedClass())
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return pb.Targets(indices=pb.IndexList(values=[int(value)]))
    elif isinstance(value, tuple) and len(value) == 2 and value[0] == "top_k":
        return pb.Targets(top_k=int(value[1]))
    elif isinstance(value, (Sequence, np.ndarray)) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value
    ):
        return pb.Targets(indices=pb.IndexList(values=[int(v) for v in value]))
    raise ValueError(
        f"targets: {value!r}; give an index, a list of indices, \"all\", \"predicted\" or "
        f"(\"top_k\", k)"
    )
