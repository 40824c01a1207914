"""Independent numpy implementation of kvanalyze's definitions
(docs/analyzer.md), written straight from the documentation. Used by
tests/test_analyze_numpy.py (cross-check) and bench/analyze_bench.sh.

    rows = analyze(path, thresholds=[0.95], budgets=[64, 128], ...)
    rows["fastgen"]  list of dicts keyed like fastgen_heads.csv
    rows["loss"]     list of dicts keyed like eviction_loss.csv
"""
import math

import h5py
import numpy as np


def ceil_frac(r, N):
    return int(min(N, max(0, math.ceil(r * N - 1e-9))))


def combine(x, gqa_max):
    """x [G, ...] float32 -> the group's combined array, float32 like the tool."""
    if gqa_max:
        return x.max(axis=0)
    c = x[0].copy()
    for q in range(1, x.shape[0]):
        c += x[q]
    return c * np.float32(1.0 / x.shape[0])


def components(flags, colsum, r_f):
    """FastGen's fixed column sets: special, punct, frequent, other (boolean [N] each)."""
    N = len(flags)
    S = (flags & 1) != 0
    Pm = ((flags & 2) != 0) & ~S
    cand = np.flatnonzero(~S & ~Pm)
    kf = min(ceil_frac(r_f, N), len(cand))
    order = cand[np.lexsort((cand, -colsum[cand]))]
    F = np.zeros(N, dtype=bool)
    F[order[:kf]] = True
    return S, Pm, F, ~S & ~Pm & ~F


def kept_fractions(S, Pm, F, other, r_l):
    N = len(S)
    nl = ceil_frac(r_l, N)
    j = np.arange(N)
    last_local = int((other & (j > N - 1 - nl)).sum())
    nS, nP, kf = int(S.sum()), int(Pm.sum()), int(F.sum())
    return [nS / N, (nS + nP) / N, (nS + nP + kf) / N, (nS + nP + kf + last_local) / N, 1.0]


def fastgen_sums(colsum, nearsum, flags, r_l, r_f):
    """All N rows from the column sums (docs/analyzer.md, "All rows without
    full maps"): colsum, nearsum [N] -> (recovery[5], kept[5])."""
    N = len(flags)
    S, Pm, F, other = components(flags, colsum, r_f)
    cs, ns = colsum.astype(np.float64), nearsum.astype(np.float64)
    m0 = cs[S].sum()
    m1 = m0 + cs[Pm].sum()
    m2 = m1 + cs[F].sum()
    m3 = m2 + ns[other].sum()
    return [m0 / N, m1 / N, m2 / N, m3 / N, 1.0], kept_fractions(S, Pm, F, other, r_l)


def fastgen(A, row0, flags, colsum, r_l, r_f, skip=0):
    """A [rows, N] rows of query positions row0.. -> (recovery[5], kept[5])."""
    nrows, N = A.shape
    S, Pm, F, other = components(flags, colsum, r_f)
    nl = ceil_frac(r_l, N)
    i = row0 + np.arange(nrows)
    j = np.arange(N)
    causal = j[None, :] <= i[:, None]
    local = causal & (i[:, None] - j[None, :] < nl)
    A64 = np.where(causal, A.astype(np.float64), 0.0)
    m0 = A64[:, S].sum(1)
    m1 = m0 + A64[:, Pm].sum(1)
    m2 = m1 + A64[:, F].sum(1)
    m3 = m2 + np.where(local & other[None, :], A64, 0.0).sum(1)
    ok = i >= skip
    rec = [float(m[ok].mean()) for m in (m0, m1, m2, m3)] + [1.0]
    return rec, kept_fractions(S, Pm, F, other, r_l)


POLICIES = ["special", "special+punct", "special+punct+frequent", "special+punct+frequent+local", "full"]


def choose(rec, T):
    for k in range(4):
        if rec[k] >= T:
            return k
    return 4


