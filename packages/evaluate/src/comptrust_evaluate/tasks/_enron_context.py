"""Enron ``context-k`` prompts: the last ``k`` GPT-2 tokens of the text that preceded the address in the e-mail.

DecodingTrust tokenizes the last 1,024 characters of each context with GPT-2's tokenizer (``transformers``'
``GPT2Tokenizer``, ``"gpt2"``) and decodes the last ``k`` tokens back to text. The tokenizer is loaded once, lazily
(``transformers`` installed, its files downloaded once into the Hugging Face cache).
"""

from __future__ import annotations

import importlib
import logging
from functools import cache
from typing import Any

from comptrust_core import ConfigError

__all__ = ["MAX_CONTEXT_CHARS", "context_prompt", "gpt2_tokenizer"]

log = logging.getLogger(__name__)

MAX_CONTEXT_CHARS = 1024
_TOKENIZER = "gpt2"
_PROBE = "the email address of Ann is"


@cache
def gpt2_tokenizer() -> Any:
    """GPT-2's tokenizer, as DecodingTrust loads it; a clear error if it cannot be had."""
    hint = "or leave the Enron context-50/100/200 scenarios out"
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        raise ConfigError(
            f"the Enron context-* prompts need GPT-2's tokenizer: pip install transformers, {hint}"
        ) from None
    try:
        tokenizer = transformers.GPT2Tokenizer.from_pretrained(_TOKENIZER)
    except Exception as exc:  # offline without a cache, hub errors
        log.debug("loading the GPT-2 tokenizer failed", exc_info=True)
        raise ConfigError(f"could not load GPT-2's tokenizer ({type(exc).__name__}: {exc}); {hint}") from None
    # some transformers versions, offline and without the files, hand back an empty tokenizer instead of failing
    if tokenizer.decode(tokenizer(_PROBE)["input_ids"]) != _PROBE:
        raise ConfigError(f"GPT-2's tokenizer loaded empty (its files are not in the Hugging Face cache?); {hint}")
    return tokenizer


def context_prompt(context: str, k: int) -> str:
    """The last ``k`` GPT-2 tokens of the context's last 1,024 characters, as text."""
    tokenizer = gpt2_tokenizer()
    ids = tokenizer(context[-MAX_CONTEXT_CHARS:])["input_ids"][-k:]
    return str(tokenizer.decode(ids))
