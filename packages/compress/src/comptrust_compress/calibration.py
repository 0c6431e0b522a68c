"""Calibration data: where the text comes from (``--calib-data``) and the seeded draw of token windows from it.

Sources:

- ``shipped`` (the default): the prose the project wrote and ships (``data/calibration.txt``), offline.
- ``c4``: English C4 (``allenai/c4``, the first training shard), fetched through the Hugging Face hub.
- ``alpaca``: the Stanford Alpaca instructions (``tatsu-lab/alpaca``), each row rendered as a user/assistant
  conversation with the model's own chat template: what the compressed-trust paper calibrated GPTQ on.
- a local file: ``*.txt`` (documents separated by blank lines) or ``*.jsonl`` (one object a line with ``text``, or
  ``messages`` in chat format, or Alpaca's ``instruction``/``input``/``output``).

The draw: the documents are shuffled with ``random.Random(seed)`` and tokenized in that order into one stream
(each document followed by the end-of-sequence token) until ``samples x seqlen`` tokens are reached, which are cut
into consecutive windows. A source shorter than that (the shipped text) gives windows at ``samples`` distinct
offsets drawn by the same generator. Either way the seed alone decides the set: seeds 0, 1 and 2 give three
different, reproducible sets. A source with fewer than ``seqlen + samples - 1`` tokens (fewer distinct windows than
samples) is refused before any compression work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comptrust_core import CalibrationSpec, ConfigError

from comptrust_compress.texts import project_text, project_text_label

__all__ = [
    "DEFAULT_CALIB_DATA",
    "DEFAULT_CALIB_SEED",
    "HUB_SOURCES",
    "CalibrationSet",
    "HubSource",
    "check_calibration_source",
    "draw_calibration",
    "load_documents",
]

log = logging.getLogger(__name__)

DEFAULT_CALIB_DATA = "shipped"
DEFAULT_CALIB_SEED = 0


@dataclass(frozen=True)
class HubSource:
    repo: str
    split: str
    data_files: str | None = None


HUB_SOURCES: dict[str, HubSource] = {
    "c4": HubSource("allenai/c4", "train", "en/c4-train.00000-of-01024.json.gz"),
    "alpaca": HubSource("tatsu-lab/alpaca", "train"),
}
_FILE_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class CalibrationSet:
    """The drawn token windows, and what the manifest records about them."""

    windows: list[list[int]]
    source: str
    seqlen: int
    seed: int

    @property
    def content_hash(self) -> str:
        """``sha256:<hex>`` of the token ids (little-endian int64, windows in order)."""
        digest = hashlib.sha256()
        for window in self.windows:
            digest.update(b"".join(int(i).to_bytes(8, "little", signed=True) for i in window))
        return "sha256:" + digest.hexdigest()

    def spec(self) -> CalibrationSpec:
        return CalibrationSpec(
            source=self.source,
            samples=len(self.windows),
            seqlen=self.seqlen,
            seed=self.seed,
            content_hash=self.content_hash,
        )


def check_calibration_source(source: str) -> None:
    """Refuse an unknown source or a missing/unreadable local file (no download, no tokenizer needed)."""
    if source == DEFAULT_CALIB_DATA or source in HUB_SOURCES:
        return
    path = Path(source).expanduser()
    if path.suffix.lower() not in _FILE_SUFFIXES:
        raise ConfigError(
            f"--calib-data {source!r} is not a known source; pass shipped, {', '.join(HUB_SOURCES)}, "
            "or a local .txt or .jsonl file"
        )
    if not path.is_file():
        raise ConfigError(f"--calib-data {source}: no such file; pass an existing .txt or .jsonl file")


def _hub_rows(source: HubSource) -> list[dict[str, Any]]:
    """The rows of a hub dataset (network; tests replace this function)."""
    import datasets

    dataset = datasets.load_dataset(source.repo, data_files=source.data_files, split=source.split)
    return [dict(row) for row in dataset]


def _chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "this calibration source is chat-formatted but the model's tokenizer has no chat template; "
            "pass --calib-data c4, shipped or a plain-text file"
        )
    text: str = tokenizer.apply_chat_template(messages, tokenize=False)
    return text


def _alpaca_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    prompt = str(row.get("instruction", "")).strip()
    extra = str(row.get("input") or "").strip()
    if extra:
        prompt = f"{prompt}\n\n{extra}"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(row.get("output", "")).strip()}]


def _row_text(row: dict[str, Any], tokenizer: Any, where: str) -> str:
    if isinstance(row.get("text"), str):
        return str(row["text"])
    if isinstance(row.get("messages"), list):
        return _chat(tokenizer, row["messages"])
    if isinstance(row.get("instruction"), str):
        return _chat(tokenizer, _alpaca_messages(row))
    raise ConfigError(f"{where}: a row has neither 'text', 'messages' nor 'instruction'; fix the file")


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def _file_documents(path: Path, tokenizer: Any) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--calib-data {path}: cannot read it as UTF-8 text ({exc})") from exc
    if path.suffix.lower() == ".txt":
        return _paragraphs(text)
    docs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--calib-data {path}, line {number}: not JSON ({exc.msg}); fix the file") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"--calib-data {path}, line {number}: not a JSON object; fix the file")
        docs.append(_row_text(row, tokenizer, f"--calib-data {path}, line {number}"))
    return docs


def load_documents(source: str, tokenizer: Any) -> tuple[list[str], str]:
    """The documents of ``source`` and the label the manifest records for it."""
    check_calibration_source(source)
    if source == DEFAULT_CALIB_DATA:
        return _paragraphs(project_text("calibration")), "shipped " + project_text_label("calibration")
    hub = HUB_SOURCES.get(source)
    if hub is None:
        path = Path(source).expanduser()
        return _file_documents(path, tokenizer), f"file:{path.name}"
    try:
        rows = _hub_rows(hub)
    except Exception as exc:  # network, auth, a dataset that moved: all end the same way for the user
        raise ConfigError(
            f"cannot fetch --calib-data {source} ({hub.repo}) from the Hugging Face hub: {exc}; "
            "check the network, or pass --calib-data shipped or a local file"
        ) from exc
    if source == "alpaca":
        docs = [_chat(tokenizer, _alpaca_messages(row)) for row in rows]
    else:
        docs = [_row_text(row, tokenizer, f"--calib-data {source}") for row in rows]
    label = f"hub:{hub.repo}" + (f"/{hub.data_files}" if hub.data_files else "")
    return docs, label


def draw_calibration(tokenizer: Any, *, source: str, samples: int, seqlen: int, seed: int) -> CalibrationSet:
    """Draw ``samples`` windows of ``seqlen`` tokens from ``source``, decided by ``seed`` alone (see module doc)."""
    docs, label = load_documents(source, tokenizer)
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    eos = tokenizer.eos_token_id
    need = samples * seqlen
    stream: list[int] = []
    for index in order:
        ids: list[int] = tokenizer(docs[index], add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        if isinstance(eos, int):
            stream.append(eos)
        if len(stream) >= need:
            break
    distinct = len(stream) - seqlen + 1
    if distinct < samples:
        raise ConfigError(
            f"--calib-data {source} gives {len(stream)} tokens, too little for {samples} samples of {seqlen} tokens "
            f"(at least {seqlen + samples - 1} needed); lower --calib-samples or --calib-seqlen, or pass more text"
        )
    if len(stream) >= need:
        windows = [stream[i * seqlen : (i + 1) * seqlen] for i in range(samples)]
    else:
        starts = sorted(rng.sample(range(distinct), samples))
        windows = [stream[s : s + seqlen] for s in starts]
        log.info("calibration: %d overlapping windows drawn from %d tokens of %s", samples, len(stream), label)
    return CalibrationSet(windows=windows, source=label, seqlen=seqlen, seed=seed)
