"""Fakes for tests, here and in other packages: a tiny random checkpoint the embedded server can serve offline.

``build_tiny_checkpoint(folder)`` writes a 2-layer, 64-wide random ``LlamaForCausalLM`` (safetensors) with a
byte-level BPE tokenizer trained on a few sentences and a ChatML-style chat template, in well under a second and
without any download. It needs the ``embedded`` extra (torch, transformers).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CHAT_TEMPLATE", "build_tiny_checkpoint", "process_running"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you today? I am fine, thank you.",
    "Trust, safety, fairness and privacy matter in language models.",
    "Once upon a time a small model counted: one two three four five six seven.",
    "Compression can change what a model says, so we measure it carefully.",
    "user\nassistant\nsystem\nA list:\n- one\n- two\n",
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def build_tiny_checkpoint(folder: Path, *, seed: int = 0) -> Path:
    """Write config.json, model.safetensors and tokenizer files for a 2-layer, 64-wide LlamaForCausalLM."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    # Only the corpus's (ASCII) bytes enter the vocabulary, so every token decodes to valid text.
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL, show_progress=False)
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|pad|>", bos_token=None, unk_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def process_running(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie waiting for its parent to reap it counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
