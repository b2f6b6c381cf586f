"""Build script for plaidx's native core (plaidx._core).

C++17 via pybind11, OpenMP when the compiler supports it (detected, never assumed), no link
against libtorch, no -march=native or -ffast-math unless asked for:

  PLAIDX_NATIVE_ARCH=1   add -march=native (faster, not portable)
  PLAIDX_NO_OPENMP=1     build without OpenMP
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ROOT = Path(__file__).parent


def _compiler_accepts(flags):
    """True when the C++ compiler builds and links a tiny OpenMP program with these flags."""
    cxx = os.environ.get("CXX", "c++")
    src = "#include <omp.h>\nint main(){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.cpp"
        path.write_text(src)
        try:
            res = subprocess.run([cxx, str(path), "-o", str(Path(tmp) / "t"), *flags],
                                 capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return res.returncode == 0


def _openmp_flags():
    if os.environ.get("PLAIDX_NO_OPENMP"):
        return [], [], "disabled by PLAIDX_NO_OPENMP"
    if sys.platform == "darwin":
        flags = ["-Xpreprocessor", "-fopenmp"]
        if _compiler_accepts([*flags, "-lomp"]):
            return flags, ["-lomp"], "libomp"
    elif sys.platform == "win32":
        return ["/openmp"], [], "msvc"
    elif _compiler_accepts(["-fopenmp"]):
        return ["-fopenmp"], ["-fopenmp"], "gcc/clang -fopenmp"
    return [], [], "compiler has no OpenMP"


omp_compile, omp_link, omp_why = _openmp_flags()
extra_compile = ["-O3", *omp_compile] if sys.platform != "win32" else ["/O2", *omp_compile]
if os.environ.get("PLAIDX_NATIVE_ARCH"):
    extra_compile.append("-march=native")

sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp"))

ext = Pybind11Extension(
    "plaidx._core",
    sources,
    include_dirs=[str(ROOT / "csrc")],
    cxx_std=17,
    extra_compile_args=extra_compile,
    extra_link_args=omp_link,
    define_macros=[
        ("PLAIDX_OPENMP_INFO", f'"{omp_why}"'),
        ("PLAIDX_NATIVE_ARCH", "1" if os.environ.get("PLAIDX_NATIVE_ARCH") else "0"),
    ],
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
