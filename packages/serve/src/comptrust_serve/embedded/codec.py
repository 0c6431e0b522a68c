"""Text in and out of token ids: a thin wrapper over a Hugging Face tokenizer that the protocol modules share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from comptrust_serve.embedded.types import InvalidRequest

__all__ = ["Codec"]


class Codec:
    """Encode prompts, render chat messages with the model's own template, decode generated ids."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = self._tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        return ids

    def encode_with_offsets(self, text: str) -> list[tuple[int, tuple[int, int]]]:
        """``(id, (start, stop))`` per token of ``text``, offsets in characters (special tokens span nothing)."""
        try:
            encoded = self._tokenizer(text, return_offsets_mapping=True)
        except NotImplementedError as exc:  # slow tokenizers have no offsets
            raise InvalidRequest(f"this model's tokenizer cannot give offsets: {exc}") from exc
        pairs = zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        return [(int(i), (int(a), int(b))) for i, (a, b) in pairs]

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self._tokenizer.decode(list(ids), skip_special_tokens=True)
        return text

    def token_text(self, token_id: int) -> str:
        text: str = self._tokenizer.decode([token_id], skip_special_tokens=False)
        return text

    @cached_property
    def special_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in self._tokenizer.all_special_ids)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tokenizer, "chat_template", None))

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The model's chat template applied to ``messages``, ending with the assistant's generation prompt."""
        if not self.has_chat_template:
            raise InvalidRequest(
                "this model's tokenizer has no chat template; send a raw prompt to /generate or /v1/completions"
            )
        try:
            text = self._tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja errors, raise_exception() in templates
            raise InvalidRequest(f"the chat template rejected these messages: {exc}") from exc
        if not isinstance(text, str):
            raise InvalidRequest("the chat template did not render to text")
        return text
