"""comptrust-compress: compress a base model into a verified checkpoint folder (HF layout + ``comptrust.json``).

``compress(CompressConfig(model=..., method=..., out=...))`` is the whole pipeline; the ``compress`` command is a
thin adapter over it. Importing this package loads neither torch nor transformers.
"""

from comptrust_compress._version import __version__
from comptrust_compress.backend_output import QUIET_ENV, quiet_backend_output, route_llmcompressor_logs
from comptrust_compress.config import (
    BITS_CHOICES,
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_GROUP_SIZE,
    CompressConfig,
    Device,
    Export,
    MethodOption,
    Pattern,
    parse_pattern,
)
from comptrust_compress.errors import VerificationError
from comptrust_compress.methods import (
    CompressionMethod,
    available_methods,
    get_method,
    method_names,
    register_method,
)
from comptrust_compress.models import (
    ALIASES,
    GgufAlias,
    ModelKind,
    ResolvedModel,
    alias_names,
    check_model_source,
    resolve_model,
)
from comptrust_compress.pipeline import Plan, compress, default_name, plan
from comptrust_compress.texts import TextPart, project_text, project_text_label

__all__ = [
    "ALIASES",
    "BITS_CHOICES",
    "DEFAULT_CALIB_SAMPLES",
    "DEFAULT_GROUP_SIZE",
    "QUIET_ENV",
    "CompressConfig",
    "CompressionMethod",
    "Device",
    "Export",
    "GgufAlias",
    "MethodOption",
    "ModelKind",
    "Pattern",
    "Plan",
    "ResolvedModel",
    "TextPart",
    "VerificationError",
    "__version__",
    "alias_names",
    "available_methods",
    "check_model_source",
    "compress",
    "default_name",
    "get_method",
    "method_names",
    "parse_pattern",
    "plan",
    "project_text",
    "project_text_label",
    "quiet_backend_output",
    "register_method",
    "resolve_model",
    "route_llmcompressor_logs",
]
