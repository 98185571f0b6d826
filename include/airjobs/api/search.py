"""Job search over HTTP (spec D12, Appendix A; ``airjobs.search`` compiles the terms): the query terms of
``GET /jobs/v2`` and ``GET /jobs/v2/{jobId}/history`` (``airjobs.api.jobs`` reads them with ``job_search`` and
``history_search`` here), and the legacy form ``GET /jobs/v2/{attribute}/{value}`` = ``attribute.eq=value``.

The legacy route's ``attribute`` matches only the search field names (any case, a path convertor), and the
router is included last, so it never shadows ``/jobs/v2/{jobId}/status``, ``/history``, ``/pems`` ...
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path, Request, Response
from starlette.convertors import StringConvertor, register_url_convertor

from airjobs import representation as rep
from airjobs import search, store
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api.deps import SEGMENT, AgaveRouter, JobsReader, Page, Paging, User, read
from airjobs.api.envelope import base_url, envelope

router = AgaveRouter(tags=["jobs"])

FIELD_NAMES = tuple(f.name for f in search.JOB_FIELDS)
HISTORY_NAMES = tuple(f.name for f in search.HISTORY_FIELDS)


class SearchFieldConvertor(StringConvertor):
    """A job search field's name, in any case (``appId``, ``appid``, ``APPID``): nothing else."""

    regex = "(?i:" + "|".join(re.escape(n) for n in sorted(FIELD_NAMES, key=len, reverse=True)) + ")"


register_url_convertor("search_field", SearchFieldConvertor())

TERMS = (
    "Search terms: field.op=value (field=value is eq), names in any case; operators eq, neq, lt, lte, gt, gte, "
    "in, nin, between (comma-separated values), like, nlike (* wildcard), rlike, and for dates on, before, after; "
    "dates in ISO 8601 or now, today, yesterday, -3 hours, 3 days ago, last monday (airjobs.search)."
)


def order_parameters(fields: tuple[str, ...], default: str) -> list[dict[str, Any]]:
    return [
        docs.query(
            "order",
            {"type": "string", "enum": ["asc", "desc", "ASC", "DESC"]},
            f"Sort direction (any case; default {default}). {TERMS}",
        ),
        docs.query(
            "orderBy",
            {"type": "string", "enum": list(fields)},
            "Sort by this search field (any case; default: created, then id)",
        ),
    ]


JOB_ORDER = order_parameters(FIELD_NAMES, "DESC")
HISTORY_ORDER = order_parameters(HISTORY_NAMES, "ASC")


def query_pairs(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


def job_search(request: Request, *extra: tuple[str, str]) -> search.Search:
    """The request's job search (400 for a bad term); ``extra`` terms come first (the legacy path's)."""
    return search.job_search([*extra, *query_pairs(request)])


def history_search(request: Request) -> search.Search:
    return search.history_search(query_pairs(request))


async def listing(request: Request, user: User, page: Page, found: search.Search) -> Response:
    """The listing of ``GET /jobs/v2`` for a compiled search: summaries, full jobs with ``filter``."""
    full = bool(request.query_params.get("filter"))
    jobs = await read(
        lambda: store.list_jobs(user.name, user.is_admin, limit=page.limit, offset=page.offset, search=found)
    )
    base = base_url(request)
    return envelope(request, [rep.job_json(j, base) if full else rep.job_summary(j, base) for j in jobs])


Attribute = Annotated[
    str,
    Path(
        alias="attribute",
        json_schema_extra={"pattern": "(?i)^(?:" + "|".join(FIELD_NAMES) + ")$"},
        description="A job search field (Appendix A), any case, e.g. status or appid",
    ),
]
Value = Annotated[str, Path(alias="value", json_schema_extra=SEGMENT, description="The value it equals, e.g. RUNNING")]


@router.get(
    "/jobs/v2/{attribute:search_field}/{value}",
    **docs.operation(
        "searchJobsByAttribute",
        "The legacy search form: the jobs whose attribute equals value (attribute.eq=value), newest first",
        ok={200: m.JobListResponse},
        page=True,
        query=JOB_ORDER,
    ),
)
async def search_by_attribute(
    request: Request, user: JobsReader, page: Paging, attribute: Attribute, value: Value
) -> Response:
    return await listing(request, user, page, job_search(request, (attribute, value)))
