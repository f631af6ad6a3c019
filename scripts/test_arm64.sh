#!/bin/bash
# Run embq's whole test suite on AArch64 from an x86-64 Debian/Ubuntu machine, under qemu-user:
# an arm64 CPython (Debian's packages, unpacked, not installed), aarch64 wheels of the test
# dependencies from PyPI at the versions this machine has, and embq's extensions cross-compiled
# from the C that the host's Cython generates.  Runs twice: on an emulated CPU with the SDOT
# dot-product instructions (-cpu max) and on one without them (-cpu cortex-a53), so every
# AArch64 kernel variant and the run-time choice between them are exercised.
#
# Needs root (it adds the arm64 architecture to dpkg to download packages), network access to
# the Debian mirrors and PyPI, and: apt-get install gcc-aarch64-linux-gnu qemu-user-static
# Usage: scripts/test_arm64.sh [WORKDIR]   (default: arm64-emu/ in the checkout, ignored by git)
# Works without binfmt_misc: children started with sys.executable go through a small wrapper.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mkdir -p "${1:-$root/arm64-emu}" && cd "${1:-$root/arm64-emu}" && pwd)
sysroot=$work/sysroot site=$work/site src=$work/src
qemu=${QEMU_AARCH64:-qemu-aarch64-static} cc=${CC_AARCH64:-aarch64-linux-gnu-gcc}
for tool in "$qemu" "$cc" apt-get dpkg git python3; do
    command -v "$tool" >/dev/null || { echo "test_arm64.sh: $tool not found" >&2; exit 2; }
done

if [ ! -x "$sysroot/usr/bin/python3.11" ]; then
    echo "== arm64 CPython 3.11 from Debian's packages -> $sysroot"
    dpkg --add-architecture arm64
    apt-get update -qq
    mkdir -p "$work/debs" "$sysroot"
    pkgs="python3.11:arm64 libpython3.11-dev:arm64 libgomp1:arm64 libgfortran5:arm64 libstdc++6:arm64"
    (cd "$work/debs" &&
     apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
         --no-replaces --no-enhances $pkgs | grep -v '^[ <]' | grep ':arm64$' \
         | grep -vE '^(dpkg|tar|install-info|debconf.*|perl.*):' | sort -u > wanted.txt &&
     echo "media-types readline-common libtirpc-common" | tr ' ' '\n' >> wanted.txt &&
     apt-get download -qq $(cat wanted.txt))
    for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$sysroot"; done
fi

if [ ! -d "$site/numpy" ]; then
    echo "== aarch64 wheels of the test dependencies -> $site"
    pins=$(python3 - <<'PY'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in
               ("numpy", "scipy", "h5py", "tqdm", "pytest", "hypothesis", "gensim")))
PY
)
    python3 -m pip install -q --target "$site" --only-binary=:all: --python-version 3.11 \
        --implementation cp --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux_2_28_aarch64 $pins
fi

echo "== embq at $(git -C "$root" rev-parse --short HEAD), cross-compiled -> $src"
rm -rf "$src"
git clone -q "$root" "$src"
# The host build generates the C (portable Cython output, setup.py's directives) ...
(cd "$src" && python3 setup.py -q build_ext --inplace >/dev/null)
# ... which is compiled again for AArch64 against the aarch64 numpy's headers.
for c in "$src"/embq/_kernels*.c; do
    name=$(basename "$c" .c)
    "$cc" -shared -fPIC -O3 -fno-math-errno -fwrapv -DNDEBUG -Wall -Wno-unused-function \
        -fopenmp -DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION \
        -I"$sysroot/usr/include/python3.11" -I"$sysroot/usr/include" \
        -I"$site/numpy/_core/include" -I"$src/embq" \
        "$c" -o "$src/embq/$name.cpython-311-aarch64-linux-gnu.so"
done

# Without binfmt_misc an emulated process cannot exec an arm64 binary: point sys.executable at
# a host script that starts the interpreter under qemu again.
mkdir -p "$work/shim"
cat > "$work/shim/python-arm64" <<SH
#!/bin/sh
exec $qemu -cpu "\${EMBQ_EMU_CPU:-max}" -L "$sysroot" "$sysroot/usr/bin/python3.11" "\$@"
SH
chmod +x "$work/shim/python-arm64"
printf 'import sys\nsys.executable = %s\n' "'$work/shim/python-arm64'" > "$work/shim/emu_exec.py"

status=0
for cpu in max cortex-a53; do
    echo "== emulated AArch64 CPU: $cpu"
    (cd "$src" &&
     EMBQ_EMU_CPU=$cpu PYTHONPATH="$src:$site:$work/shim" HOME=/tmp "$work/shim/python-arm64" \
         -c "import embq; embq.show_config()" &&
     EMBQ_EMU_CPU=$cpu PYTHONPATH="$src:$site:$work/shim" HOME=/tmp "$work/shim/python-arm64" \
         -m pytest -q -p no:cacheprovider -p emu_exec \
         --deselect tests/test_c_kernels.py::test_simd_variants_match_portable_kernels) || status=1
done
# The C harness of tests/test_c_kernels.py, built for AArch64 and run under qemu:
"$root/scripts/check_arm64.sh" || status=1
exit $status
