"""A real engine in the loop: vLLM (CPU build, `serve install-engine vllm`, which .ci/run does) serves the dense
SmolLM2 through the process launcher, and the quick suite goes through `evaluate` at 64 in flight with no error
record (a seed on every request, greedy ones included, used to crash vLLM's CPU engine). Skips, saying why, where no
vLLM is installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from comptrust_evaluate import EvaluateConfig, evaluate
from comptrust_evaluate.config import EndpointSpec
from comptrust_evaluate.store.ndjson import read_records
from comptrust_serve import LaunchOptions, launch_fleet, open_checkpoint, probe
from comptrust_serve.engine_install import engine_python

pytestmark = pytest.mark.skipif(
    engine_python() is None, reason="no vLLM installed here (`uv run serve install-engine vllm`; .ci/run does it)"
)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_vllm_serves_smollm2_and_the_quick_suite_runs_without_an_error(tmp_path: Path, smollm2: Path) -> None:
    checkpoint = open_checkpoint(smollm2, "smol-dense")
    # -O0: no torch.compile (vLLM's CPU build otherwise compiles the model with inductor at every start, minutes on
    # 2 cores); what this test proves (the engine starts through the launcher, seeded requests at 64 in flight come
    # back without an error) does not depend on compilation
    options = LaunchOptions(
        engine="vllm",
        log_dir=tmp_path / "logs",
        startup_timeout_s=780,
        max_total_tokens=2048,
        extra_args=("-O0",),
    )
    with launch_fleet([checkpoint], "process", options) as fleet:
        assert not fleet.failures, fleet.failures
        (endpoint,) = fleet.endpoints
        assert endpoint.engine == "vllm" and endpoint.protocol == "openai"
        out = tmp_path / "run"
        spec = EndpointSpec.from_endpoint(endpoint)
        config = EvaluateConfig(out=out, endpoints=(spec,), suite="quick", max_concurrency=64, progress="off")
        summary = evaluate(config)
        (result,) = summary.endpoints
        records = [r for path in sorted((out / "records").glob("*.ndjson")) for r in read_records(path)]
        assert result.errors == 0 and len(records) == 52, [r.error for r in records if r.status != "ok"][:5]
        assert all(r.status == "ok" for r in records)
        assert {r.perspective for r in records} >= {"toxicity", "stereotype", "machine_ethics", "fairness"}
        url = endpoint.url
    assert not probe(url, timeout_s=1.0)  # stopped with the fleet
