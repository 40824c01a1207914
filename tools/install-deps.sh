#!/usr/bin/env bash
# Install the Debian packages this project builds, tests and plots with.
# As root it runs apt-get; otherwise it prints the command to run.
set -euo pipefail
PACKAGES=(
  build-essential pkg-config time
  libhdf5-dev hdf5-tools libdeflate-dev   # trace files (libdeflate: kvanalyze inflates map chunks itself)
  libopenblas-openmp-dev          # CPU matmul (cblas), OpenMP build
  libcjson-dev                    # config.json, tokenizer.json, safetensors headers, outputs
  libpcre2-dev libutf8proc-dev    # tokenizer: split regexes, NFC, Unicode categories
  check libsubunit-dev            # C unit tests
  clang libclang-rt-14-dev        # libFuzzer harnesses (make fuzz; their regressions run in make check)
  python3 python3-numpy python3-h5py   # independent reference implementations in tests/
  gnuplot-nox                     # kvplot
)
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root:  apt-get update && apt-get install -y ${PACKAGES[*]} nodejs npm"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
# Node.js and npm fetch the reference tokenizers for the golden tests; the
# machine image may already carry them (from another source), so only add
# Debian's when they are missing.
if ! command -v npm >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends nodejs npm
fi
