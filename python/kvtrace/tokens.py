"""Token ids and kvtrace's token flags of a text, from the kvtrace binary."""
import json
import subprocess


def tokenize(model_dir, text, kvtrace="kvtrace"):
    """(ids, flags) of `text` as `kvtrace tokenize --model model_dir --pieces` gives them (the same
    tokenizer.json and flags a trace records: bit 0 special, bit 1 punct; docs/tokens.md). `kvtrace`:
    the binary's path, or its name on PATH."""
    r = subprocess.run([kvtrace, "tokenize", "--model", str(model_dir), "--text", text, "--pieces"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ValueError(r.stderr.strip() or f"{kvtrace} tokenize failed ({r.returncode})")
    toks = json.loads(r.stdout)
    return [t["id"] for t in toks], [t["flags"] for t in toks]
