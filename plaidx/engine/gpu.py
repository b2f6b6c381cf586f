"""The CUDA path: ``plaidx._cuda`` (GPU twins of the native kernels) and device selection.

``plaidx._cuda`` is always built: with nvcc it holds the kernels of ``csrc/cuda``; without, a stub that
imports and says why. Nothing here initialises CUDA until a GPU is asked for, so ``import plaidx``
stays cheap and works on machines without a driver.

Devices are named like torch's: ``"cpu"``, ``"cuda"`` (device 0) or ``"cuda:N"``; ``None`` means the CPU.
"""

from __future__ import annotations

import functools
from typing import Any

# The CUDA kernels read uint16 codes: an index of more centroids (uint32 codes, format 4) searches and
# builds on the CPU.
from .codec import MAX_NLIST_UINT16 as MAX_NLIST

MAX_NPROBE = 512  # the CUDA probe kernel's largest nprobe below nlist (kMaxProbe in csrc/cuda/kernels.cu)

try:
    from .. import _cuda  # type: ignore[attr-defined]

    _import_error: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the build
    _cuda = None
    _import_error = f"plaidx._cuda could not be imported ({type(exc).__name__}: {exc}); reinstall plaidx"


@functools.lru_cache(maxsize=1)
def cuda_info() -> dict[str, Any]:
    """``cuda`` (usable now), ``cuda_reason`` (why not, else None) and the device and build details."""
    if _cuda is None:
        return {"cuda": False, "cuda_reason": _import_error}
    d = dict(_cuda.device_info())
    info: dict[str, Any] = {"cuda": bool(d.pop("available")), "cuda_reason": d.pop("reason") or None}
    info.update({f"cuda_{k}": v for k, v in d.items()})
    return info


def resolve_device(device: Any, purpose: str = "search") -> int | None:
    """The CUDA device index a ``device`` argument names, or None for the CPU.

    Raises ValueError for a name that is not a device, RuntimeError (with the reason) when a GPU is
    asked for and this build or machine cannot provide one.
    """
    if device is None:
        return None
    text = str(device).strip().lower()  # accepts torch.device too
    if text == "cpu":
        return None
    if text == "cuda":
        index = 0
    elif text.startswith("cuda:") and text[5:].isdigit():
        index = int(text[5:])
    else:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    info = cuda_info()
    if not info["cuda"]:
        raise RuntimeError(f"device={device!r} needs a usable CUDA GPU, but {info['cuda_reason']}. "
                           f"{purpose.capitalize()} on the CPU with device='cpu' (the default).")
    count = int(info.get("cuda_device_count", 0))
    if index >= count:
        raise ValueError(f"device={device!r}: this machine has {count} CUDA device(s) (0..{count - 1})")
    return index


def names_cuda(device: Any) -> bool:
    """Whether a ``device`` argument names a CUDA device, from its text alone (no GPU is looked for), so that
    what a GPU cannot do is refused before :func:`resolve_device` asks for one."""
    return device is not None and str(device).strip().lower().startswith("cuda")


def check_codes_fit(device: Any, nlist: int, purpose: str = "search") -> None:
    """A clear ValueError when ``device`` names a CUDA device and ``nlist`` exceeds :data:`MAX_NLIST`."""
    if nlist <= MAX_NLIST or not names_cuda(device):
        return
    raise ValueError(f"device={device!r}: the CUDA kernels handle at most {MAX_NLIST} centroids (uint16 codes), "
                     f"and this {'index' if purpose == 'search' else 'build'} has nlist={nlist} (uint32 codes). "
                     f"{purpose.capitalize()} it on the CPU with device='cpu' (the default)"
                     + (", or build with nlist <= 65536 to use the GPU." if purpose == "build" else "."))


def module() -> Any:
    """plaidx._cuda, for callers that have checked :func:`resolve_device` first."""
    if _cuda is None:
        raise RuntimeError(_import_error)
    return _cuda
