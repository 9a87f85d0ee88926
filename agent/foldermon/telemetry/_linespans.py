"""Where a file's ``foldermon.line`` and ``foldermon.processor`` spans are made: straight into
the span processor.

A line span is known whole once its line has run (its number, start, end and one event per
processor step), and a processor span once its file has (its processor's summed time), so each
is built as the finished span it would become and handed to the span processor, without the
SDK's live Span object (its lock, per-call attribute limits and checks cost two to three times
as much as the span itself). On the wire it is the same span. The step events' attributes
repeat from line to line, so each is built once per file and shared.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import Attributes

LINE_SPAN = "foldermon.line"
STEP_EVENT = "foldermon.processor.step"
_UNSET = Status(StatusCode.UNSET)


def step_attributes(processor_id: str, processor_type: str, result: str, *, held: bool = False) -> Attributes:
    """The attributes of one step event, immutable so that many events can share them. ``held``:
    nothing came out of the processor for the line then, but it may emit it (or what it made of
    it) later, as ``line_joiner`` does with a line it holds for the next."""
    attributes: dict[str, str | bool] = {
        "foldermon.processor.id": processor_id,
        "foldermon.processor.type": processor_type,
        "foldermon.line.result": result,
    }
    if held:
        attributes["foldermon.line.held"] = True
    return BoundedAttributes(attributes=attributes, immutable=True)


class LineSpans:
    """Makes line spans for the tracer's provider; ``tracer`` makes the rarer ERROR line span,
    which records its exception the SDK's way. With no span processor (traces not exported)
    nothing is made."""

    def __init__(
        self,
        tracer: Tracer,
        processor: SpanProcessor | None,
        resource: Resource,
        scope: InstrumentationScope,
        ids: IdGenerator,
    ) -> None:
        self.tracer = tracer
        self._processor = processor
        self._resource = resource
        self._scope = scope
        self._ids = ids

    def emit(self, parent: SpanContext, number: int, start_ns: int, steps: Sequence[Attributes]) -> None:
        """An ended line span under ``parent`` (the file span) for line ``number``, one step
        event per attributes in ``steps``."""
        end_ns = time.time_ns()
        events = [Event(STEP_EVENT, attributes, end_ns) for attributes in steps]
        self.finished(LINE_SPAN, parent, {"foldermon.line.number": number}, start_ns, end_ns, events)

    def finished(  # noqa: PLR0917 - the parts of a span
        self,
        name: str,
        parent: SpanContext,
        attributes: Mapping[str, Any],
        start_ns: int,
        end_ns: int,
        events: Sequence[Event] = (),
        status: Status = _UNSET,
    ) -> None:
        """An ended span ``name`` under ``parent``; like the SDK, only under a sampled parent
        (the sampler samples a file span's children with it)."""
        if self._processor is None or not parent.trace_flags.sampled:
            return
        context = SpanContext(
            parent.trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )
        span = ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=events,
            kind=SpanKind.INTERNAL,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=self._scope,
        )
        self._processor.on_end(span)
