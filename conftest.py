"""Suite-wide test settings: nothing may reach a model hub or download weights during tests."""

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_BACKEND_OUTPUT_ENV = ("TQDM_DISABLE", "LLM_COMPRESSOR_LOG_LEVEL")


@pytest.fixture(autouse=True)
def _keep_backend_output_env() -> Iterator[None]:
    """A `compress` or `sweep` main called in-process with stdout captured quiets llm-compressor through environment
    variables for the rest of the process (as the CLIs should); this keeps that to the test that called it."""
    saved = {name: os.environ.get(name) for name in _BACKEND_OUTPUT_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
