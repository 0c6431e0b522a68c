"""Fixtures: tiny random Llama models with an offline chat tokenizer, saved to temporary folders (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from comptrust_compress import project_text
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE trained on the project's calibration prose, with a ChatML chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(project_text("calibration").splitlines(), trainer)
    fast: Any = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    folder: Path, *, hidden: int = 64, intermediate: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2
) -> Path:
    """Save a random ``LlamaForCausalLM`` (bfloat16 safetensors) and its tokenizer into ``folder``."""
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hidden 64, 2 layers: every in_features divisible by 8, so every N:M pattern applies."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def odd_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hidden 36: in_features not divisible by 8, so ``--pattern 4:8`` cannot apply."""
    return build_tiny_model(
        tmp_path_factory.mktemp("models") / "odd-llama", hidden=36, intermediate=72, heads=2, kv_heads=1
    )


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The tiny models' tokenizer (byte-level BPE with a ChatML template)."""
    return build_tokenizer()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty folder to put ``--out`` in; tests check that nothing but the expected output appears here."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder
