"""Schemathesis against Meridian's own OpenAPI document: valid and invalid requests to every
operation, as the admin, through ASGI in-process, on the real PostgreSQL and Temporal dev server.

Every answer must be documented (status code, content type, body schema), none may be a 5xx, and
invalid input must be refused. Schemathesis runs its own event loop in a thread, so it gets an
app of its own (its own pool and Temporal client) while this test's loop runs the worker.
"""

from __future__ import annotations

import asyncio
import os
import time

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from tests.conftest import ADMIN_TOKEN
from tests.test_api import file_ticket, make_agent, make_customer

# Examples per operation and generation mode: 77 operations x 2 modes x this. CI keeps it small;
# MERIDIAN_FUZZ_EXAMPLES=200 makes a long run.
EXAMPLES = int(os.environ.get("MERIDIAN_FUZZ_EXAMPLES", "8"))
# "Positive data is accepted" does not hold for a desk with rules: a well-formed ticket for a
# customer who does not exist is a 422. Every other built-in check runs.
EXCLUDED_CHECKS = [positive_data_acceptance]


def fuzz(app, known: dict[str, object]) -> tuple[list[str], int]:
    """Runs every operation; returns the failures (with a curl line each) and the number of calls."""
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": ADMIN_TOKEN}}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    failures: list[str] = []
    calls = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            names = {p.name for p in operation.path_parameters}
            fixed = {name: value for name, value in known.items() if name in names}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)
                if fixed:  # half the time, ids that exist: the operation gets past its 404
                    strategy = st.one_of(
                        strategy, operation.as_strategy(generation_mode=mode, path_parameters=fixed)
                    )

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def check(case) -> None:
                    nonlocal calls
                    calls += 1
                    case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)

                try:
                    check()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (GET /healthz)
                except (Exception, BaseExceptionGroup) as err:  # every operation's failures in one run
                    failures.append(f"{operation.label} [{mode.value}]: {err}")
    finally:
        asgi.shutdown_lifespans()
    return failures, calls


async def test_every_operation_keeps_its_openapi_promises(api, dev_env):
    alice = await make_agent(api, "alice")
    acme = await make_customer(api, "acme")
    ticket = await file_ticket(api, acme)
    await api.wait_for(ticket["id"], lambda t: t["assignee_id"] is not None)
    assert alice
    # Its own limits only for requests without a token (schemathesis checks that those are refused).
    settings_ = api.settings.model_copy(
        update={
            "temporal_address": dev_env.client.service_client.config.target_host,
            "rate_limit_per_ip": "off",
            "rate_limit_per_survey": "off",
        }
    )
    app = create_app(settings_)
    known = {
        "ticket_id": ticket["id"],
        "customer_id": "acme",
        "agent_id": "alice",
        "region_id": "emea",
    }
    started = time.perf_counter()
    failures, calls = await asyncio.to_thread(fuzz, app, known)
    elapsed = time.perf_counter() - started
    print(f"schemathesis: {calls} generated requests in {elapsed:.1f} s")
    assert not failures, "\n\n".join(failures)
