// Deterministic random texts for the golden test: snippets of many scripts,
// whitespace kinds, punctuation, special-token strings and markers mixed at
// random. usage: node random_texts.js DIR COUNT  (writes DIR/random_NN.txt)
"use strict";
const fs = require("fs");
const [dir, countArg] = process.argv.slice(2);
let s = 12345;
const rnd = (n) => { s = (s * 1103515245 + 12345) % 2147483648; return s % n; };
const parts = [
  "the", " The", "don't", "I'LL", " we've", "x", "Z", "  ", "   ", " ", "\n", "\n\n", "\r\n", "\t", " \t ",
  "\u00a0", "\u3000", "\u2009", "\u200b", "\u200d", "12", "1234", "98765432", "3.5", "-", ".", ",", "!?", "...",
  "\u201c", "\u201d", "\u2018", "\u2019", "\u2014", "\u2013", "\u2026", "(", ")", "[", "]", "{", "}", "<", ">",
  "$", "#", "@", "%", "^", "&", "*", "_", "=", "+", "|", "~", "`", "\\", "/", ":", ";", "'", "\"",
  "\u00e9", "e\u0301", "\u00c5", "\u00df", "\u0131", "\ufb01", "\u2581", "\u0120", "\u010a",
  "\u65e5\u672c", "\u4e2d\u6587", "\ud55c\uad6d\uc5b4", "\u3002", "\uff0c", "\u0645\u0631\u062d\u0628\u0627",
  "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439",
  "\u03b1\u03b2\u03b3", "\ud83d\ude00", "\ud83d\udc4d\ud83c\udffd", "\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67",
  "\ud83c\uddeb\ud83c\uddf7", "\u2764\ufe0f", "\u00bd", "\u2167", "\u0663", "<s>", "</s>", "<unk>",
  "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "[INST]", "<0x0A>", "<|", "|>", "\u0000",
];
fs.mkdirSync(dir, { recursive: true });
for (let k = 0; k < parseInt(countArg || "20", 10); k++) {
  let t = "";
  const n = 20 + rnd(200);
  for (let i = 0; i < n; i++) t += parts[rnd(parts.length)];
  fs.writeFileSync(`${dir}/random_${String(k).padStart(2, "0")}.txt`, t);
}
