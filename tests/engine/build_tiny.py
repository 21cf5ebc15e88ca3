"""Build a tiny random-weight Llama and a byte-level BPE tokenizer, fully offline.

Run with the engine venv's python: `python build_tiny.py OUT`. Recipe:
../shared/reference/vllm-cpu.md §2. The chat template prints the four Nemotron 3.5 kwargs as
`[categories=…]`, `[thinking=…]`, `[policy=…]`, `[taxonomy=…]` lines, then `<|role|>content`
turns, so what the template received can be read back from the rendered prompt.
"""

from __future__ import annotations

import glob
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{%- if request_categories is defined and request_categories %}"
    "{{ '[categories=' ~ request_categories ~ ']\\n' }}{% endif %}"
    "{%- if enable_thinking is defined %}{{ '[thinking=' ~ enable_thinking ~ ']\\n' }}{% endif %}"
    "{%- if custom_policy is defined and custom_policy %}"
    "{{ '[policy=' ~ custom_policy ~ ']\\n' }}{% endif %}"
    "{%- if custom_taxonomy is defined and custom_taxonomy %}"
    "{{ '[taxonomy=' ~ custom_taxonomy ~ ']\\n' }}{% endif %}"
    "{%- for message in messages %}{{ '<|' ~ message['role'] ~ '|>' }}"
    "{%- if message['content'] is string %}{{ message['content'] }}"
    "{%- elif message['content'] is iterable %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'text' %}{{ part['text'] }}{%- endif %}{%- endfor %}"
    "{%- endif %}{{ '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>' }}{%- endif %}"
)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:200]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(files, trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        model_max_length=4096,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        torch_dtype="float32",
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    main(sys.argv[1])
