#!/usr/bin/env bash
# cuBLAS for building the CUDA plugin on a machine whose CUDA toolkit has
# nvcc and cudart but no cuBLAS (this project's development machines): the
# headers and shared libraries of NVIDIA's PyPI wheel nvidia-cublas, pinned,
# unpacked into .cache/cublas/{include,lib}, where the Makefile finds them
# (CUBLAS_DIR). CUDA 13's cuBLAS, the major version of the toolkit here and of
# the lent GPU machines (PyTorch 2.11+cu130); the plugin records only the
# soname libcublas.so.13, so at run time the GPU machine's own cuBLAS 13 is
# used. A later run reuses what is there.
#
#   bash tools/cublas-wheel.sh          (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=13.1.1.3
SHA256=37936a16db8fe4ac1f065c2139360608a543a09275cb1a1af612e08cfa065436  # PyPI's manylinux_2_27_x86_64 wheel
DEST=.cache/cublas
PY="${PY:-$PWD/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ -f "$DEST/STAMP" ] && [ "$(cat "$DEST/STAMP")" = "$VERSION" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "nvidia-cublas==$VERSION" >"$tmp/log" 2>&1; then
    echo "cublas-wheel: cannot download nvidia-cublas $VERSION: $(tail -n 1 "$tmp/log")" >&2
    exit 1
fi
whl=$(ls "$tmp"/nvidia_cublas-*.whl)
if ! echo "$SHA256  $whl" | sha256sum -c --quiet 2>/dev/null; then
    echo "cublas-wheel: $(basename "$whl"): sha256 is not the pinned $SHA256" >&2
    exit 1
fi
"$PY" - "$whl" "$tmp/x" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("nvidia/cu13/include/") or n.startswith("nvidia/cu13/lib/libcublas"):
            z.extract(n, sys.argv[2])
PYEOF
src="$tmp/x/nvidia/cu13"
[ -f "$src/include/cublas_v2.h" ] && [ -f "$src/lib/libcublas.so.13" ] || {
    echo "cublas-wheel: $whl holds no nvidia/cu13 headers and libcublas.so.13" >&2
    exit 1
}
ln -s libcublas.so.13 "$src/lib/libcublas.so"
rm -rf "$DEST.new" && mkdir -p "$(dirname "$DEST")" && mv "$src" "$DEST.new"
echo "$VERSION" >"$DEST.new/STAMP"
rm -rf "$DEST" && mv "$DEST.new" "$DEST"
echo "cublas-wheel: nvidia-cublas $VERSION in $DEST"
