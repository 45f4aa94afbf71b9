"""Local calendar days in SQL. Stored times are UTC; reports and the dashboard group by the
call centre's day (the ``timezone`` setting). PostgreSQL converts with its own time-zone
database; SQLite has none, so the offsets the zone has over the period are computed in
Python and applied per span."""

from __future__ import annotations

from datetime import datetime, tzinfo

from sqlalchemy import case, func, literal
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..timeutil import offset_spans


def local_date(session: Session, column, tz: tzinfo, since: datetime, until: datetime) -> ColumnElement[str]:
    """``YYYY-MM-DD`` of ``column`` (a UTC time) on the clock of ``tz``, exact for values in
    ``[since, until)``; the same text on both backends."""
    name = getattr(tz, "key", None)
    if session.get_bind().dialect.name == "postgresql" and name:
        return func.to_char(func.timezone(literal(name), column), literal("YYYY-MM-DD"))
    spans = offset_spans(tz, since, until)

    def shifted(seconds: int) -> ColumnElement[str]:
        return func.date(column, literal(f"{seconds:+d} seconds"))

    if len(spans) == 1:
        return shifted(spans[0].offset_seconds)
    return case(*[(column < span.end, shifted(span.offset_seconds)) for span in spans[:-1]],
                else_=shifted(spans[-1].offset_seconds))
