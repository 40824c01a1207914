// Encodes texts with Hugging Face tokenizers' official Node binding (the reference).
// usage: node hf_encode.js NODE_MODULES TOKENIZER_JSON TEXTS_JSON
// TEXTS_JSON is a JSON array of strings; prints one JSON object per text:
// {"ids": [...with BOS...], "decoded": "...(special tokens skipped)"}
"use strict";
const fs = require("fs");
const path = require("path");
const [nodeModules, tokPath, textsPath] = process.argv.slice(2);
const { Tokenizer } = require(path.resolve(nodeModules, "tokenizers"));
(async () => {
  const t = Tokenizer.fromFile(tokPath);
  for (const s of JSON.parse(fs.readFileSync(textsPath, "utf8"))) {
    const ids = (await t.encode(s, null, { addSpecialTokens: true })).getIds();
    const decoded = await t.decode(ids, true);
    process.stdout.write(JSON.stringify({ ids: Array.from(ids), decoded }) + "\n");
  }
})().catch((e) => { console.error(e); process.exit(1); });
