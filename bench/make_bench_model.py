"""Writes the benchmark checkpoint: a random Llama of about 30M parameters
(hidden 512, 8 layers, 8 heads of 64, MLP 1536, vocabulary 4096), F32.

    .venv/bin/python bench/make_bench_model.py OUTDIR
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import checkpoints  # noqa: E402

checkpoints.VARIANTS["bench30m"] = dict(arch="LlamaForCausalLM")
checkpoints.BASE.update(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                        num_key_value_heads=8, vocab_size=4096, max_position_embeddings=8192)
checkpoints.write_checkpoint(sys.argv[1], "bench30m")
