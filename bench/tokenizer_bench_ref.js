// Peer for bench/tokenizer_bench.sh: Hugging Face tokenizers (npm "tokenizers",
// the Rust library via N-API) encoding the same file, best of RUNS.
// usage: node tokenizer_bench_ref.js NODE_MODULES TOKENIZER_JSON TEXT_FILE [RUNS]
"use strict";
const fs = require("fs");
const path = require("path");
const [nm, tok, file, runsArg] = process.argv.slice(2);
const runs = parseInt(runsArg || "5", 10);
(async () => {
  const { Tokenizer } = require(path.resolve(nm, "tokenizers"));
  const text = fs.readFileSync(file, "utf8");
  let t0 = process.hrtime.bigint();
  const t = Tokenizer.fromFile(tok);
  const load = Number(process.hrtime.bigint() - t0) / 1e9;
  let best = Infinity, n = 0;
  for (let r = 0; r < runs; r++) {
    t0 = process.hrtime.bigint();
    const e = await t.encode(text, null, { addSpecialTokens: true });
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    n = e.getIds().length;
    if (dt < best) best = dt;
  }
  const bytes = Buffer.byteLength(text);
  console.log(`HF tokenizers (npm ${require(path.resolve(nm, "tokenizers/package.json")).version}): load ${load.toFixed(3)} s; ` +
    `encode ${bytes} bytes -> ${n} ids: best of ${runs} ${best.toFixed(3)} s (${(bytes / best / 1e6).toFixed(2)} MB/s)`);
})().catch((e) => { console.error(e); process.exit(1); });
