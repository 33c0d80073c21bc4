"""Validation at the edge for the metric functions: 1-D numeric arrays, binary outcomes, probabilities.

Each check returns the validated array (as the dtype the metrics compute in) or raises
:class:`models.errors.InputValidationError` naming the argument and the problem, e.g.
``"p must be in [0, 1]; got max 1.3"``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.errors import InputValidationError

__all__ = [
    "as_1d_numeric",
    "as_binary",
    "as_finite_float",
    "as_probability",
    "binary_and_probability",
    "check_same_length",
]


def as_1d_numeric(x: ArrayLike, name: str) -> NDArray[np.generic]:
    """``x`` as a non-empty 1-D numeric (bool, int or float) array; ``name`` is the argument named in errors."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InputValidationError(name, f"{name} must be 1-dimensional; got shape {arr.shape}")
    if arr.size == 0:
        raise InputValidationError(name, f"{name} must not be empty")
    if arr.dtype.kind not in "biuf":
        raise InputValidationError(name, f"{name} must be numeric; got dtype {arr.dtype}")
    return arr


def check_same_length(**arrays: NDArray[np.generic]) -> None:
    """Raise unless every array (keyword: the argument's name) has the same length."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        names = " and ".join(lengths)
        got = " and ".join(str(v) for v in lengths.values())
        raise InputValidationError(next(iter(lengths)), f"{names} must have the same length; got {got}")


def as_binary(y: ArrayLike, name: str = "y") -> NDArray[np.int64]:
    """``y`` as an int64 array of 0 and 1 (bool accepted)."""
    arr = as_1d_numeric(y, name)
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        bad = arr[~ok][0]
        raise InputValidationError(name, f"{name} must contain only 0 and 1; got {bad.item()!r}")
    return arr.astype(np.int64, copy=False)


def as_finite_float(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """``x`` as a float64 array with no NaN or infinite value."""
    arr = as_1d_numeric(x, name).astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not np.all(finite):
        n_bad = int(np.count_nonzero(~finite))
        raise InputValidationError(name, f"{name} must be finite; got {n_bad} NaN or infinite value(s)")
    return arr


def as_probability(p: ArrayLike, name: str = "p") -> NDArray[np.float64]:
    """``p`` as a finite float64 array in [0, 1]."""
    arr = as_finite_float(p, name)
    lo, hi = float(arr.min()), float(arr.max())
    problems = ([f"min {lo:g}"] if lo < 0.0 else []) + ([f"max {hi:g}"] if hi > 1.0 else [])
    if problems:
        raise InputValidationError(name, f"{name} must be in [0, 1]; got {' and '.join(problems)}")
    return arr


def binary_and_probability(y: ArrayLike, p: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """A binary outcome ``y`` and a probability ``p`` of the same length (:func:`as_binary`, :func:`as_probability`)."""
    y_arr, p_arr = as_binary(y, "y"), as_probability(p, "p")
    check_same_length(y=y_arr, p=p_arr)
    return y_arr, p_arr
