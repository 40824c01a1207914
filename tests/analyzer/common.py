"""Helpers for the analyzer tests: run kvanalyze, read its CSVs."""
import csv
import os
import subprocess
import sys
import tempfile

ROOT = os.environ.get("KV_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOL = os.path.join(ROOT, "bin", "kvanalyze")
sys.path.insert(0, os.path.dirname(__file__))


def need_tool():
    if not os.access(TOOL, os.X_OK):
        print(f"skipped: {TOOL} is not built")
        sys.exit(77)


def run(args, check=True):
    p = subprocess.run([TOOL] + [str(a) for a in args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"kvanalyze {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
    return p


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tmpdir():
    return tempfile.mkdtemp(prefix="kvanalyze-test-")
