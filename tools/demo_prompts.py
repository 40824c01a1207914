"""The demo's prompts for a chat model, of the kinds researchers profile:
chat-template conversations (system, user and assistant turns, rendered by
the model's own chat template), prose (held-out Brown corpus passages),
code (C source of this project, up to 700 tokens) and one long technical
document of at least 2,000 tokens (this project's docs/analyzer.md), both
cut at a blank line.

    .venv/bin/python tools/demo_prompts.py MODEL_DIR OUT.jsonl

Writes one {"id", "text"} line per prompt; kvtrace tokenizes the text with
the model's tokenizer.json (the rendered chat text tokenizes to the same ids
as apply_chat_template(tokenize=True); tests/test_tokenizer_hf.py).
"""
import json
import os
import sys

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG_TOKENS = 2000   # at least; the full maps of a 2,000-token prompt are about 0.9 GB (f16, deflated)
CODE_TOKENS = 700    # at most

CHATS = {
    "chat-kv-cache": [
        {"role": "system", "content": "You are a concise assistant for machine-learning engineers."},
        {"role": "user", "content": "What is a KV cache in a transformer decoder, and why does it grow?"},
        {"role": "assistant", "content": "During generation every layer keeps the key and value vectors of all "
                                         "past tokens so they are not recomputed. It grows linearly with the "
                                         "context length and the batch size."},
        {"role": "user", "content": "Which tokens could be evicted first without hurting the output much?"},
    ],
    "chat-recipe": [
        {"role": "user", "content": "I have flour, eggs, milk and a little butter. What can I cook for breakfast?"},
        {"role": "assistant", "content": "Pancakes: whisk one cup of flour, one egg and a cup of milk, rest the "
                                         "batter for ten minutes, then fry small rounds in butter."},
        {"role": "user", "content": "How do I keep them from getting rubbery?"},
    ],
    "chat-travel": [
        {"role": "system", "content": "You are a helpful travel planner. Answer in short bullet points."},
        {"role": "user", "content": "Plan two days in Lisbon for someone who likes museums and seafood."},
        {"role": "assistant", "content": "- Day 1: Belem, the Jeronimos Monastery, the Maritime Museum; grilled "
                                         "sardines by the river.\n- Day 2: the Gulbenkian Museum, Alfama on foot, "
                                         "dinner at a marisqueira."},
        {"role": "user", "content": "And if it rains on the second day?"},
        {"role": "assistant", "content": "- Swap Alfama for the Tile Museum and the LX Factory bookshops."},
        {"role": "user", "content": "Thanks! Any tip for the airport?"},
    ],
}
PROSE = ("news-ca30", "fiction-ck16", "learned-cj56")
CODE = ("model/config.c",)


def paragraphs(tok, path, at_most=None, at_least=None):
    """The file's leading paragraphs (blank-line separated): as many as stay
    within at_most tokens, or as few as reach at_least."""
    text = ""
    for para in open(os.path.join(ROOT, path)).read().split("\n\n"):
        longer = text + para + "\n\n"
        n = len(tok(longer)["input_ids"])
        if at_most and n > at_most:
            break
        text = longer
        if at_least and n >= at_least:
            break
    return text


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: demo_prompts.py MODEL_DIR OUT.jsonl")
    model, out = sys.argv[1:]
    tok = AutoTokenizer.from_pretrained(model)
    prompts = [(pid, tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
               for pid, msgs in CHATS.items()]
    brown = {}
    for line in open(os.path.join(ROOT, "models", "brown-llama", "prompts.jsonl")):
        p = json.loads(line)
        brown[p["id"]] = p["text"]
    prompts += [(f"prose-{pid}", brown[pid]) for pid in PROSE]
    prompts += [("code-" + os.path.basename(path).replace(".", "_"), paragraphs(tok, path, at_most=CODE_TOKENS))
                for path in CODE]
    text = paragraphs(tok, os.path.join("docs", "analyzer.md"), at_least=LONG_TOKENS)
    if len(tok(text)["input_ids"]) < LONG_TOKENS:
        sys.exit(f"demo_prompts.py: docs/analyzer.md gives fewer than {LONG_TOKENS} tokens")
    prompts.append(("long-doc-analyzer", text))
    with open(out, "w") as f:
        for pid, t in prompts:
            f.write(json.dumps({"id": pid, "text": t}) + "\n")
    for pid, t in prompts:
        print(f"{pid}: {len(tok(t)['input_ids'])} tokens", file=sys.stderr)


main()
