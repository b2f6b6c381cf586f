"""What this build of plaidx has: backend, OpenMP, threads, SIMD, CUDA, and why something is missing."""

from __future__ import annotations

import os
from typing import Any


def build_info() -> dict[str, Any]:
    """Describe the kernels in use.

    Returns
    -------
    dict
        ``backend`` ("native" or "reference"), ``native_error`` (why the native module is not in use,
        or None), and the backend's own fields (OpenMP, threads, SIMD level, CUDA and why not).
        ``int8_vnni``: whether the int8 kernels run as AVX-512 VNNI here; a search's unset ``cell_scores``
        is int8 then, float32 otherwise (see :class:`plaidx.SearchParams`). ``adc_copy``: which copy of the
        lookup-table exact stage (the default ``exact_scores``) runs: "avx512bw", "avx2" or "generic".
        ``int8_amx``: whether the int8 cell scores run as AMX tile products (Sapphire Rapids and later; the
        same values; ``PLAIDX_AMX=0`` turns them off).
    """
    from .. import __version__
    from . import gpu, kernels

    info: dict[str, Any] = {"version": __version__, "backend": kernels.BACKEND_NAME,
                            "native_error": kernels.native_error()}
    info.update(kernels.backend.build_info())
    info.update(gpu.cuda_info())
    info["PLAIDX_BACKEND"] = os.environ.get("PLAIDX_BACKEND", "auto")
    return info
