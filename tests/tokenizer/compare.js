// Compares tok_dump.c output with reference.js output (JSON lines).
// usage: node compare.js LABEL MINE.jsonl REF.jsonl
// Prints one line per text; exit 1 on any difference.
// Checks: ids with and without the post-processor, the three decodes, and
// decode(encode(x)) == x (without the post-processor, keeping special tokens).
// Where the reference itself does not give x back, the text is reported and
// only equality with the reference is required.
"use strict";
const fs = require("fs");
const [label, minePath, refPath] = process.argv.slice(2);
const load = (p) => fs.readFileSync(p, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const mine = load(minePath), ref = load(refPath);
let bad = 0, checks = 0;
const show = (s) => JSON.stringify(s.length > 120 ? s.slice(0, 120) + "..." : s);
function firstDiff(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
const base = (f) => f.replace(/.*\//, "");
const mineByName = new Map(mine.map((m) => [base(m.file), m]));
for (let k = 0; k < ref.length; k++) {
  const r = ref[k], name = base(r.file), m = mineByName.get(name);
  if (!m) { console.log(`${label} ${name}: missing in our output`); bad++; continue; }
  const errs = [];
  for (const key of ["ids", "ids_ns"]) {
    checks++;
    const i = firstDiff(m[key], r[key]);
    if (i >= 0)
      errs.push(`${key} differ at ${i} (ours ${m[key].length} ids, ref ${r[key].length}): ` +
        `ours ${JSON.stringify(m[key].slice(Math.max(0, i - 2), i + 4))} ref ${JSON.stringify(r[key].slice(Math.max(0, i - 2), i + 4))}`);
  }
  for (const key of ["dec", "dec_skip", "dec_ns"]) {
    checks++;
    if (m[key] !== r[key]) errs.push(`${key} differs: ours ${show(m[key])} ref ${show(r[key])}`);
  }
  const text = fs.readFileSync(r.file, "utf8");
  checks++;
  let note = "";
  if (m.dec_ns !== text) {
    if (r.dec_ns === text) errs.push(`decode(encode(x)) != x: ${show(m.dec_ns)}`);
    else note = " (reference does not round-trip this text either; equal to the reference)";
  }
  if (errs.length) { bad++; console.log(`${label} ${name}: FAIL\n  ` + errs.join("\n  ")); }
  else console.log(`${label} ${name}: ok, ${r.ids.length} ids${note}`);
}
console.log(`${label}: ${ref.length - bad}/${ref.length} texts equal (${checks} checks)`);
if (ref.length === 0) { console.log(`${label}: no reference output`); bad++; }
process.exit(bad ? 1 : 0);
