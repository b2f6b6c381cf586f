"""Build script for plaidx's native core (plaidx._core).

C++17 via pybind11, OpenMP when the compiler supports it (detected, never assumed), no link
against libtorch, no -march=native or -ffast-math unless asked for:

  PLAIDX_NATIVE_ARCH=1   add -march=native (faster, not portable)
  PLAIDX_NO_OPENMP=1     build without OpenMP

The CUDA twins (plaidx._cuda) are built when nvcc is found (PLAIDX_NVCC, $CUDA_HOME/bin, $PATH or
/usr/local/cuda/bin). The module links the CUDA runtime statically, so it needs only the NVIDIA driver
at run time, and it imports (reporting "no device") on machines without one. A failed CUDA compile
never fails the install: plaidx then runs on the CPU and plaidx.build_info() says why.

  PLAIDX_NO_CUDA=1        skip the CUDA module
  PLAIDX_CUDA_ARCHS=...   compute capabilities, default "75;80;90" (PTX of the first for newer GPUs)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ROOT = Path(__file__).parent
# Compile the C++ sources in parallel (PLAIDX_BUILD_JOBS, default: every core).
ParallelCompile("PLAIDX_BUILD_JOBS", default=0).install()


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

core_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))

core = Pybind11Extension(
    "plaidx._core",
    ["csrc/bindings.cpp", *core_sources],
    depends=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.h")),
    include_dirs=[str(ROOT / "csrc")],
    cxx_std=17,
    extra_compile_args=extra_compile,
    extra_link_args=omp_link,
    define_macros=[
        ("PLAIDX_OPENMP_INFO", f'"{omp_why}"'),
        ("PLAIDX_NATIVE_ARCH", "1" if os.environ.get("PLAIDX_NATIVE_ARCH") else "0"),
    ],
)


def _find_nvcc():
    """(path to nvcc, None) or (None, why not)."""
    if os.environ.get("PLAIDX_NO_CUDA"):
        return None, "disabled by PLAIDX_NO_CUDA"
    candidates = [os.environ.get("PLAIDX_NVCC")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(str(Path(os.environ[var]) / "bin" / "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c, None
    return None, "nvcc not found at build time (set CUDA_HOME or PLAIDX_NVCC)"


def _cuda_root(nvcc):
    """The toolkit folder of nvcc (resolving wrapper scripts such as /usr/local/bin/nvcc)."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        if "TOP=" in line:
            return Path(line.split("TOP=", 1)[1].strip())
    return Path(nvcc).resolve().parent.parent


cuda = Pybind11Extension(
    "plaidx._cuda",
    # ivf.cpp (and the checks it uses): the GPU collection derives each document's distinct cells on the host
    ["csrc/cuda/bindings.cpp", "csrc/cpu/ivf.cpp", "csrc/cpu/validate.cpp"],
    # kernels.cu is compiled by BuildExt; listing it here relinks the module when it changes
    depends=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.suffix in (".h", ".cu")),
    include_dirs=[str(ROOT / "csrc")],
    cxx_std=17,
    extra_compile_args=["-O2"] if sys.platform != "win32" else ["/O2"],
)


class BuildExt(build_ext):
    """Compiles csrc/cuda/*.cu with nvcc for plaidx._cuda; without CUDA, builds that module from
    csrc/cuda/stub.cpp, which imports and reports why (plaidx.build_info()["cuda_reason"])."""

    def build_extension(self, ext):
        if ext.name != "plaidx._cuda":
            return super().build_extension(ext)
        nvcc, why = _find_nvcc()
        archs = os.environ.get("PLAIDX_CUDA_ARCHS", "75;80;90")
        if nvcc is not None:
            try:
                self._compile_cuda(ext, nvcc, archs)
                return super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001 - any CUDA failure falls back to the stub module
                why = f"the CUDA build failed: {str(exc)[-300:]}"
                ext.extra_objects, ext.extra_link_args = [], []
        self.warn(f"plaidx._cuda built without CUDA kernels: {why}")
        ext.sources = [*ext.sources, "csrc/cuda/stub.cpp"]
        reason = why.replace("\\", "/").replace('"', "'")
        ext.define_macros = [*ext.define_macros, ("PLAIDX_CUDA_STUB_REASON", json.dumps(reason))]
        return super().build_extension(ext)

    def _compile_cuda(self, ext, nvcc, archs):
        root = _cuda_root(nvcc)
        tmp = Path(self.build_temp) / "cuda"
        tmp.mkdir(parents=True, exist_ok=True)
        arch_list = [a.strip() for a in archs.replace(",", ";").split(";") if a.strip()]
        gencode = []
        for i, a in enumerate(arch_list):
            codes = f"[sm_{a},compute_{a}]" if i == 0 else f"sm_{a}"
            gencode += ["-gencode", f"arch=compute_{a},code={codes}"]
        objects = []
        newest_input = max(p.stat().st_mtime for p in (ROOT / "csrc").rglob("*") if p.suffix in (".h", ".cu"))
        for cu in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
            obj = tmp / (cu.stem + ".o")
            objects.append(str(obj))
            stamp = tmp / (cu.stem + ".archs")
            if obj.exists() and obj.stat().st_mtime > newest_input and stamp.exists() and stamp.read_text() == archs:
                continue  # up to date for these archs
            cmd = [nvcc, "-c", str(cu), "-o", str(obj), "-std=c++17", "-O3", "-Xcompiler", "-fPIC",
                   f"-I{ROOT / 'csrc'}", f'-DPLAIDX_CUDA_ARCHS="{";".join(arch_list)}"', *gencode]
            print(" ".join(cmd))
            if subprocess.run(cmd).returncode != 0:
                raise RuntimeError(f"{nvcc} failed on csrc/cuda/{cu.name} (archs {archs}); its messages are in "
                                   "the install log")
            stamp.write_text(archs)
        lib = next((d for d in (root / "lib64", root / "lib", root / "targets" / "x86_64-linux" / "lib")
                    if (d / "libcudart_static.a").exists()), None)
        if lib is None:
            raise FileNotFoundError(f"libcudart_static.a not found under {root}")
        ext.extra_objects = objects
        ext.extra_link_args = [str(lib / "libcudart_static.a"), "-ldl", "-lrt", "-lpthread"]


setup(ext_modules=[core, cuda], cmdclass={"build_ext": BuildExt})
