"""Shared bits of the Python tests: paths, running the tools, a tiny
check collector that prints one line per check and a closing count."""
import os
import subprocess
import sys
import tempfile

ROOT = os.environ.get("KV_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "bin")


def tool(name):
    return os.path.join(BIN, name)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


class Checks:
    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0
        self.tmp = tempfile.TemporaryDirectory(prefix=name + "-")

    def check(self, label, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok   {label}")
        else:
            self.failed += 1
            print(f"  FAIL {label} {detail}")
        return ok

    def skip(self, label):
        """A part that cannot run here: counted as skipped, never as passed."""
        self.skipped = getattr(self, "skipped", 0) + 1
        print(f"  SKIP {label}")

    def finish(self):
        skipped = getattr(self, "skipped", 0)
        print(f"{self.name}: {self.passed} passed, {self.failed} failed" + (f", {skipped} skipped" if skipped else ""))
        self.tmp.cleanup()
        sys.exit(1 if self.failed or not self.passed else 0)
