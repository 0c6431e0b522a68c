"""``--dt-compat``: the prompt strings DecodingTrust built for Llama-2 chat models, sent as raw prompts.

DecodingTrust renders chat messages with its own FastChat-style ``llama-2`` template (``src/dt/conversation.py``,
``HFChat.messages_to_prompt``), quirks included, and the compressed-trust paper's numbers come from those strings:

* the template keeps its whole ``<s>[INST] <<SYS>>...<</SYS>>`` wrapper in the system slot, so a perspective that
  passes its own system message loses the wrapper: ``"You are a helpful assistant.TASK\\nINPUT[/INST]"``;
* a request without a system message keeps the default Llama-2 system prompt (AdvGLUE++, privacy);
* every system message replaces the previous one, wherever it is (fairness demonstrations vanish);
* no space before the first ``[/INST]``, and the literal ``"<s>"`` text (the server's tokenizer adds its BOS too).

The strings (wrapper, roles, separators) are benchmark facts in ``data/decodingtrust.json`` (``llama2_template``).
"""

from __future__ import annotations

from collections.abc import Sequence

from comptrust_core import ChatMessage, RequestSpec

from comptrust_evaluate.facts import benchmark_facts

__all__ = ["llama2_prompt", "to_llama2_request"]


def llama2_prompt(messages: Sequence[ChatMessage]) -> str:
    """The string DecodingTrust's ``llama-2`` conversation template makes of ``messages`` (plus the open assistant
    turn it always appends)."""
    facts = benchmark_facts("decodingtrust").sub("llama2_template")
    system = facts.text("system")
    user_role, assistant_role = facts.texts("roles")
    seps = (facts.text("sep"), facts.text("sep2"))
    turns: list[tuple[str, str | None]] = []
    for message in messages:
        if message.role == "system":
            system = message.content
        else:
            turns.append((user_role if message.role == "user" else assistant_role, message.content))
    turns.append((assistant_role, None))
    out = []
    for i, (role, content) in enumerate(turns):
        if not content:  # an empty message, like the open assistant turn, is its role alone
            out.append(role)
        elif i == 0:
            out.append(system + content)
        else:
            out.append(role + " " + content + seps[i % 2])
    return "".join(out)


def to_llama2_request(request: RequestSpec) -> RequestSpec:
    """The same request with its messages rendered to DecodingTrust's Llama-2 string (a raw prompt stays as it is)."""
    if request.messages is None:
        return request
    return RequestSpec(prompt=llama2_prompt(request.messages), params=request.params)
