"""Job and history search (spec D12, Appendix A): ``field.op=value`` query terms compiled to SQL conditions.

A term is ``field=value`` (``eq``) or ``field.op=value``; field and operator names are case-insensitive (the
Agave CLI sends ``appid``, ``executionsystem``, ``endtime`` ...). Terms are ANDed; a field may appear more than
once. ``limit``, ``offset``, ``order``, ``orderBy``, ``filter``, ``naked``, ``pretty`` and ``force`` are not
search terms. An unknown field or operator, an operator that does not apply to the field, or a value that is
not of the field's type is a ``BadRequest`` naming the term (and the valid fields or operators).

What each operator means per type of field:

* **string** (``appId``, ``name``, ``owner`` ...): compared case-insensitively (as Agave's MySQL collation
  did: ``executionSystem=AWS-DEMO`` finds ``aws-demo``). ``like``/``nlike`` take ``*`` (or ``%``) as the
  wildcard, every other character is literal; ``rlike`` is a PostgreSQL regular expression, matched anywhere,
  case-insensitively; ``lt``/``lte``/``gt``/``gte``/``between`` compare the lower-cased values by code point.
* **JSON text** (``inputs``, ``parameters``): the stored JSON text, e.g. ``{"inputFile": "x.txt"}``, as a
  string: ``inputs.like=*x.txt*``.
* **status**: ``eq``/``neq``/``in``/``nin`` take status names (any case; an unknown one is a 400), and a name
  with ``*`` is a ``like`` pattern (``status=*ING``); ``like``, ``nlike``, ``rlike`` as for strings.
* **numbers** (``nodeCount``, ``memoryPerNode``, ``retries``, ``charge``) and **seconds** (``maxRunTime``,
  ``runtime`` = endTime - startTime, ``walltime`` = endTime - created): ``eq neq lt lte gt gte in nin
  between``; seconds fields also take ``HH:MM:SS`` or ``D-HH:MM:SS`` values.
* **dates** (``created``, ``startTime`` ...): every operator of numbers plus ``on``, ``before`` (= ``lt``)
  and ``after`` (= ``gt``). A value is an instant (``2026-12-01T10:00:00Z``, ``now``, ``-3 hours``, ``3 days
  ago``) or a calendar day in UTC (``2026-12-01``, ``12/1``, ``12/1/2026``, ``today``, ``yesterday``,
  ``tomorrow``, ``last monday``, ``next friday``); a day stands for all of it: ``eq`` = within the day,
  ``lt``/``before`` = before it began, ``lte`` = before it ended, ``gt``/``after`` = after it ended, ``gte`` =
  since it began, ``between a,b`` = from a's beginning to b's end. ``on`` is the UTC calendar day of the value
  (also of an instant). See ``parse_date`` for the grammar.
* **bool** (``archive``, ``visible``): ``eq``, ``neq``; true/false, 1/0, yes/no, on/off (any case).

A row without a value (a job that has not ended has no ``endTime``, no ``runtime``) matches no term on that
field, ``neq``/``nin``/``nlike`` included (SQL's rule). ``charge`` is not metered by this service: it is 0.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, Text, and_, case, cast, func, literal, not_, or_
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import UnaryExpression

from airjobs.errors import BadRequest
from airjobs.models import Job, JobEvent
from airjobs.statuses import JobStatus
from airjobs.timeutil import hms_to_seconds

#: query parameters that are never search terms (paging, ordering, the envelope's, the file endpoints')
RESERVED = frozenset({"limit", "offset", "order", "orderby", "filter", "naked", "pretty", "force"})

OPERATORS = (
    "eq",
    "neq",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "nin",
    "like",
    "nlike",
    "between",
    "on",
    "before",
    "after",
    "rlike",
)
STRING_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "nin", "like", "nlike", "rlike", "between")
TEXT_OPS = ("eq", "neq", "in", "nin", "like", "nlike", "rlike")
NUMBER_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "nin", "between")
DATE_OPS = (*NUMBER_OPS, "on", "before", "after")
BOOL_OPS = ("eq", "neq")
KIND_OPS: dict[str, tuple[str, ...]] = {
    "string": STRING_OPS,
    "json": TEXT_OPS,
    "status": TEXT_OPS,
    "int": NUMBER_OPS,
    "float": NUMBER_OPS,
    "seconds": NUMBER_OPS,
    "date": DATE_OPS,
    "bool": BOOL_OPS,
}
KIND_NAMES = {
    "string": "a string",
    "json": "JSON text",
    "status": "a job status",
    "int": "an integer",
    "float": "a number",
    "seconds": "a number of seconds or HH:MM:SS",
    "date": "a date",
    "bool": "true or false",
}
MAX_VALUE = 1024  # characters of one term's value
MAX_LIST = 100  # values of one in/nin term
TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")
STATUSES = frozenset(s.value for s in JobStatus)
DAY = timedelta(days=1)
#: a mapped column or an SQL expression over columns
Column = ColumnElement[Any] | InstrumentedAttribute[Any]


@dataclass(frozen=True)
class Field:
    name: str  # as the API spells it
    kind: str  # a key of KIND_OPS
    column: Column
    #: compare without ``lower()``: the stored values are lower-case (job ids) or the kind folds them (status)
    folded: bool = False


def _seconds_of_hms(col: Column) -> ColumnElement[Any]:
    """``HH:MM:SS`` text -> seconds, in SQL (NULL for anything else). Immutable, so it can be indexed."""
    part = [cast(func.split_part(col, ":", i), Integer) for i in (1, 2, 3)]
    return case(
        (col.regexp_match(r"^[0-9]{1,6}:[0-9]{1,2}:[0-9]{1,2}$"), part[0] * 3600 + part[1] * 60 + part[2]),
        else_=None,
    )


def _seconds_between(end: Column, start: Column) -> ColumnElement[Any]:
    return func.extract("epoch", end - start)


MAX_RUN_SECONDS = _seconds_of_hms(Job.max_run_time)

JOB_FIELDS: tuple[Field, ...] = (
    Field("appId", "string", Job.app_id),
    Field("archive", "bool", Job.archive),
    Field("archivePath", "string", Job.archive_path),
    Field("archiveSystem", "string", Job.archive_system),
    Field("batchQueue", "string", Job.batch_queue),
    Field("charge", "float", cast(literal(0.0), Float)),
    Field("created", "date", Job.created),
    Field("endTime", "date", Job.end_time),
    Field("errorMessage", "string", Job.message),
    Field("executionSystem", "string", Job.execution_system),
    Field("id", "string", Job.id, folded=True),
    Field("inputs", "json", cast(Job.inputs, Text)),
    Field("lastModified", "date", Job.last_updated),
    Field("lastUpdated", "date", Job.last_updated),
    Field("localId", "string", Job.local_id),
    Field("maxRunTime", "seconds", MAX_RUN_SECONDS),
    Field("memoryPerNode", "float", Job.memory_per_node),
    Field("name", "string", Job.name),
    Field("nodeCount", "int", Job.node_count),
    Field("outputPath", "string", Job.work_path),
    Field("owner", "string", Job.owner),
    Field("parameters", "json", cast(Job.parameters, Text)),
    Field("processorsPerNode", "int", Job.processors_per_node),
    Field("retries", "int", Job.retries),
    Field("runtime", "seconds", _seconds_between(Job.end_time, Job.start_time)),
    Field("startTime", "date", Job.start_time),
    Field("status", "status", Job.status, folded=True),
    Field("submitTime", "date", Job.submit_time),
    Field("visible", "bool", Job.visible),
    Field("walltime", "seconds", _seconds_between(Job.end_time, Job.created)),
)
HISTORY_FIELDS: tuple[Field, ...] = (
    Field("status", "string", JobEvent.status),
    Field("created", "date", JobEvent.created),
    Field("createdBy", "string", JobEvent.created_by),
    Field("description", "string", JobEvent.description),
)


def _by_name(fields: Iterable[Field]) -> dict[str, Field]:
    return {f.name.lower(): f for f in fields}


JOB_FIELD_MAP = _by_name(JOB_FIELDS)
HISTORY_FIELD_MAP = _by_name(HISTORY_FIELDS)


# ---------------------------------------------------------------- dates

_UNITS = {
    "s": "seconds",
    "sec": "seconds",
    "secs": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "m": "minutes",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
    "w": "weeks",
    "wk": "weeks",
    "wks": "weeks",
    "week": "weeks",
    "weeks": "weeks",
    "month": "months",
    "months": "months",
    "y": "years",
    "yr": "years",
    "yrs": "years",
    "year": "years",
    "years": "years",
}
_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_WEEKDAYS.update({name.lower(): i for i, name in enumerate(calendar.day_abbr)})
_RELATIVE = re.compile(r"([+-])\s*(\d{1,6})\s*([a-z]+)|(\d{1,6})\s*([a-z]+)\s+ago|in\s+(\d{1,6})\s*([a-z]+)")
_SLASHED = re.compile(r"(\d{1,2})/(\d{1,2})(?:/(\d{4}))?")
_OFFSET_SPACE = re.compile(r"(T?\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$")  # "+00:00" whose + became a space


@dataclass(frozen=True)
class When:
    """A parsed date: an instant (``end`` None) or the calendar day ``[start, end)``."""

    start: datetime
    end: datetime | None = None

    @property
    def is_day(self) -> bool:
        return self.end is not None


def _day(d: datetime) -> When:
    start = d.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        return When(start, start + DAY)
    except OverflowError:  # the last day of year 9999
        raise ValueError("out of range") from None


def _shift(at: datetime, amount: int, unit: str) -> datetime:
    if unit in ("months", "years"):
        months = amount * (12 if unit == "years" else 1)
        total = at.year * 12 + at.month - 1 + months
        year, month = divmod(total, 12)
        if not 1 <= year <= 9999:
            raise ValueError("out of range")
        last = calendar.monthrange(year, month + 1)[1]
        return at.replace(year=year, month=month + 1, day=min(at.day, last))
    return at + timedelta(**{unit: amount})


def parse_date(value: str, now: datetime | None = None) -> When:
    """A date in ISO 8601 (a day ``2026-12-01``, or an instant with a time; no offset = UTC) or free-form, in
    any case: ``now``; the days ``today``, ``yesterday``, ``tomorrow``, ``last <weekday>`` (the latest one
    before today), ``next <weekday>`` (the first one after today), ``M/D`` (this year) and ``M/D/YYYY``; the
    instants ``-3 hours``, ``+2 days``, ``3 days ago``, ``in 2 weeks`` (units: s/sec/second, m/min/minute,
    h/hr/hour, d/day, w/week, month, y/year, also plural). Raises ``ValueError``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    text = " ".join(value.strip().lower().split())
    if not text:
        raise ValueError("empty")
    if text == "now":
        return When(now)
    if text in ("today", "yesterday", "tomorrow"):
        return _day(now + {"today": 0, "yesterday": -1, "tomorrow": 1}[text] * DAY)
    words = text.split(" ")
    if len(words) == 2 and words[0] in ("last", "next") and words[1] in _WEEKDAYS:
        target, today = _WEEKDAYS[words[1]], now.weekday()
        delta = -((today - target) % 7 or 7) if words[0] == "last" else (target - today) % 7 or 7
        return _day(now + delta * DAY)
    m = _RELATIVE.fullmatch(text)
    if m:
        if m.group(1):
            amount, unit = int(m.group(2)) * (-1 if m.group(1) == "-" else 1), m.group(3)
        elif m.group(4):
            amount, unit = -int(m.group(4)), m.group(5)
        else:
            amount, unit = int(m.group(6)), m.group(7)
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit}")
        try:
            return When(_shift(now, amount, _UNITS[unit]))
        except OverflowError:
            raise ValueError("out of range") from None
    m = _SLASHED.fullmatch(text)
    if m:
        month, day, year = int(m.group(1)), int(m.group(2)), int(m.group(3) or now.year)
        return _day(datetime(year, month, day, tzinfo=UTC))
    iso = _OFFSET_SPACE.sub(r"\1+\2", value.strip())
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", iso):
        return _day(datetime.fromisoformat(iso).replace(tzinfo=UTC))
    if not re.match(r"\d{4}-\d{2}-\d{2}[T ]\d", iso, re.IGNORECASE):
        raise ValueError("not a date")
    at = datetime.fromisoformat(iso.replace("z", "Z"))
    return When(at if at.tzinfo is not None else at.replace(tzinfo=UTC))


