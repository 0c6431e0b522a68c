"""Fakes for tests, here and in other packages: a tiny random checkpoint the embedded server can serve offline.

``build_tiny_checkpoint(folder)`` writes a 2-layer, 64-wide random ``LlamaForCausalLM`` (safetensors) with a
byte-level BPE tokenizer trained on a few sentences and a ChatML-style chat template, in well under a second and
without any download. It needs the ``embedded`` extra (torch, transformers).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHAT_TEMPLATE", "build_tiny_checkpoint", "process_running", "write_fake_checkpoint"]

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
    from comptrust_serve.launchers.containers import process_start_time

    return process_start_time(pid) is not None


def write_fake_checkpoint(folder: Path, *, quantize: str | None = None) -> Path:
    """A folder that passes the checkpoint checks without real weights (for launchers whose engine is a stand-in);
    with ``quantize``, a ``comptrust.json`` whose serving hints ask both engines for that quantization."""
    from comptrust_core import (
        BackendInfo,
        BaseModelRef,
        Manifest,
        MeasuredFacts,
        MethodSpec,
        ServingHints,
        write_manifest,
    )

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 8)
    if quantize is not None:
        manifest = Manifest(
            name=folder.name,
            base_model=BaseModelRef(source="tiny", kind="local", content_hash="sha256:00"),
            method=MethodSpec(name=quantize, bits=4),
            backend=BackendInfo(name="comptrust", version="0.1.0", device="cpu"),
            measured=MeasuredFacts(sparsity=0.0, effective_bits=4.2, wall_time_s=1.0),
            serving=ServingHints(tgi_quantize=quantize, vllm_quantization=quantize),
            created_at="2026-01-01T00:00:00Z",
            comptrust_version="0.1.0",
        )
        write_manifest(folder, manifest)
    return folder
