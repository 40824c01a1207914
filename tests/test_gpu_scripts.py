"""The scripts a lent GPU machine runs (bench/gpu_bench.py,
tests/test_parity_cuda.py) rehearsed where there is no GPU, so that a
mistake in them is found here and not in a 15-minute device budget
(docs/gpu.md). Nothing here measures the GPU: these are checks of the
scripts' own logic.

- gpu_bench.py --peer-only cpu: its peer check (transformers' own random
  model of each architecture, float32 eager attention maps and last logits
  within 1e-4) passes against kvtrace --device cpu; the full script exits 77
  where torch sees no GPU.
- test_parity_cuda.py under a stand-in device: a kvtrace wrapper whose
  `devices` reports a GPU and whose `--device cuda` computes on the CPU, so
  every comparison must pass with zero difference, and the measured table
  is printed; a compute-sanitizer that cannot attach is reported as skipped,
  one that reports errors fails the script."""
import os
import re
import stat
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import ROOT, Checks, run, tool  # noqa: E402

c = Checks("gpu_scripts")
env = dict(os.environ, KVTRACE=tool("kvtrace"))

r = run([sys.executable, os.path.join(ROOT, "bench", "gpu_bench.py"), "--peer-only", "cpu",
         "--out", os.path.join(c.tmp.name, "peer")], env=env)
passes = re.findall(r"^peer check (\w+) vs transformers .*: PASS$", r.stdout, re.M)
c.check("gpu_bench.py --peer-only cpu: exits 0", r.returncode == 0, (r.stdout + r.stderr)[-1500:])
c.check("gpu_bench.py --peer-only cpu: Llama, Mistral, Qwen2 and Qwen3 within 1e-4 of transformers",
        passes == ["Llama", "Mistral", "Qwen2", "Qwen3"], r.stdout[-1500:])

r = run([sys.executable, os.path.join(ROOT, "bench", "gpu_bench.py"), "--out", os.path.join(c.tmp.name, "b")],
        env=env)
c.check("gpu_bench.py without a GPU: exit 77 and says why", r.returncode == 77 and "SKIPPED" in r.stdout,
        f"exit {r.returncode}: {(r.stdout + r.stderr)[-500:]}")


def script(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, stat.S_IRWXU)


stand_in = os.path.join(c.tmp.name, "stand-in")
os.makedirs(stand_in)
script(os.path.join(stand_in, "kvtrace"), f"""#!/bin/bash
if [ "$1" = devices ]; then echo "cpu: available"; echo "cuda: 1 GPU(s): a stand-in that computes on the CPU"; exit 0; fi
args=(); for a in "$@"; do [ "$a" = cuda ] && a=cpu; args+=("$a"); done
exec "{tool('kvtrace')}" "${{args[@]}}"
""")
parity = os.path.join(ROOT, "tests", "test_parity_cuda.py")
for sanitizer, want_rc, want in (
        ('echo "========= Error: this runtime is not supported" >&2; exit 1', 0, "skipped"),
        ('echo "========= Invalid __global__ write of size 4"; echo "========= ERROR SUMMARY: 2 errors"; exit 9',
         1, "failed")):
    script(os.path.join(stand_in, "compute-sanitizer"), "#!/bin/bash\n" + sanitizer + "\n")
    r = run([sys.executable, parity], env=dict(env, KVTRACE=os.path.join(stand_in, "kvtrace"),
                                               PATH=stand_in + os.pathsep + os.environ["PATH"]))
    counts = re.search(r"^parity_cuda: (\d+) passed, (\d+) failed(?:, (\d+) skipped)?$", r.stdout, re.M)
    table = re.findall(r"^  (F32|F16|BF16) +(\w+) +(\S+)$", r.stdout, re.M)
    if want == "skipped":
        c.check("test_parity_cuda.py on a stand-in GPU: every comparison passes, memcheck that cannot attach "
                "is skipped", r.returncode == 0 and counts is not None and int(counts.group(1)) > 100
                and counts.group(2) == "0" and counts.group(3) == "1", r.stdout[-1500:])
        c.check("test_parity_cuda.py prints the measured difference of each dtype and dataset, here 0",
                len(table) == 15 and all(float(v) == 0.0 for _, _, v in table), str(table))
    else:
        c.check("test_parity_cuda.py fails when memcheck reports errors",
                r.returncode == want_rc and counts is not None and counts.group(2) == "1"
                and "memcheck: 2 errors" in r.stdout, r.stdout[-1500:])
c.finish()
