#!/usr/bin/env bash
# The trace's write cost against h5py's at Llama-3.2-1B's capture shape (bench/trace_io_bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python bench/trace_io_bench.py "$@"
