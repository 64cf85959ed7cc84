"""The OpenAPI schema fuzzed with schemathesis against a running API: no 500s, no response that breaks
its own schema. A stack of its own with no worker, so fuzzed jobs stay queued instead of training."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.helpers.stack import ADMIN_TOKEN, Stack, running_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("fuzz"), workers=(), build_demo=False) as stack:
        yield stack


@pytest.fixture(scope="module")
def api_schema(fuzz_stack: Stack):  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_url(f"{fuzz_stack.base_url}/openapi.json")
    # The event stream of a queued job never ends without a worker; it is tested with real workers elsewhere.
    return schema.exclude(path_regex=r"/events$")


def test_the_api_never_answers_500_and_keeps_its_schema(api_schema, fuzz_stack: Stack) -> None:  # type: ignore[no-untyped-def]
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    assert {"POST /api/v1/plan", "POST /api/v1/plan/fit", "GET /api/v1/plans", "GET /api/v1/plans/{plan_id}"} <= {
        op.label for op in operations}  # the planner is fuzzed too
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def exercise(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(
                base_url=fuzz_stack.base_url,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                checks=[not_a_server_error, response_schema_conformance],
                timeout=30,
            )

        try:
            exercise()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
