"""Recorded ticket histories must replay with today's workflow code.

A change to `workflows/ticket.py` that would break running tickets fails here; guard such a
change with `workflow.patched(...)`. Record fresh histories with
`MERIDIAN_RECORD_HISTORIES=1 .venv/bin/pytest tests/test_api.py` and commit them beside the old ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.housekeeping import HousekeepingWorkflow
from workflows.ticket import TicketWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[TicketWorkflow, HousekeepingWorkflow], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
