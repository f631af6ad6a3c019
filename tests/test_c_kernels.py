"""The C kernel headers checked without Python: tests/c/check_kernels.c, built and run here.

The program compares every SIMD variant this CPU can run (quantize, search dot and search
select: AVX2, AVX-VNNI, AVX-512 on x86-64; NEON and SDOT on AArch64) with the portable kernels,
bit for bit, on rows that end right before an inaccessible page, and the portable dequantize
kernel with its one definition.  scripts/check_arm64.sh runs the same program for AArch64
under qemu-user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "c", "check_kernels.c")


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc") or shutil.which("gcc")


@pytest.mark.skipif(os.name != "posix", reason="the harness uses mmap guard pages (POSIX)")
def test_simd_variants_match_portable_kernels(tmp_path):
    cc = _compiler()
    if cc is None:  # the package itself could not have been built either
        pytest.skip("no C compiler")
    exe = tmp_path / "check_kernels"
    build = subprocess.run([cc, "-O2", "-Wall", "-Wno-unused-function", "-o", str(exe),
                            SOURCE, "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.rstrip().splitlines()[-1].startswith("ok: ")
