"""Moving usage events from the gateway into the ledger without losing or double-counting any.

Two ways in, one guarantee:

* ``DirectSink`` (embedded mode) batches events in memory and writes them into the ledger from a
  background task; when the store is down, batches go to a local disk ``Spool`` and are replayed
  when it works again.
* ``RedisStreamSink`` (shared mode) batches events into Redis stream entries (up to
  ``entry_events`` events per entry, as :mod:`billing.usagerow` text, pipelined); when Redis is
  down, batches go to the spool and are replayed when Redis is back. ``LedgerConsumer`` reads
  the stream in a consumer group, checks every row, hands the checked text to the ledger
  (``record_rows``: PostgreSQL ``COPY``s it as it is) and acknowledges an entry only after the
  ledger committed its events.

Every hop is at-least-once (a replay, a retried pipeline, a re-read pending entry may deliver an
event twice); exactly-once comes from the ledger, whose ``record`` inserts each ``event_id`` once
and reports how many were new. This package never imports ``gateway``.

- :mod:`~billing.transport.codec`: events as JSON (the spool's lines) and stream entries;
- :mod:`~billing.transport.spool`: the disk spool;
- :mod:`~billing.transport.sinks`: ``DirectSink`` and ``RedisStreamSink``;
- :mod:`~billing.transport.consumer`: ``LedgerConsumer``.
"""

from billing.transport.codec import (
    DEFAULT_STREAM,
    FORMAT_VERSION,
    MAX_ENTRY_BYTES,
    MAX_ENTRY_EVENTS,
    DecodeError,
    decode_event,
    decode_events,
    encode_event,
    encode_events,
    event_from_dict,
    event_to_dict,
)
from billing.transport.consumer import ConsumerStats, LedgerConsumer, RowLedgerLike
from billing.transport.sinks import DirectSink, LedgerLike, RedisStreamSink, SinkStats
from billing.transport.spool import Spool, SpoolError, SpoolFull, SpoolStats

__all__ = [
    "DEFAULT_STREAM",
    "FORMAT_VERSION",
    "MAX_ENTRY_BYTES",
    "MAX_ENTRY_EVENTS",
    "ConsumerStats",
    "DecodeError",
    "DirectSink",
    "LedgerConsumer",
    "LedgerLike",
    "RedisStreamSink",
    "RowLedgerLike",
    "SinkStats",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "SpoolStats",
    "decode_event",
    "decode_events",
    "encode_event",
    "encode_events",
    "event_from_dict",
    "event_to_dict",
]
