"""Build a tiny random-weight sequence classifier, fully offline, on the tiny chat model's
tokenizer: `python build_tiny_classifier.py TOKENIZER_DIR OUT` with the engine venv's python.

A Llama with a 3-way `score` head and Prompt Guard's labels; vLLM serves it with the pooling
runner (`*ForSequenceClassification` picks `--runner pooling --convert classify`). Its random
probabilities mean nothing, so tests decide its verdicts with thresholds of 0 and above 1.
"""

from __future__ import annotations

import sys

from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

LABELS = ("BENIGN", "INJECTION", "JAILBREAK")


def main(tokenizer_dir: str, out: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    import torch

    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
