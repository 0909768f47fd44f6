"""Property-based fuzzing of the embeddings API from the app's own OpenAPI schema (schemathesis), as
tests/test_serve_fuzz.py does for search: valid and invalid inputs, no 5xx, responses that match the schema.
Bounded: 25 examples per operation and mode."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from test_serve_embeddings_support import wide_encoder, wide_model_dir  # noqa: E402,F401
from textcl.serve import create_app  # noqa: E402


@pytest.fixture()
def served_app(wide_encoder):
    from fastapi.testclient import TestClient

    # schemathesis calls the app as http://testserver: a name the server must be told it answers to
    app = create_app(models=["wide=unused"], encoders={"wide": wide_encoder}, max_inputs=8, max_body_bytes=64_000,
                     allowed_hosts=["testserver"])
    with TestClient(app):
        yield app


@pytest.mark.parametrize("path, method, mode", [
    ("/v1/embeddings", "POST", GenerationMode.POSITIVE), ("/v1/embeddings", "POST", GenerationMode.NEGATIVE),
    ("/v1/models", "GET", GenerationMode.POSITIVE), ("/v1/models/{model_id}", "GET", GenerationMode.POSITIVE),
], ids=lambda v: getattr(v, "value", v))
def test_no_input_makes_the_embeddings_api_fail(served_app, path, method, mode):
    operation = schemathesis.openapi.from_asgi("/openapi.json", served_app)[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    check()
