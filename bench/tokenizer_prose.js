// Deterministic English prose for the tokenizer benchmark and golden test.
// usage: node tokenizer_prose.js BYTES > prose.txt
// Sentences are drawn from a fixed word list with a fixed-seed generator
// (xorshift32), so every run and machine produces the same text.
"use strict";
const target = parseInt(process.argv[2] || "1048576", 10);
let s = 2463534242;
const rnd = (n) => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s % n; };
const pick = (a) => a[rnd(a.length)];
const det = ["the", "a", "this", "that", "every", "no", "some", "her", "his", "their", "our"];
const adj = ["old", "quiet", "bright", "narrow", "heavy", "curious", "ancient", "simple", "distant", "careful",
  "early", "strange", "gentle", "broken", "famous", "patient", "hidden", "modern", "rapid", "silent"];
const noun = ["river", "village", "teacher", "machine", "window", "garden", "letter", "mountain", "library",
  "engineer", "question", "morning", "harbor", "council", "answer", "journey", "painting", "market", "storm",
  "experiment", "government", "student", "kitchen", "station", "memory", "problem", "company", "forest"];
const verb = ["watched", "found", "carried", "remembered", "described", "opened", "followed", "built",
  "discovered", "explained", "crossed", "measured", "ignored", "repaired", "visited", "announced", "studied"];
const adv = ["slowly", "quickly", "carefully", "suddenly", "quietly", "finally", "again", "almost", "never"];
const prep = ["near", "behind", "across", "under", "beyond", "inside", "beside", "through", "after", "before"];
const conj = ["and", "but", "so", "because", "although", "while", "when", "until"];
const names = ["Anna", "Thomas", "Maria", "James", "Elena", "Robert", "Clara", "Henry", "Sofia", "Daniel"];
const cap = (w) => w[0].toUpperCase() + w.slice(1);
function np() { return rnd(4) === 0 ? pick(names) : `${pick(det)} ${rnd(2) ? pick(adj) + " " : ""}${pick(noun)}`; }
function clause() {
  let c = `${np()} ${rnd(3) === 0 ? pick(adv) + " " : ""}${pick(verb)} ${np()}`;
  if (rnd(2)) c += ` ${pick(prep)} ${np()}`;
  if (rnd(6) === 0) c += ` in ${1800 + rnd(225)}`;
  if (rnd(9) === 0) c += ` for ${rnd(5000) + 2} years`;
  return c;
}
function sentence() {
  let t = clause();
  if (rnd(3) === 0) t += (rnd(2) ? ", " : " ") + `${pick(conj)} ${clause()}`;
  if (rnd(8) === 0) t += `; it's ${pick(adj)}, isn't it`;
  t = cap(t.trimStart());
  const end = rnd(10);
  t += end === 0 ? "?" : end === 1 ? "!" : ".";
  if (rnd(12) === 0) t = `"${t}" said ${pick(names)}.`;
  return t;
}
const out = [];
let n = 0;
while (n < target) {
  const k = 3 + rnd(5);
  const para = [];
  for (let i = 0; i < k; i++) para.push(sentence());
  const p = para.join(" ") + "\n\n";
  out.push(p);
  n += Buffer.byteLength(p);
}
process.stdout.write(out.join("").slice(0, target));
