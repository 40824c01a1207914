"""kvplot end to end on a small structured fixture (tests/plots/mkfixture.py
traced into kvanalyze results): every figure in every format with the
expected pixel / page size, the multi-page figures.pdf, the data behind the
figures checked against the results files, scripts that re-make their
figure, token pieces escaped, skips for missing inputs, and errors that
leave no partial figure behind."""
import csv
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

ROOT = os.environ.get("KV_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KVPLOT = os.path.join(ROOT, "bin", "kvplot")
KVANALYZE = os.path.join(ROOT, "bin", "kvanalyze")
PY = sys.executable
FIGS = ["policy_by_layer", "head_maps", "memory_vs_threshold", "loss_vs_budget",
        "loss_ratio_per_prompt", "budget_heatmap", "concentration"]

for tool in (KVPLOT, KVANALYZE):
    if not os.access(tool, os.X_OK):
        print(f"skipped: {tool} is not built")
        print("plot: 0 passed, 0 failed, 1 skipped")
        sys.exit(77)
if not shutil.which("gnuplot"):
    print("skipped: gnuplot is not installed (apt-get install gnuplot-nox)")
    print("plot: 0 passed, 0 failed, 1 skipped")
    sys.exit(77)

failures = []
n_checks = 0


def check(cond, what):
    global n_checks
    n_checks += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def crashed(*exc):
    """An exception ends the test: one more failed check, the closing line after the traceback."""
    sys.__excepthook__(*exc)
    print(f"plot: {n_checks - len(failures)} passed, {len(failures) + 1} failed")


sys.excepthook = crashed


def run(args, env=None, cwd=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd)


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def pdf_pages(path):
    """(page count, [MediaBox of each page]) of a PDF as cairo writes it."""
    data = open(path, "rb").read()
    if not data.startswith(b"%PDF-"):
        return None, []
    # cairo 1.18 (Debian 13) keeps page objects in compressed object streams: inflate those too
    for m in re.finditer(rb"stream\r?\n", data):
        try:
            data += zlib.decompressobj().decompress(data[m.end():])
        except zlib.error:
            pass
    pages = len(re.findall(rb"/Type\s*/Page(?![s\w])", data))
    boxes = [tuple(float(x) for x in m.groups())
             for m in re.finditer(rb"/MediaBox\s*\[\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*\]", data)]
    return pages, boxes


def script_height(path):
    m = re.search(r"^height_in\s*=\s*([\d.]+)", open(path, encoding="utf-8").read(), re.M)
    return float(m.group(1))


def read_dat(path, index=None):
    """Rows of numbers (comments skipped); with index, only that gnuplot block."""
    blocks, cur, blank = [[]], None, 0
    for line in open(path, encoding="utf-8"):
        s = line.strip()
        if s.startswith("#"):
            continue
        if not s:
            blank += 1
            if blank == 2:
                blocks.append([])
            continue
        blank = 0
        blocks[-1].append(s.split())
    blocks = [b for b in blocks if b]
    return blocks if index is None else blocks[index]


work = tempfile.mkdtemp(prefix="kvplot-test-")
try:
    trace = os.path.join(work, "fx.h5")
    res = os.path.join(work, "results")
    p = run([PY, os.path.join(ROOT, "tests", "plots", "mkfixture.py"), trace])
    assert p.returncode == 0, p.stderr
    p = run([KVANALYZE, trace, "-o", res, "--threshold", "0.9,0.95,0.98", "--budgets", "12,16,24,48",
             "--obs-window", "8", "--threads", "1"])
    assert p.returncode == 0, p.stderr

    # ---- every figure, every format ----
    fig = os.path.join(work, "fig")
    p = run([KVPLOT, res, "--trace", trace, "-o", fig, "--format", "png,pdf,svg"])
    check(p.returncode == 0, f"kvplot run: exit {p.returncode}: {p.stderr}")
    check("gnuplot says" not in p.stderr, f"gnuplot printed warnings: {p.stderr}")
    for name in FIGS:
        for ext in ("png", "pdf", "svg", "gp", "dat"):
            check(os.path.isfile(os.path.join(fig, f"{name}.{ext}")), f"{name}.{ext} written")
        if not os.path.isfile(os.path.join(fig, f"{name}.gp")):
            continue
        h = script_height(os.path.join(fig, f"{name}.gp"))
        size = png_size(os.path.join(fig, f"{name}.png"))
        check(size == (round(3.3 * 200), round(h * 200)), f"{name}.png: size {size}, want 660 x {round(h * 200)}")
        pages, boxes = pdf_pages(os.path.join(fig, f"{name}.pdf"))
        check(pages == 1, f"{name}.pdf: {pages} pages, want 1")
        check(bool(boxes) and abs(boxes[0][2] - 3.3 * 72) < 1 and abs(boxes[0][3] - h * 72) < 1,
              f"{name}.pdf: MediaBox {boxes[:1]}, want {3.3 * 72} x {h * 72}")
        svg = open(os.path.join(fig, f"{name}.svg"), encoding="utf-8").read()
        check("<svg" in svg and svg.rstrip().endswith("</svg>"), f"{name}.svg: a complete SVG document")
        m = re.search(r'<svg[^>]*width="(\d+)"', svg)
        check(m is not None and int(m.group(1)) == round(3.3 * 72), f"{name}.svg: width")
        # PDF figures carry no title (captions belong to the paper), PNG ones do
        gp = open(os.path.join(fig, f"{name}.gp"), encoding="utf-8").read()
        check('kv_title = (kv_fmt eq "png" || kv_fmt eq "page") ? title : ""' in gp, f"{name}.gp: title rule")
    pages, boxes = pdf_pages(os.path.join(fig, "figures.pdf"))
    check(pages == len(FIGS), f"figures.pdf: {pages} pages, want {len(FIGS)}")
    check(os.path.isfile(os.path.join(fig, "figures.gp")), "figures.gp written")
    check(not [f for f in os.listdir(fig) if f.startswith(".")], "no work directory left behind")

    # ---- the data behind the figures, against the results ----
    pol = json.load(open(os.path.join(res, "policies.json")))
    names = ["special", "special+punct", "special+punct+frequent", "special+punct+frequent+local", "full"]
    t95 = [t for t in pol["policies"] if abs(t["threshold"] - 0.95) < 1e-9][0]
    rows = read_dat(os.path.join(fig, "policy_by_layer.dat"), 0)
    for r, layer in zip(rows, t95["layers"]):
        kv = layer["kv_heads"]
        want = [sum(h["policy"] == n for h in kv) / len(kv) for n in names]
        check(int(r[0]) == layer["layer"] and np.allclose([float(x) for x in r[1:6]], want, atol=1e-6),
              f"policy_by_layer.dat layer {layer['layer']}: {r[1:6]} vs {want}")
    check(len(rows) == len(t95["layers"]), "policy_by_layer.dat: one row per layer")

    rows = read_dat(os.path.join(fig, "memory_vs_threshold.dat"), 0)
    check([float(r[0]) for r in rows] == [0.9, 0.95, 0.98], "memory_vs_threshold.dat: thresholds in order")
    for r, t in zip(rows, pol["policies"]):
        check(abs(float(r[1]) - t["memory"]["kept_fraction"]) < 1e-6, f"memory kept at T={t['threshold']}")

    loss = list(csv.DictReader(open(os.path.join(res, "eviction_loss.csv"))))
    rows = read_dat(os.path.join(fig, "loss_vs_budget.dat"), 0)
    for r in rows:
        B = int(r[0])
        for k, alloc in ((1, "uniform"), (5, "adaptive")):
            xs = [float(x["actual_l1"]) for x in loss
                  if int(x["budget"]) == B and x["allocation"] == alloc and float(x["kept_mass"]) < 1]
            bs = [float(x["bound"]) for x in loss
                  if int(x["budget"]) == B and x["allocation"] == alloc and float(x["kept_mass"]) < 1]
            if xs:
                check(abs(float(r[k]) - np.mean(xs)) <= 1e-5 * np.mean(xs), f"loss mean B={B} {alloc}")
                check(abs(float(r[k + 1]) - np.percentile(xs, 25)) <= 1e-5 * np.mean(xs), f"loss q25 B={B} {alloc}")
                check(abs(float(r[k + 3]) - np.mean(bs)) <= 1e-5 * np.mean(bs), f"bound mean B={B} {alloc}")
            else:
                check(r[k] == "NaN", f"loss B={B} {alloc}: NaN where nothing is evicted")

    rows = read_dat(os.path.join(fig, "loss_ratio_per_prompt.dat"), 0)
    for r in rows:
        for k, B in ((2, 12), (3, 16)):
            u = np.mean([float(x["actual_l1"]) for x in loss if x["prompt"] == r[1] and int(x["budget"]) == B
                         and x["allocation"] == "uniform"])
            a = np.mean([float(x["actual_l1"]) for x in loss if x["prompt"] == r[1] and int(x["budget"]) == B
                         and x["allocation"] == "adaptive"])
            check(abs(float(r[k]) - a / u) < 1e-5 * a / u, f"loss ratio {r[1]} B={B}")

    bud = json.load(open(os.path.join(res, "budgets.json")))
    b12 = [b for b in bud["budgets"] if b["budget"] == 12][0]
    rows = read_dat(os.path.join(fig, "budget_heatmap.dat"), 0)
    want = [(g, li, l["layer"], kb, l["layer_budget"]) for li, l in enumerate(b12["layers"])
            for g, kb in enumerate(l["kv_budgets"])]
    check([tuple(int(x) for x in r[:5]) for r in rows] == want, "budget_heatmap.dat cells = budgets.json at B=12")

    conc = list(csv.DictReader(open(os.path.join(res, "concentration.csv"))))
    blk = read_dat(os.path.join(fig, "concentration.dat"), 0)      # layer 0
    for r in blk[:60]:
        x, m, h = int(r[0]), float(r[1]), int(r[2])
        want = np.mean([float(c["mass"]) for c in conc
                        if int(c["layer"]) == 0 and int(c["head"]) == h and int(c["percent"]) == x])
        check(abs(m - want) < 1e-5, f"concentration layer 0 head {h} x={x}: {m} vs {want}")

    # head_maps: one panel per policy that occurs, the most typical head
    fh = [r for r in csv.DictReader(open(os.path.join(res, "fastgen_heads.csv")))
          if r["prompt"] == "short_1" and r["head_kind"] == "query" and abs(float(r["threshold"]) - 0.95) < 1e-9]
    rec = ["rec_special", "rec_punct", "rec_frequent", "rec_local", "rec_full"]
    best = {}
    for r in fh:
        k = names.index(r["policy"])
        m = float(r[rec[k]]) - 0.95
        if k > 0:
            m = min(m, 0.95 - float(r[rec[k - 1]]))
        if k not in best or m > best[k][0]:
            best[k] = (m, int(r["layer"]), int(r["head"]))
    gp = open(os.path.join(fig, "head_maps.gp"), encoding="utf-8").read()
    want_panels = " ".join(str(k) for k in sorted(best))
    check(f"panels = '{want_panels}'" in gp, f"head_maps panels {want_panels}")
    check("panel_heads = '" + " ".join(str(best[k][2]) for k in sorted(best)) + "'" in gp, "head_maps heads")
    import h5py
    with h5py.File(trace, "r") as f:
        k0 = sorted(best)[0]
        A = f["prompts/short_1/attn"][best[k0][1], best[k0][2]]
    blk = read_dat(os.path.join(fig, "head_maps.dat"), 0)
    got = np.array([[float(x) for x in r] for r in blk])
    N = A.shape[0]
    check(got.shape == (N * N, 3), f"head_maps.dat: {N}x{N} cells unpooled")
    i, j = got[:, 1].astype(int), got[:, 0].astype(int)
    want = np.where(j <= i, A[i, j], -1)
    check(np.allclose(got[:, 2], want, atol=1e-6, rtol=1e-5), "head_maps.dat = the trace's map, -1 above the diagonal")
    # token pieces escaped: every piece in the array, as itself
    m = re.search(r"^array tokens\[(\d+)\] = \[(.*)\]", gp, re.M)
    check(m is not None and int(m.group(1)) == N, "head_maps.gp: token array")
    if m:
        got_pieces = run(["gnuplot", "-e", f"array tokens[{N}] = [{m.group(2)}]; "
                          f"do for [t=1:{N}] {{ print tokens[t] }}"]).stderr.split("\n")[:N]
        with h5py.File(trace, "r") as f:
            pieces = [p.decode() for p in f["prompts/short_1/pieces"][:]]
        check(got_pieces == [p.replace("\n", "\\n") for p in pieces], f"pieces as themselves: {got_pieces}")

    # ---- a written script re-makes its figure from any directory ----
    os.remove(os.path.join(fig, "loss_vs_budget.png"))
    p = run(["gnuplot", os.path.join(fig, "loss_vs_budget.gp")], cwd=work)
    check(p.returncode == 0 and png_size(os.path.join(fig, "loss_vs_budget.png")) is not None,
          f"gnuplot loss_vs_budget.gp re-makes the PNG: {p.stderr}")
    os.remove(os.path.join(fig, "figures.pdf"))
    p = run(["gnuplot", "figures.gp"], cwd=fig)
    check(p.returncode == 0 and pdf_pages(os.path.join(fig, "figures.pdf"))[0] == len(FIGS),
          f"gnuplot figures.gp re-makes figures.pdf: {p.stderr}")

    # ---- existing files are kept without --force ----
    before = os.path.getmtime(os.path.join(fig, "policy_by_layer.png"))
    p = run([KVPLOT, res, "--trace", trace, "-o", fig])
    check(p.returncode != 0 and "exists" in p.stderr and "--force" in p.stderr,
          f"existing figures refused without --force: {p.returncode} {p.stderr}")
    check(os.path.getmtime(os.path.join(fig, "policy_by_layer.png")) == before, "existing figure untouched")
    p = run([KVPLOT, res, "--trace", trace, "-o", fig, "--force", "--only", "policy_by_layer"])
    check(p.returncode == 0, f"--force replaces: {p.stderr}")

    # ---- options: width, dpi, threshold, budget, pooling ----
    fig2 = os.path.join(work, "fig2")
    p = run([KVPLOT, res, "--trace", trace, "-o", fig2, "--format", "png", "--width-in", "7", "--dpi", "100",
             "--threshold", "0.9", "--budget", "16", "--prompt", "long-2", "--max-cells", "16"])
    check(p.returncode == 0, f"options run: {p.stderr}")
    if p.returncode == 0:
        check(png_size(os.path.join(fig2, "policy_by_layer.png"))[0] == 700, "--width-in 7 --dpi 100: 700 px wide")
        check(not os.path.exists(os.path.join(fig2, "policy_by_layer.pdf")), "--format png: no PDF")
        check("threshold = 0.9" in open(os.path.join(fig2, "policy_by_layer.gp")).read(), "--threshold 0.9")
        check("budget = 16" in open(os.path.join(fig2, "budget_heatmap.gp")).read(), "--budget 16")
        blk = read_dat(os.path.join(fig2, "head_maps.dat"), 0)
        check(len(blk) == 16 * 16, f"--max-cells 16: 200 tokens pooled into 16 x 16 cells of 13 ({len(blk)})")
        check("labels = 0" in open(os.path.join(fig2, "head_maps.gp")).read(), "no token labels for 200 tokens")
        with h5py.File(trace, "r") as f:
            hm = open(os.path.join(fig2, "head_maps.gp")).read()
            k_layer = int(re.search(r"panel_layers = '(\d+)", hm).group(1))
            k_head = int(re.search(r"panel_heads = '(\d+)", hm).group(1))
            A = f["prompts/long-2/attn"][k_layer, k_head].astype(np.float64)
        cell = blk[5 * 16 + 2]          # block row 5, block column 2: rows 65..77, columns 26..38
        ii, jj = np.meshgrid(np.arange(65, 78), np.arange(26, 39), indexing="ij")
        check(abs(float(cell[2]) - A[ii, jj][jj <= ii].mean()) < 1e-5, "pooled cell = mean of its causal entries")
        check(float(blk[2 * 16 + 5][2]) == -1, "pooled cell above the diagonal is -1")

    # ---- missing inputs skip one figure, not the run ----
    part = os.path.join(work, "partial")
    shutil.copytree(res, part)
    os.remove(os.path.join(part, "budgets.json"))
    fig3 = os.path.join(work, "fig3")
    p = run([KVPLOT, part, "-o", fig3])
    check(p.returncode == 0, f"partial results: {p.stderr}")
    check("skipping budget_heatmap" in p.stderr and "budgets.json" in p.stderr, "budget_heatmap skipped with a reason")
    check("skipping head_maps" in p.stderr and "--trace" in p.stderr, "head_maps skipped without --trace")
    check(not os.path.exists(os.path.join(fig3, "budget_heatmap.png")), "no budget_heatmap")
    check(pdf_pages(os.path.join(fig3, "figures.pdf"))[0] == len(FIGS) - 2, "figures.pdf has the figures made")
    nomaps = os.path.join(work, "nomaps.h5")
    with h5py.File(trace, "r") as src, h5py.File(nomaps, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        dst.attrs["full_maps"] = np.int32(0)
        src.copy("model", dst)
        for pid in src["prompts"]:
            g = dst.create_group(f"prompts/{pid}")
            for k, v in src[f"prompts/{pid}"].attrs.items():
                g.attrs[k] = v
            for k in src[f"prompts/{pid}"]:
                if k != "attn":
                    src.copy(f"prompts/{pid}/{k}", g)
    p = run([KVPLOT, res, "--trace", nomaps, "-o", os.path.join(work, "fig4"), "--only", "head_maps,policy_by_layer"])
    check(p.returncode == 0 and "skipping head_maps" in p.stderr and "full-maps" in p.stderr,
          f"trace without attn: head_maps skipped: {p.stderr}")

    # ---- errors: one line, non-zero, nothing left behind ----
    def expect_error(args, needle, env=None, figdir=None):
        p = run([KVPLOT] + args, env=env)
        lines = p.stderr.strip().split("\n")
        check(p.returncode != 0, f"{args}: non-zero exit")
        check(lines[-1].startswith("kvplot: ") and needle in lines[-1], f"{args}: message {p.stderr!r} has {needle!r}")
        if figdir:
            left = os.listdir(figdir) if os.path.isdir(figdir) else []
            check(left == [], f"{args}: nothing left in {figdir}: {left}")

    expect_error([os.path.join(work, "nope"), "-o", os.path.join(work, "e1")], "nope: not a directory")
    expect_error([res], "-o FIGDIR")
    expect_error([res, "-o", os.path.join(work, "e2"), "--format", "gif"], "--format 'gif'")
    expect_error([res, "-o", os.path.join(work, "e3"), "--threshold", "0.5"], "no threshold 0.5",
                 figdir=os.path.join(work, "e3"))
    expect_error([res, "-o", os.path.join(work, "e4"), "--budget", "7"], "budget 7", figdir=os.path.join(work, "e4"))
    bad = os.path.join(work, "bad")
    shutil.copytree(res, bad)
    with open(os.path.join(bad, "eviction_loss.csv"), "w") as f:
        f.write("prompt,layer,budget\nshort_1,0,12\n")
    expect_error([bad, "-o", os.path.join(work, "e5")], "eviction_loss.csv: no column", figdir=os.path.join(work, "e5"))
    with open(os.path.join(bad, "eviction_loss.csv"), "w") as f:
        f.write(open(os.path.join(res, "eviction_loss.csv")).read().replace("adaptive", "adaptive,extra", 1))
    expect_error([bad, "-o", os.path.join(work, "e6")], "fields", figdir=os.path.join(work, "e6"))
    env = dict(os.environ, PATH="/nonexistent")
    expect_error([res, "-o", os.path.join(work, "e7")], "gnuplot not found on PATH", env=env,
                 figdir=os.path.join(work, "e7"))
    # a gnuplot without the cairo terminals: a clear message before anything is drawn
    fake = os.path.join(work, "fakebin")
    os.mkdir(fake)
    with open(os.path.join(fake, "gnuplot"), "w") as f:
        f.write("#!/bin/sh\nif grep -q GPVAL_TERMINALS \"$1\"; then echo 'dumb png svg' >&2; exit 0; fi\n"
                f"exec {shutil.which('gnuplot')} \"$@\"\n")
    os.chmod(os.path.join(fake, "gnuplot"), 0o755)
    env = dict(os.environ, PATH=fake + os.pathsep + os.environ["PATH"])
    expect_error([res, "-o", os.path.join(work, "e9")], "no 'pdfcairo' terminal", env=env,
                 figdir=os.path.join(work, "e9"))
    # a gnuplot failure: a template with an error -> gnuplot's message, no partial figure
    tpl = os.path.join(work, "tpl")
    shutil.copytree(os.path.join(ROOT, "plots"), tpl, ignore=shutil.ignore_patterns("*.c", "*.h"))
    with open(os.path.join(tpl, "concentration.gp"), "a") as f:
        f.write("\nplot no_such_function(x)\n")
    expect_error([res, "-o", os.path.join(work, "e8"), "--templates", tpl], "gnuplot failed",
                 figdir=os.path.join(work, "e8"))
    p = run([KVPLOT, "--version"])
    check(p.returncode == 0 and p.stdout.startswith("kvplot "), "--version")
    p = run([KVPLOT, "--help"])
    check(p.returncode == 0 and "usage: kvplot" in p.stdout, "--help")
finally:
    shutil.rmtree(work, ignore_errors=True)

print(f"plot: {n_checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
