"""comptrust-evaluate: fire trust benchmarks at served checkpoints, concurrently, with durable records.

``evaluate(EvaluateConfig(...))`` is the library call behind the ``evaluate`` command. Pluggable families are
registries: protocols (``tgi``, ``openai``), tasks (one per DecodingTrust perspective, plus ``custom``), refusal
detectors (DecodingTrust's rules and ``broad``), toxicity scorers (``offline``, ``perspective``, ``hf``) and record
stores (``ndjson``, compacted to Parquet by ``compact_run`` with the optional ``parquet`` extra). Each endpoint's
concurrency adapts (AIMD, capped by ``max_concurrency``) unless ``adaptive_concurrency=False``.
"""

from comptrust_evaluate._version import __version__
from comptrust_evaluate.api import EndpointSummary, RunSummary, evaluate, evaluate_async, make_plan
from comptrust_evaluate.config import EndpointSpec, EvaluateConfig, RetryPolicy, Timeouts, derive_endpoint_name
from comptrust_evaluate.plan import Plan, Scenario, Suite, Unit, build_plan, load_suite, prompts_suite, suite_names
from comptrust_evaluate.prompts import PromptEntry, load_prompts_file
from comptrust_evaluate.protocols import (
    Generation,
    HttpCall,
    ProtocolClient,
    ProtocolError,
    detect_protocol,
    get_protocol,
    protocol,
    protocol_names,
)
from comptrust_evaluate.refusal import (
    RefusalDetector,
    Verdict,
    detector_names,
    get_detector,
    refusal_detector,
    unparseable,
)
from comptrust_evaluate.scorers import ScorerError, ToxicityScorer, get_scorer, scorer_names, toxicity_scorer
from comptrust_evaluate.store import (
    RecordStore,
    RecordWriter,
    compact_run,
    get_store,
    read_records,
    record_store,
    records_path,
)
from comptrust_evaluate.tasks import (
    VARIANTS,
    DataSource,
    Item,
    Outcome,
    ScenarioOptions,
    Task,
    get_task,
    task,
    task_names,
)

__all__ = [
    "VARIANTS",
    "DataSource",
    "EndpointSpec",
    "EndpointSummary",
    "EvaluateConfig",
    "Generation",
    "HttpCall",
    "Item",
    "Outcome",
    "Plan",
    "PromptEntry",
    "ProtocolClient",
    "ProtocolError",
    "RecordStore",
    "RecordWriter",
    "RefusalDetector",
    "RetryPolicy",
    "RunSummary",
    "Scenario",
    "ScenarioOptions",
    "ScorerError",
    "Suite",
    "Task",
    "Timeouts",
    "ToxicityScorer",
    "Unit",
    "Verdict",
    "__version__",
    "build_plan",
    "compact_run",
    "derive_endpoint_name",
    "detect_protocol",
    "detector_names",
    "evaluate",
    "evaluate_async",
    "get_detector",
    "get_protocol",
    "get_scorer",
    "get_store",
    "get_task",
    "load_prompts_file",
    "load_suite",
    "make_plan",
    "prompts_suite",
    "protocol",
    "protocol_names",
    "read_records",
    "record_store",
    "records_path",
    "refusal_detector",
    "scorer_names",
    "suite_names",
    "task",
    "task_names",
    "toxicity_scorer",
    "unparseable",
]
