"""Build the embq Cython extensions.

Every ``embq/_kernels*.pyx`` becomes an extension module.  Flags:

* ``-O3`` always (``/O2`` on MSVC);
* OpenMP when a test program compiles and links with it, otherwise a loud warning and a
  single-threaded build that still works;
* no ``-march=native``: SIMD variants are compiled per function with
  ``__attribute__((target(...)))`` and picked at run time by a CPU check, so one wheel is correct
  on every machine of its architecture.

Set ``EMBQ_BUILD_ONLY=name1,name2`` to build only some modules (a development convenience), and
``EMBQ_DISABLE_OPENMP=1`` to force the single-threaded build.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

_OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _compiler_is_msvc(compiler) -> bool:
    return getattr(compiler, "compiler_type", "") == "msvc"


def _openmp_flags(compiler) -> tuple[list[str], list[str]]:
    """Return (compile, link) flags that enable OpenMP, or empty lists when it does not work."""
    if os.environ.get("EMBQ_DISABLE_OPENMP"):
        return [], []
    if _compiler_is_msvc(compiler):
        return ["/openmp"], []
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    tmp = tempfile.mkdtemp(prefix="embq-omp-")
    try:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as fh:
            fh.write(_OPENMP_TEST)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "omp_test", output_dir=tmp, extra_postargs=lflags)
            except Exception:
                continue
            exe = os.path.join(tmp, "omp_test")
            try:
                if subprocess.run([exe], check=False).returncode == 0:
                    return cflags, lflags
            except OSError:
                # Cross-compiling: it linked, trust it.
                return cflags, lflags
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [], []


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        compiler = self.compiler
        omp_c, omp_l = _openmp_flags(compiler)
        if not omp_c:
            msg = (
                "\n" + "*" * 78 + "\n"
                "embq: the C compiler does not support OpenMP; building single-threaded kernels.\n"
                "They are correct but use one core. Install a compiler with OpenMP (gcc, or\n"
                "clang with libomp) and reinstall for multi-core quantization and search.\n"
                + "*" * 78
            )
            warnings.warn(msg, stacklevel=1)
            print(msg, file=sys.stderr)
        if _compiler_is_msvc(compiler):
            base_c = ["/O2"]
        else:
            base_c = ["-O3", "-fno-math-errno", "-Wno-unused-function", "-Wno-unreachable-code"]
        for ext in self.extensions:
            ext.extra_compile_args = base_c + omp_c + list(ext.extra_compile_args or [])
            ext.extra_link_args = omp_l + list(ext.extra_link_args or [])
        super().build_extensions()


def _extensions() -> list[Extension]:
    only = {s.strip() for s in os.environ.get("EMBQ_BUILD_ONLY", "").split(",") if s.strip()}
    exts = []
    for pyx in sorted(glob.glob(os.path.join("embq", "_kernels*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        if only and name not in only:
            continue
        exts.append(
            Extension(
                f"embq.{name}",
                [pyx],
                include_dirs=[np.get_include(), "embq"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
