"""comptrust-core: the contracts between comptrust's stages (manifest, endpoints, records, runs), paths and errors."""

from comptrust_core._io import atomic_write_bytes, atomic_write_text
from comptrust_core.cli import run_cli, setup_logging
from comptrust_core.endpoint import ENDPOINT_SCHEMA_VERSION, Endpoint, Protocol, read_endpoints, write_endpoints
from comptrust_core.errors import (
    CheckpointError,
    ComptrustError,
    ConfigError,
    EndpointError,
    ModelNotFoundError,
    RunDirError,
    SchemaVersionError,
    StorageError,
)
from comptrust_core.manifest import (
    MANIFEST_SCHEMA_VERSION,
    BackendInfo,
    BaseModelRef,
    CalibrationSpec,
    LayerStats,
    Manifest,
    MeasuredFacts,
    MethodSpec,
    ServingHints,
    read_manifest,
    write_manifest,
)
from comptrust_core.paths import ENDPOINTS_FILE, MANIFEST_FILE, RECORDS_DIR, RUN_FILE, cache_dir
from comptrust_core.record import (
    DECODINGTRUST_PERSPECTIVES,
    RECORD_SCHEMA_VERSION,
    Attribute,
    ChatMessage,
    GenerationParams,
    Record,
    RequestSpec,
    ScoreField,
    record_key,
)
from comptrust_core.run import RUN_SCHEMA_VERSION, RunInfo, read_run_info, write_run_info

__version__ = "0.1.0"

__all__ = [
    "DECODINGTRUST_PERSPECTIVES",
    "ENDPOINTS_FILE",
    "ENDPOINT_SCHEMA_VERSION",
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA_VERSION",
    "RECORDS_DIR",
    "RECORD_SCHEMA_VERSION",
    "RUN_FILE",
    "RUN_SCHEMA_VERSION",
    "Attribute",
    "BackendInfo",
    "BaseModelRef",
    "CalibrationSpec",
    "ChatMessage",
    "CheckpointError",
    "ComptrustError",
    "ConfigError",
    "Endpoint",
    "EndpointError",
    "GenerationParams",
    "LayerStats",
    "Manifest",
    "MeasuredFacts",
    "MethodSpec",
    "ModelNotFoundError",
    "Protocol",
    "Record",
    "RequestSpec",
    "RunDirError",
    "RunInfo",
    "SchemaVersionError",
    "ScoreField",
    "ServingHints",
    "StorageError",
    "__version__",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_dir",
    "read_endpoints",
    "read_manifest",
    "read_run_info",
    "record_key",
    "run_cli",
    "setup_logging",
    "write_endpoints",
    "write_manifest",
    "write_run_info",
]