def pool1d(s, pool, kernel):
    P = len(s)
    if pool == "none" or kernel <= 1:
        return s.copy()
    half = kernel // 2
    if pool == "avg-padded":  # PyTorch's avg_pool1d: zero padding counted
        pad = np.zeros(half)
        return np.lib.stride_tricks.sliding_window_view(np.r_[pad, s, pad], kernel)[:P].sum(1) / kernel
    pad = np.full(half, -np.inf if pool == "max" else np.nan)
    win = np.lib.stride_tricks.sliding_window_view(np.r_[pad, s, pad], kernel)[:P]
    return win.max(1) if pool == "max" else np.nanmean(win, 1)


def scores(win, colsum, N, H, KVH, w, Q, scorer, pool, kernel, gqa_max, gqa_order="combine-pool", key_norm=None):
    """win [H, Wp, N] -> [KVH, P] float64."""
    Wp = win.shape[1]
    Nc = N - Q
    P = Nc - w
    G = H // KVH
    r0 = N - Wp
    out = np.zeros((KVH, P))
    if scorer == "knorm":  # kvpress's KnormPress: the smallest key norms first, per KV head
        return -key_norm[:, :P].astype(np.float64)
    if scorer == "tova":  # the last context row, averaged over all query heads, every KV head alike
        out[:] = win[:, Nc - 1 - r0, :P].astype(np.float64).mean(0)
        return out
    if scorer == "streaming":  # 4 sinks, then recency
        out[:] = np.where(np.arange(P) < 4, 2.0, np.arange(P) / P)
        return out
    for g in range(KVH):
        per = []
        for h in range(g * G, (g + 1) * G):
            if scorer == "snapkv":
                s = win[h, Nc - w - r0:Nc - r0, :P].astype(np.float64).mean(0)
            else:
                s = colsum[h, :P].astype(np.float64) - win[h, Nc - r0:N - r0, :P].astype(np.float64).sum(0)
                if scorer == "observed":  # kvpress's ObservedAttentionPress: the mean over the rows that see j
                    s = s / (Nc - np.arange(P))
            if scorer == "snapkv" and gqa_order == "pool-combine":
                s = pool1d(s, pool, kernel)
            per.append(s)
        per = np.array(per)
        comb = per.max(0) if gqa_max else per.mean(0)
        out[g] = pool1d(comb, pool, kernel) if scorer == "snapkv" and gqa_order == "combine-pool" else comb
    return out


