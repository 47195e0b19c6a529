"""OpenTelemetry: a span per request (middleware) and per SQL statement (engine events).

Off by default; STABLEGATE_OTEL_EXPORTER=console|otlp turns it on (otlp reads the standard
OTEL_EXPORTER_OTLP_* variables)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from sqlalchemy import event
from sqlalchemy.engine import Engine

tracer = trace.get_tracer("stablegate")
_configured = False
MAX_STATEMENT_CHARS = 2000


def configure(exporter: str, service_name: str, span_exporter: SpanExporter | None = None) -> None:
    """Install a tracer provider once per process. `span_exporter` lets tests capture spans."""
    global _configured
    if _configured or (exporter == "none" and span_exporter is None):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if span_exporter is None:
        span_exporter = _exporter(exporter)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _configured = True


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ValueError(f"unknown STABLEGATE_OTEL_EXPORTER: {name!r} (none, console or otlp)")


@contextmanager
def sql_span(statement: str) -> Iterator[None]:
    """A client span for a statement sent on the driver connection directly."""
    if not trace.get_current_span().is_recording():
        yield
        return
    name = "sql " + statement.split(None, 1)[0].upper()
    attributes = {"db.system": "postgresql", "db.statement": statement[:MAX_STATEMENT_CHARS]}
    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes):
        yield


@contextmanager
def span(name: str, **attributes: str | int | float | bool) -> Iterator[None]:
    """An internal span for a unit of background work (a follower range, a job step)."""
    with tracer.start_as_current_span(name, attributes=attributes):
        yield


def instrument_engine(engine: Engine) -> None:
    """A client span for each statement; the text is kept, parameters never are."""

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if not trace.get_current_span().is_recording():
            return
        span = tracer.start_span(
            "sql " + statement.split(None, 1)[0].upper() if statement else "sql",
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": statement[:MAX_STATEMENT_CHARS]},
        )
        conn.info.setdefault("_otel_spans", []).append(span)

    @event.listens_for(engine, "after_cursor_execute")
    def _end(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        spans = conn.info.get("_otel_spans")
        if spans:
            spans.pop().end()

    @event.listens_for(engine, "handle_error")
    def _error(context: Any) -> None:
        spans = context.connection.info.get("_otel_spans") if context.connection is not None else None
        if spans:
            span = spans.pop()
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(context.original_exception)[:200]))
            span.end()
