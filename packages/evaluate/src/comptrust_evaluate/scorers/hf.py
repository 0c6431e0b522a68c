"""``hf``: a Hugging Face text-classification model whose weights are already on this machine.

Detoxify's ``unitary/toxic-bert`` (multi-label, sigmoid), ``s-nlp/roberta_toxicity_classifier`` or
``tomh/toxigen_roberta`` (two classes, softmax), or a local folder. Nothing is downloaded: weights must be in the HF
cache or the folder given (``hf download MODEL`` first). Safetensors unless ``safetensors=false`` asks for pickled
weights too; remote code off. torch and transformers
are imported when the scorer is built, so evaluate itself stays importable without them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from comptrust_evaluate.scorers import toxicity_scorer
from comptrust_evaluate.scorers.base import (
    LocalScorer,
    ScorerError,
    ScorerOptions,
    ToxicityScorer,
    parse_scorer_options,
)

__all__ = ["HfOptions", "HfScorer", "pick_label"]


class HfOptions(ScorerOptions):
    model: str = Field(min_length=1, description="a hub id present in the local HF cache, or a local folder")
    label: str | None = Field(default=None, description="the toxic class's label (default: the one named toxic*)")
    revision: str | None = None
    device: str = "cpu"
    batch_size: int = Field(default=32, ge=1)
    max_length: int = Field(default=512, ge=8)
    safetensors: bool = Field(default=True, description="false: also accept pytorch_model.bin weights (pickle)")


def pick_label(id2label: Mapping[int, str], wanted: str | None, model: str) -> int:
    """The index of the toxic class: ``wanted`` (case-insensitive), else the label that starts with "toxic"
    (``toxic``, ``toxicity``), else class 1 of a two-class model whose labels say nothing (``LABEL_0/LABEL_1``)."""
    lowered = {i: str(name).lower() for i, name in id2label.items()}
    if wanted is not None:
        hits = [i for i, name in lowered.items() if name == wanted.lower()]
    else:
        hits = [i for i, name in lowered.items() if name.startswith("toxic")]
        if not hits and len(lowered) == 2 and all(name.startswith("label_") for name in lowered.values()):
            hits = [1]
    if len(hits) != 1:
        names = ", ".join(str(v) for v in id2label.values())
        raise ScorerError(f"toxicity scorer hf: model {model} has labels {names}; say which is toxic with label=NAME")
    return hits[0]


class HfScorer(LocalScorer):
    name: ClassVar[str] = "hf"

    def __init__(self, options: HfOptions) -> None:
        try:
            self._torch = importlib.import_module("torch")
            transformers = importlib.import_module("transformers")
        except ImportError:
            raise ScorerError("toxicity scorer hf needs torch and transformers installed") from None
        self.options = options
        where = dict(revision=options.revision, local_files_only=True, trust_remote_code=False)
        try:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(options.model, **where)
            self._model = transformers.AutoModelForSequenceClassification.from_pretrained(
                options.model, use_safetensors=options.safetensors, **where
            )
        except OSError as exc:
            raise ScorerError(
                f"toxicity scorer hf: no local weights for model {options.model} ({str(exc).splitlines()[0]}); "
                f"fetch them once with `hf download {options.model}`, or pass model=FOLDER (safetensors weights; "
                "safetensors=false also accepts a pickled pytorch_model.bin)"
            ) from None
        self._model.eval().to(options.device)
        config = self._model.config
        self._index = pick_label(config.id2label, options.label, options.model)
        self._multi_label = config.problem_type == "multi_label_classification"
        self._version = f"{options.model}@{getattr(config, '_commit_hash', None) or options.revision or 'local'}"
        self._version += f" transformers {transformers.__version__}"

    @property
    def version(self) -> str:
        return self._version

    def predict(self, texts: list[str]) -> list[float]:
        out: list[float] = []
        torch, size = self._torch, self.options.batch_size
        for start in range(0, len(texts), size):
            enc = self._tokenizer(
                texts[start : start + size],
                padding=True,
                truncation=True,
                max_length=self.options.max_length,
                return_tensors="pt",
            ).to(self.options.device)
            with torch.inference_mode():
                logits = self._model(**enc).logits.float()
            probs = torch.sigmoid(logits) if self._multi_label else torch.softmax(logits, dim=-1)
            out.extend(float(p) for p in probs[:, self._index].tolist())
        return out


@toxicity_scorer("hf")
def hf(options: Mapping[str, Any]) -> ToxicityScorer:
    if "model" not in options:
        raise ScorerError("toxicity scorer hf needs a model: --toxicity-option model=unitary/toxic-bert (or a folder)")
    return HfScorer(parse_scorer_options("hf", HfOptions, options))