def select(sc, b, alloc, alpha, safeguard="protect", w=0):
    """sc [KVH, P] -> keep [KVH, P] bool. Safeguards (docs/analyzer.md, "Conventions"):
    protect, kvpress (kvpress 0.5.5 AdaKVPress), blend (FFY0/AdaKV update_kv)."""
    KVH, P = sc.shape
    keep = np.zeros((KVH, P), dtype=bool)
    pos = np.arange(P)
    hh, jj = np.meshgrid(np.arange(KVH), pos, indexing="ij")
    global_order = np.lexsort((jj.ravel(), hh.ravel(), -sc.ravel()))
    if alloc == "adaptive" and safeguard == "blend":
        c = np.bincount(global_order[:KVH * min(b, P)] // P, minlength=KVH)
        f = int(b * alpha)
        cap = np.rint(c.astype(np.float32) * np.float32(1.0 - alpha) + np.float32(f)).astype(int)
        for g in range(KVH):
            order = np.lexsort((pos, -sc[g]))
            keep[g, order[:min(max(cap[g], 0), P)]] = True
        return keep
    if alloc == "uniform":
        first = b
    elif safeguard == "kvpress":
        n_safe = int((b + w) * alpha)
        n_safe = max(1, n_safe) if alpha > 0 else n_safe
        first = max(0, n_safe - w)
    else:
        first = int(math.floor(alpha * b + 1e-12))
    for g in range(KVH):
        order = np.lexsort((pos, -sc[g]))
        keep[g, order[:min(first, P)]] = True
    if alloc == "adaptive":
        rest = KVH * b - KVH * min(first, b)
        order = global_order
        flat = keep.ravel()
        free = order[~flat[order]]
        flat[free[:max(rest, 0)]] = True
        keep = flat.reshape(KVH, P)
    return keep


def pyramid(b, layer, n_layers, P, beta=20, schedule="adakv", w=0):
    """Prefix budget of layer `layer`: FFY0/AdaKV's integer schedule, or kvpress 0.5.5 PyramidKVPress's
    (floats on the whole budget x = b + w with q_len = P + w, Python's round, the flat budget as fallback)."""
    if schedule == "kvpress":
        q_len, x = P + w, float(b + w)
        mn = x / beta
        mx = 2 * x - mn
        if mx >= q_len - w:
            mx = q_len - w
            mn = 2 * x - mx
        if not (q_len >= mx >= mn >= w):
            return max(1, round(x)) - w
        steps = (mx - mn) / (n_layers - 1) if n_layers > 1 else 0.0
        return round(mx - layer * steps) - w
    if b >= P or n_layers <= 1:
        return b
    mn = b // beta
    mx = 2 * b - mn
    if mx >= P:
        mx = P
        mn = 2 * b - mx
    steps = (mx - mn) // (n_layers - 1)
    return mx - layer * steps


def loss_ctx(win, values, wo, N, H, KVH, w, Q):
    """Per-layer quantities shared by every budget: A [H,R,N], C_h, C, y."""
    Wp = win.shape[1]
    hd = values.shape[-1]
    G = H // KVH
    Nc = N - Q
    rows = np.arange(Nc, N) if Q else np.arange(Nc - w, Nc)
    A = win[:, rows - (N - Wp), :].astype(np.float64)              # [H, R, N]
    V = values.astype(np.float64)
    Wo = wo.astype(np.float64)
    VW = [V[h // G] @ Wo[:, h * hd:(h + 1) * hd].T for h in range(H)]   # [N, D] per head
    Ch = np.array([np.abs(m).sum(1).max() for m in VW])
    y = sum(A[h] @ VW[h] for h in range(H))
    return dict(A=A, VW=VW, Ch=Ch, C=Ch.max(), y=y, H=H, G=G, N=N, P=Nc - w)


def loss(ctx, keep):
    """Returns (bound, bound_per_head, actual_l1, relative_l1, kept_mass)."""
    if keep is None:
        return 0.0, 0.0, 0.0, 0.0, 1.0
    A, H, G, N, P = ctx["A"], ctx["H"], ctx["G"], ctx["N"], ctx["P"]
    mask = np.ones((H, N), dtype=bool)
    for h in range(H):
        mask[h, :P] = keep[h // G]
    Fh = (A * mask[:, None, :]).sum(2)                               # [H, R]
    Ahat = np.where(mask[:, None, :], A, 0.0) / np.where(Fh > 0, Fh, np.inf)[:, :, None]
    y = ctx["y"]
    yhat = sum(Ahat[h] @ ctx["VW"][h] for h in range(H))
    l1 = np.abs(y - yhat).sum(1)
    ynorm = np.abs(y).sum(1)
    rel = np.where(ynorm > 0, l1 / np.where(ynorm > 0, ynorm, 1), 0.0)
    bound = 2 * ctx["C"] * (1 - Fh).sum(0)
    bph = 2 * (ctx["Ch"][:, None] * (1 - Fh)).sum(0)
    return float(bound.mean()), float(bph.mean()), float(l1.mean()), float(rel.mean()), float(Fh.sum(0).mean() / H)


def concentration(rows, N):
    s = -np.sort(-rows.astype(np.float64), axis=1)
    cum = np.cumsum(s, axis=1)
    out = []
    for x in range(1, 51):
        k = ceil_frac(x / 100.0, N)
        out.append((x, k, float(cum[:, k - 1].mean()) if k > 0 else 0.0))
    return out


def analyze(path, thresholds=(0.95,), r_l=0.3, r_f=0.3, gqa="mean", skip=0, budgets=(64, 128, 256, 512, 1024),
            scorer="snapkv", w=32, pool="max", kernel=7, alpha=0.2, use_pyramid=False, Q=0, prompts=None,
            safeguard="protect", gqa_order="combine-pool", pyramid_schedule="adakv"):
    gqa_max = gqa == "max"
    res = {"fastgen": [], "loss": [], "budgets": [], "concentration": []}
    with h5py.File(path, "r") as f:
        m = f["model"]
        H, KVH, n_layers = int(m.attrs["n_heads"]), int(m.attrs["n_kv_heads"]), int(m.attrs["n_layers"])
        G = H // KVH
        layers = m["layers"][:]
        ids = prompts or sorted(f["prompts"].keys(), key=lambda k: int(f["prompts"][k].attrs["index"]))
        for pid in ids:
            g = f["prompts"][pid]
            N = int(g.attrs["n_tokens"])
            flags = g["flags"][:]
            has_attn = "attn" in g
            # without maps, all rows from the sums when the trace has them for r_l (docs/analyzer.md)
            near_r = list(f.attrs.get("nearsum_r_local", []))
            near_k = next((k for k, r in enumerate(near_r) if abs(r - r_l) < 1e-12), None)
            use_sums = not has_attn and "nearsum" in g and near_k is not None and skip == 0 and (not gqa_max or G == 1)
            for li, layer in enumerate(layers):
                layer = int(layer)
                colsum = g["colsum"][li]
                win = g["window"][li]
                Wp = win.shape[1]
                if has_attn:
                    maps, row0, rows = g["attn"][li].astype(np.float32), 0, "all"
                elif use_sums:
                    maps, row0, rows = g["nearsum"][li, near_k], None, "all"
                else:
                    maps, row0, rows = win, N - Wp, "window"
                heads = [("query", h, maps[h], colsum[h]) for h in range(H)]
                heads += [("kv", k, combine(maps[k * G:(k + 1) * G], gqa_max),
                           combine(colsum[k * G:(k + 1) * G], gqa_max)) for k in range(KVH)]
                for kind, h, A, cs in heads:
                    if use_sums:  # A is the head's nearsum [N]
                        rec, kept = fastgen_sums(cs, A, flags, r_l, r_f)
                    else:
                        rec, kept = fastgen(A, row0, flags, cs, r_l, r_f, skip)
                    for T in thresholds:
                        c = choose(rec, T)
                        res["fastgen"].append(dict(prompt=pid, layer=layer, head=h, head_kind=kind, rows=rows,
                                                   threshold=T, policy=POLICIES[c], kept_fraction=kept[c],
                                                   rec_special=rec[0], rec_punct=rec[1], rec_frequent=rec[2],
                                                   rec_local=rec[3], rec_full=rec[4]))
                values = g["values"][li]
                wo = m["wo"][li]
                Nc = N - Q
                P = Nc - w
                key_norm = g["key_norm"][li] if scorer == "knorm" else None
                sc = scores(win, colsum, N, H, KVH, w, Q, scorer, pool, kernel, gqa_max, gqa_order,
                            key_norm) if P > 0 else None
                ctx = loss_ctx(win, values, wo, N, H, KVH, w, Q)
                for alloc in ("uniform", "adaptive"):
                    for B in budgets:
                        b = B - w
                        bl = pyramid(b, layer, n_layers, P, schedule=pyramid_schedule, w=w) if use_pyramid else b
                        keep = None if bl >= P else select(sc, bl, alloc, alpha, safeguard, w)
                        bd, bph, l1, rel, km = loss(ctx, keep)
                        res["loss"].append(dict(prompt=pid, layer=layer, scorer=scorer, allocation=alloc,
                                                pyramid=int(use_pyramid), budget=B,
                                                eval=f"future:{Q}" if Q else "window", bound=bd,
                                                bound_per_head=bph, actual_l1=l1, relative_l1=rel,
                                                kept_mass=km))
                        if alloc == "adaptive":
                            for k in range(KVH):
                                cnt = P if keep is None else int(keep[k].sum())
                                res["budgets"].append(dict(prompt=pid, layer=layer, budget=B, kv_head=k,
                                                           layer_budget=bl + w, kv_budget=cnt + w))
                for h in range(H):
                    for x, k, mass in concentration(win[h], N):
                        res["concentration"].append(dict(prompt=pid, layer=layer, head=h, percent=x,
                                                         positions=k, mass=mass))
    return res