# ---------------------------------------------------------------- terms


@dataclass(frozen=True)
class Term:
    field: Field
    op: str
    value: str

    @property
    def label(self) -> str:
        return f"{self.field.name}.{self.op}={self.value[:80]}"


@dataclass
class Search:
    """Compiled terms: ``where`` to AND into the query, ``order`` (None: the caller's default), and the names
    of the fields the terms used (``visible`` matters to admins: ``airjobs.store.list_jobs``)."""

    where: list[ColumnElement[bool]] = field(default_factory=list)
    order: list[UnaryExpression[Any]] | None = None
    fields: set[str] = field(default_factory=set)

    def order_by(self, default: list[UnaryExpression[Any]]) -> list[UnaryExpression[Any]]:
        return self.order if self.order is not None else default


def _bad(term: Term, why: str) -> BadRequest:
    return BadRequest(f"Invalid search term {term.label}: {why}.")


def _like_pattern(value: str) -> str:
    """Agave's ``*`` (and SQL's ``%``) as the wildcard; every other character, ``_`` and ``\\`` included, literal."""
    out = []
    for ch in value:
        if ch in "*%":
            out.append("%")
        elif ch in "_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _number(term: Term, raw: str) -> int | float:
    text = raw.strip()
    kind = term.field.kind
    try:
        if kind == "int":
            return int(text)
        if kind == "seconds" and ":" in text:
            return hms_to_seconds(text)
        number = float(text)
    except ValueError:
        raise _bad(term, f"{raw[:40]!r} is not {KIND_NAMES[kind]}") from None
    if not math.isfinite(number):
        raise _bad(term, f"{raw[:40]!r} is not {KIND_NAMES[kind]}")
    return int(number) if number.is_integer() and kind == "seconds" else number


