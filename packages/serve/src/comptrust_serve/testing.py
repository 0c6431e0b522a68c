"""Fakes for tests, here and in other packages: a tiny random checkpoint the embedded server can serve offline, and
fake ``text-generation-launcher``/``vllm`` programs that become the embedded server (for the ``process`` launcher;
``COMPTRUST_FAKE_ENGINE_DELAY_S`` in their environment delays that, to test interrupting a start).

``build_tiny_checkpoint(folder)`` writes a 2-layer, 64-wide random ``LlamaForCausalLM`` (safetensors) with a
byte-level BPE tokenizer trained on a few sentences and a ChatML-style chat template, in well under a second and
without any download. It needs the ``embedded`` extra (torch, transformers).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from comptrust_core import BackendInfo, BaseModelRef, Manifest, MeasuredFacts, MethodSpec

__all__ = [
    "CHAT_TEMPLATE",
    "build_tiny_checkpoint",
    "fake_engine_report",
    "install_fake_engines",
    "make_manifest",
    "process_running",
    "processes_naming",
    "write_fake_checkpoint",
]

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


def build_tiny_checkpoint(folder: Path, *, seed: int = 0, max_positions: int = 256, dtype: str = "float32") -> Path:
    """Write config.json, model.safetensors and tokenizer files for a 2-layer, 64-wide LlamaForCausalLM
    (``max_positions``: its context; a whole benchmark prompt needs about 2048), stored in ``dtype``."""
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
        max_position_embeddings=max_positions,
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))  # type: ignore[no-untyped-call]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_manifest(name: str, **fields: Any) -> Manifest:
    """A valid ``comptrust.json`` manifest for a tiny checkpoint (a dense one unless ``fields`` say otherwise)."""
    base = Manifest(
        name=name,
        base_model=BaseModelRef(source="tiny", kind="local", content_hash="sha256:00"),
        method=MethodSpec(name="dense"),
        backend=BackendInfo(name="comptrust", version="0.1.0", device="cpu"),
        measured=MeasuredFacts(sparsity=0.0, effective_bits=32.0, wall_time_s=0.1),
        created_at="2026-01-01T00:00:00Z",
        comptrust_version="0.1.0",
    )
    return base.model_copy(update=fields)


def process_running(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie waiting for its parent to reap it counts as gone."""
    from comptrust_serve.launchers.containers import process_start_time

    return process_start_time(pid) is not None


# Both scripts print one JSON line "FAKE-ENGINE {...}" with what they received, then become the embedded server.
_COMMON = """#!{python}
import argparse, json, os, sys, time
KEY_VAR = {key_var!r}
received = {{"argv": sys.argv[1:], "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}}
received["api_key_set"] = bool(os.environ.get(KEY_VAR))
print("FAKE-ENGINE " + json.dumps(received), flush=True)
time.sleep(float(os.environ.get("COMPTRUST_FAKE_ENGINE_DELAY_S", "0")))  # a slow start, for interruption tests
p = argparse.ArgumentParser()
p.add_argument("--trust-remote-code", action="store_true")
p.add_argument("--enable-prefill-logprobs", action="store_true")

def opt(flag, value):
    return [flag, value] if value else []

def become(model, host, port, *extra):
    argv = [sys.executable, "-m", "comptrust_serve.embedded", "--model", model, "--host", host, "--port", port, *extra]
    os.execv(sys.executable, argv + opt("--api-key-env", KEY_VAR if os.environ.get(KEY_VAR) else None))
"""

_TGI = (
    _COMMON
    + """
for flag in ("--model-id", "--hostname", "--port", "--quantize", "--dtype", "--num-shard", "--max-input-tokens",
             "--max-total-tokens", "--max-concurrent-requests", "--shard-uds-path", "--master-port"):
    p.add_argument(flag)
a = p.parse_args()
become(a.model_id, a.hostname, a.port, *opt("--max-total-tokens", a.max_total_tokens),
       *opt("--max-concurrent-requests", a.max_concurrent_requests))
"""
)

_VLLM = (
    _COMMON
    + """
p.add_argument("command", choices=["serve"])
p.add_argument("model")
for flag in ("--host", "--port", "--served-model-name", "--quantization", "--dtype", "--tensor-parallel-size",
             "--max-model-len", "--max-num-seqs"):
    p.add_argument(flag)
a = p.parse_args()
become(a.model, a.host, a.port, "--name", a.served_model_name, *opt("--max-total-tokens", a.max_model_len),
       *opt("--max-batch", a.max_num_seqs))
"""
)


_NVIDIA_SMI = """#!/bin/sh
# lists the GPU indices in COMPTRUST_FAKE_GPUS (default 0-7), as `nvidia-smi --query-gpu=index --format=csv,noheader`
for i in ${COMPTRUST_FAKE_GPUS:-0 1 2 3 4 5 6 7}; do echo "$i"; done
"""


def install_fake_engines(folder: Path) -> Path:
    """Write executable ``text-generation-launcher``, ``vllm`` and ``nvidia-smi`` (8 GPUs, or the indices in
    ``COMPTRUST_FAKE_GPUS``) into ``folder``; return it (prepend it to PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text, key_var in (("text-generation-launcher", _TGI, "API_KEY"), ("vllm", _VLLM, "VLLM_API_KEY")):
        path = folder / name
        path.write_text(text.format(python=sys.executable, key_var=key_var))
        path.chmod(0o755)
    (folder / "nvidia-smi").write_text(_NVIDIA_SMI)
    (folder / "nvidia-smi").chmod(0o755)
    return folder


def fake_engine_report(log: Path) -> dict[str, Any]:
    """What a fake engine printed about its flags (``argv``) and environment (from its log)."""
    for line in log.read_text().splitlines():
        if line.startswith("FAKE-ENGINE "):
            value: dict[str, Any] = json.loads(line.removeprefix("FAKE-ENGINE "))
            return value
    raise AssertionError(f"the fake engine left no FAKE-ENGINE line in {log}:\n{log.read_text()}")


def processes_naming(marker: str) -> list[int]:
    """Live processes (other than this one) whose command line contains ``marker`` (reads /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and process_running(int(entry.name)):
                found.append(int(entry.name))
    return found


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
