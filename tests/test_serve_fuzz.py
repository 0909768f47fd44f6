"""Property-based fuzzing of every endpoint from the app's own OpenAPI schema (schemathesis): valid and
invalid inputs, no 5xx, and responses that match the schema. Bounded: 25 examples per operation and mode.

(schemathesis' pytest plugin, ``from_fixture``, fails under pytest 9, so each operation's Hypothesis
strategy is driven directly.)
"""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from test_serve_support import index_dir, serve_encoder, serve_model_dir  # noqa: E402,F401
from textcl.serve import create_app  # noqa: E402

OPERATIONS = [("/search", "POST"), ("/search", "GET"), ("/documents", "POST"), ("/documents/{doc_id}", "GET"),
              ("/documents/{doc_id}", "DELETE"), ("/info", "GET"), ("/health", "GET")]


@pytest.fixture()
def served_app(index_dir, serve_encoder):
    from fastapi.testclient import TestClient

    # schemathesis calls the app as http://testserver: a name the server must be told it answers to
    app = create_app(index_dir, encoder=serve_encoder, allow_writes=True, max_documents=20, max_body_bytes=64_000,
                     allowed_hosts=["testserver"])
    with TestClient(app):  # runs the lifespan: the index is saved and released at the end
        yield app


CASES = [pytest.param(path, method, mode, id=f"{method} {path} {mode.value}") for path, method in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or path not in ("/info", "/health")]  # these take no input


@pytest.mark.parametrize("path, method, mode", CASES)
def test_no_input_makes_the_server_fail(served_app, path, method, mode):
    operation = schemathesis.openapi.from_asgi("/openapi.json", served_app)[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    check()