def _values(term: Term) -> list[str]:
    if term.op in ("in", "nin", "between"):
        values = [v.strip() for v in term.value.split(",")]
        if term.op == "between" and len(values) != 2:
            raise _bad(term, "between takes two comma-separated values, low,high")
        if len(values) > MAX_LIST:
            raise _bad(term, f"at most {MAX_LIST} values")
        return values
    return [term.value.strip() if term.field.kind not in ("string", "json") else term.value]


def _compare(term: Term, col: Column, values: list[Any]) -> ColumnElement[bool]:
    """eq/neq/lt/lte/gt/gte/in/nin/between on plain (already converted) values."""
    op = term.op
    if op in ("eq", "in"):
        return col == values[0] if op == "eq" else col.in_(values)
    if op in ("neq", "nin"):
        return col != values[0] if op == "neq" else col.not_in(values)
    if op == "between":
        return and_(col >= values[0], col <= values[1])
    if op == "gte":
        return and_(col >= values[0])
    bound: ColumnElement[bool] = col < values[0] if op == "lt" else col <= values[0] if op == "lte" else col > values[0]
    return bound


def _date_condition(term: Term, col: Column, now: datetime) -> ColumnElement[bool]:
    whens = []
    for raw in _values(term):
        try:
            whens.append(parse_date(raw, now))
        except (ValueError, OverflowError):
            raise _bad(term, f"{raw[:40]!r} is not a date (ISO 8601, or e.g. today, yesterday, -3 hours)") from None

    def within(w: When) -> ColumnElement[bool]:
        return and_(col >= w.start, col < w.end) if w.end is not None else col == w.start

    def until(w: When) -> ColumnElement[bool]:  # up to the end of w
        return col < w.end if w.end is not None else col <= w.start

    op, w = term.op, whens[0]
    if op == "eq":
        return within(w)
    if op == "neq":
        return not_(within(w))
    if op in ("in", "nin"):
        any_of = or_(*(within(x) for x in whens))
        return any_of if op == "in" else not_(any_of)
    if op == "on":
        try:
            return within(_day(w.start))
        except ValueError:
            raise _bad(term, "the day after it is out of range") from None
    if op in ("lt", "before"):
        return col < w.start
    if op == "lte":
        return until(w)
    if op in ("gt", "after"):
        return col >= w.end if w.end is not None else col > w.start
    if op == "gte":
        return col >= w.start
    return and_(col >= w.start, until(whens[1]))  # between


