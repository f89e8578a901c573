"""KPIs from the timeline, for any window, grouping and time zone (definitions: docs/kpis.md)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from api.auth import STAFF, Principal, require
from db import kpis
from domain.kpis import (
    DEFAULT_METRICS,
    DIMENSIONS,
    METRICS,
    REPEAT_DAYS,
    Bucket,
    KpiQuery,
    KpiRow,
    local_midnight,
)

router = APIRouter(prefix="/v1", tags=["kpis"])

MAX_SPAN = timedelta(days=400)
MAX_HOUR_SPAN = timedelta(days=31)


class KpiAnswer(BaseModel):
    start: datetime
    end: datetime
    timezone: str
    bucket: Bucket
    group_by: list[str]
    metrics: list[str]
    units: dict[str, str]
    repeat_days: int
    rows: list[KpiRow]


def _instant(value: str, name: str, zone: ZoneInfo) -> datetime:
    """ISO 8601 with an offset, or a date meaning local midnight in the requested zone."""
    try:
        if len(value) == 10:
            return local_midnight(date.fromisoformat(value), zone)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"`{name}` must be a date or an ISO 8601 time: {value!r}"
        ) from None
    if parsed.tzinfo is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"`{name}` needs a UTC offset (or give a plain date)"
        )
    return parsed


def _names(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _query(
    start: str, end: str, group_by: str | None, tz: str, metrics: str | None, bucket: Bucket, repeat_days: int
) -> KpiQuery:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown IANA time zone {tz!r}") from None
    asked = _names(metrics)
    wanted = list(METRICS) if asked == ["all"] else asked or list(DEFAULT_METRICS)
    try:
        query = KpiQuery(
            start=_instant(start, "from", zone),
            end=_instant(end, "to", zone),
            group_by=tuple(_names(group_by)),
            bucket=bucket,
            timezone=tz,
            metrics=tuple(wanted),
            repeat_days=repeat_days,
        )
    except ValidationError as err:
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, reasons) from None
    span = query.end - query.start
    if span > MAX_SPAN:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the window spans {span.days} days; at most {MAX_SPAN.days}",
        )
    if bucket is Bucket.HOUR and span > MAX_HOUR_SPAN:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"hour buckets cover at most {MAX_HOUR_SPAN.days} days; use day or week buckets for longer",
        )
    return query


def answer_json(query: KpiQuery, rows: list[KpiRow]) -> str:
    """Built from checked parts and serialised in one pass: validating thousands of rows again
    would cost more than the query."""
    return KpiAnswer.model_construct(
        start=query.start,
        end=query.end,
        timezone=query.timezone,
        bucket=query.bucket,
        group_by=list(query.group_by),
        metrics=list(query.metrics),
        units={m: METRICS[m].unit for m in query.metrics},
        repeat_days=query.repeat_days,
        rows=rows,
    ).model_dump_json()


def _csv(query: KpiQuery, rows: list[KpiRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["bucket", *query.group_by, *query.metrics])
    for row in rows:
        values = ["" if (v := row.values[m]) is None else repr(v) for m in query.metrics]
        writer.writerow([row.bucket or "", *(row.group[d] or "" for d in query.group_by), *values])
    return out.getvalue()


@router.get(
    "/kpis",
    response_model=KpiAnswer,
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with `Accept: text/csv`"}},
)
async def get_kpis(
    request: Request,
    start: Annotated[str, Query(alias="from", max_length=40, description="date or ISO 8601 time")],
    end: Annotated[str, Query(alias="to", max_length=40, description="exclusive")],
    group_by: Annotated[
        str | None, Query(max_length=200, description=f"comma-separated: {', '.join(DIMENSIONS)}")
    ] = None,
    tz: Annotated[str, Query(max_length=64, description="IANA time zone for buckets and dates")] = "UTC",
    metrics: Annotated[
        str | None, Query(max_length=2000, description="comma-separated names, or `all`")
    ] = None,
    bucket: Bucket = Bucket.NONE,
    repeat_days: Annotated[
        int, Query(description=f"repeat-issue window: {', '.join(map(str, REPEAT_DAYS))}")
    ] = 7,
    accept: Annotated[str | None, Header(max_length=500)] = None,
    _: Principal = Depends(require(*STAFF)),
) -> Response:
    """Tickets created in [from, to) grouped by bucket (in `tz`) and the chosen dimensions."""
    query = _query(start, end, group_by, tz, metrics, bucket, repeat_days)
    pool = request.app.state.pool
    async with pool.acquire() as conn:
        rows = await kpis.query(conn, query)
    if accept and "text/csv" in accept:
        return Response(_csv(query, rows), media_type="text/csv; charset=utf-8")
    return Response(answer_json(query, rows), media_type="application/json")
