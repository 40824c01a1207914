"""The small random GQA Llama the kvpress tests share: built by transformers
itself, q/k projections scaled up so that attention is sharp and SnapKV's
scores rarely tie, saved as a safetensors checkpoint kvtrace reads."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def build(outdir, seed=0, n_layers=2):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=101, max_position_embeddings=512,
                      rope_theta=10000.0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    model.save_pretrained(outdir, safe_serialization=True)
    return cfg


def chat_context(tokenizer, root, n_tokens):
    """A real chat context for SmolLM2 from files the repository tracks: a system turn and a user
    turn holding held-out Brown corpus passages (models/brown-llama/prompts.jsonl), rendered by the
    model's own chat template, so that it has special markers, punctuation and prose. Returns the
    first n_tokens ids and the rendered text (None when the passages are too short)."""
    import json
    import os
    with open(os.path.join(root, "models", "brown-llama", "prompts.jsonl")) as f:
        passages = [json.loads(line)["text"] for line in f]
    messages = [{"role": "system", "content": "You are a concise assistant for machine-learning engineers."},
                {"role": "user", "content": "Summarise these passages.\n\n" + "\n\n".join(passages[:3])}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text)["input_ids"]
    return (ids[:n_tokens] if len(ids) >= n_tokens else None), text