def _text_condition(term: Term, col: Column) -> ColumnElement[bool]:
    """Strings, JSON text and statuses, case-insensitively."""
    f, op = term.field, term.op
    status = f.kind == "status"
    if not f.folded:
        col = func.lower(col)
    fold: Callable[[str], str] = str.upper if status else str.lower
    values = _values(term)
    if op == "rlike":
        if len(values[0]) > MAX_VALUE // 4:
            raise _bad(term, f"a regular expression of at most {MAX_VALUE // 4} characters")
        try:
            re.compile(values[0])
        except re.error as exc:
            raise _bad(term, f"not a regular expression ({exc})") from None
        return col.regexp_match(values[0], flags="i")
    if status and op in ("eq", "neq", "in", "nin"):
        if any("*" in v or "%" in v for v in values):  # status=*ING: a pattern
            pats = [col.like(_like_pattern(fold(v)), escape="\\") for v in values]
            any_of = or_(*pats)
            return any_of if op in ("eq", "in") else not_(any_of)
        for v in values:
            if fold(v) not in STATUSES:
                raise _bad(term, f"{v[:40]!r} is not a job status ({', '.join(sorted(STATUSES))})")
    if op in ("like", "nlike"):
        pattern = col.like(_like_pattern(fold(values[0])), escape="\\")
        return pattern if op == "like" else not_(pattern)
    folded = [fold(v) for v in values]
    if op in ("lt", "lte", "gt", "gte", "between"):
        col = col.collate("C")  # code point order, whatever the database's collation
    return _compare(term, col, folded)


def condition(term: Term, now: datetime | None = None) -> ColumnElement[bool]:
    """The SQL condition of one term; raises ``BadRequest`` for a value the field does not take."""
    f = term.field
    if len(term.value) > MAX_VALUE:
        raise _bad(term, f"a value of at most {MAX_VALUE} characters")
    if f.kind == "date":
        return _date_condition(term, f.column, now or datetime.now(UTC))
    if f.kind in ("string", "json", "status"):
        return _text_condition(term, f.column)
    if f.kind == "bool":
        raw = term.value.strip().lower()
        if raw not in TRUE + FALSE:
            raise _bad(term, f"{term.value[:40]!r} is not true or false")
        return _compare(term, f.column, [raw in TRUE])
    return _compare(term, f.column, [_number(term, v) for v in _values(term)])


def _term(key: str, value: str, fields: Mapping[str, Field], what: str) -> Term:
    name, op = key.lower(), "eq"
    if name not in fields and "." in name:
        name, op = name.rsplit(".", 1)
        if name in fields and op not in OPERATORS:
            raise BadRequest(f"Unknown search operator {op!r} in {key[:80]}. Valid operators: {', '.join(OPERATORS)}.")
    f = fields.get(name)
    if f is None:
        valid = ", ".join(x.name for x in fields.values())
        raise BadRequest(f"Unknown search field {key[:80]!r}. Valid {what} search fields: {valid}.")
    if op not in KIND_OPS[f.kind]:
        raise BadRequest(
            f"Search operator {op!r} does not apply to {f.name} ({KIND_NAMES[f.kind]}). "
            f"Valid operators for {f.name}: {', '.join(KIND_OPS[f.kind])}."
        )
    return Term(f, op, value)


def _order(
    params: list[tuple[str, str]], fields: Mapping[str, Field], default_desc: bool
) -> tuple[Field | None, bool | None]:
    by: Field | None = None
    desc: bool | None = None
    for key, value in params:
        k = key.lower()
        if k == "order":  # an empty one too is no ASC or DESC: a 400, not silently the default
            v = value.strip().lower()
            if v not in ("asc", "desc"):
                raise BadRequest(f"Invalid value for order {value[:40]!r}. Valid values are ASC and DESC.")
            desc = v == "desc"
        elif k == "orderby":
            by = fields.get(value.strip().lower())
            if by is None:
                valid = ", ".join(x.name for x in fields.values())
                raise BadRequest(f"Invalid value for orderBy {value[:40]!r}. Valid fields: {valid}.")
    return by, desc


def parse(
    params: Iterable[tuple[str, str]],
    fields: Mapping[str, Field] = JOB_FIELD_MAP,
    *,
    now: datetime | None = None,
    what: str = "job",
) -> tuple[list[Term], Field | None, bool | None]:
    """The terms of a query string (its (key, value) pairs, in order), and its orderBy field and order
    (True: DESC), each None when not given."""
    pairs = list(params)
    terms = [_term(k, v, fields, what) for k, v in pairs if k.lower() not in RESERVED]
    by, desc = _order(pairs, fields, True)
    return terms, by, desc


def compile_search(
    params: Iterable[tuple[str, str]],
    fields: Mapping[str, Field],
    id_column: Column,
    *,
    default_desc: bool,
    now: datetime | None = None,
    what: str = "job",
) -> Search:
    terms, by, desc = parse(params, fields, now=now, what=what)
    out = Search(where=[condition(t, now) for t in terms], fields={t.field.name for t in terms})
    if by is not None or desc is not None:
        descending = default_desc if desc is None else desc
        col = by.column if by is not None else fields["created"].column
        out.order = [col.desc(), id_column.desc()] if descending else [col.asc(), id_column.asc()]
    return out


def job_search(params: Iterable[tuple[str, str]], *, now: datetime | None = None) -> Search:
    """``GET /jobs/v2?...``: order DESC unless ``order`` says otherwise, by ``orderBy`` or created."""
    return compile_search(params, JOB_FIELD_MAP, Job.id, default_desc=True, now=now, what="job")


def history_search(params: Iterable[tuple[str, str]], *, now: datetime | None = None) -> Search:
    """``GET /jobs/v2/{id}/history?...``: order ASC (oldest first) unless ``order`` says otherwise."""
    return compile_search(params, HISTORY_FIELD_MAP, JobEvent.id, default_desc=False, now=now, what="history")
