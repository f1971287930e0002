"""The usage row: the text form usage events travel in (Redis stream) and load from (COPY).

Specification: what encode_row writes, check_rows accepts and row_to_event reads back
unchanged; check_rows refuses anything else with a RowError (never another exception), so a
forged or damaged stream entry cannot reach COPY; the ledger records rows exactly once on both
backends, and on PostgreSQL its high-water mark is never passed by a writer already in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.ledger import Ledger
from billing.model import UsageEvent, UsageKind
from billing.usagerow import (
    COLUMNS,
    RowError,
    check_rows,
    encode_row,
    encode_rows,
    row_to_event,
    row_values,
)
from tenants.db import Database

T0 = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


def event(seq: int = 0, **kw: object) -> UsageEvent:
    fields: dict[str, object] = {
        "event_id": UsageEvent.make_id("sess-1", seq),
        "session_id": "sess-1",
        "seq": seq,
        "tenant": "met-police",
        "principal": "officer-7",
        "camera": "cam-12",
        "camera_owner": "council",
        "kind": UsageKind.LIVE,
        "protocol": "rtsp",
        "variant": "masked",
        "start": T0 + timedelta(seconds=5 * seq),
        "end": T0 + timedelta(seconds=5 * seq + 5),
        "duration_ms": 5000,
        "bytes_sent": 2_500_000,
        "final": False,
    }
    fields.update(kw)
    return UsageEvent(**fields)  # type: ignore[arg-type]


def test_a_row_is_copy_text_in_ledger_column_order() -> None:
    row = encode_row(event(final=True))
    assert row.split("\t") == [
        UsageEvent.make_id("sess-1", 0),
        "sess-1",
        "0",
        "met-police",
        "officer-7",
        "cam-12",
        "council",
        "live",
        "rtsp",
        "masked",
        "2026-11-03T09:30:00.000000Z",
        "2026-11-03T09:30:05.000000Z",
        "5000",
        "2500000",
        "1",
    ]
    assert len(COLUMNS) == 15


def test_round_trip_through_check_and_decode() -> None:
    events = [event(i, kind=k) for i, k in enumerate(UsageKind)]
    rows = check_rows(encode_rows(events))
    assert [row_to_event(r) for r in rows] == events


def test_times_in_other_zones_are_written_in_utc() -> None:
    bst = datetime(2026, 6, 1, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    row = encode_row(event(start=bst, end=bst + timedelta(seconds=5)))
    assert "\t2026-06-01T10:00:00.000000Z\t2026-06-01T10:00:05.000000Z\t" in row


def test_separators_and_backslashes_in_text_are_escaped() -> None:
    e = event(principal="a\tb\nc\\d\re", session_id="s\\N")
    row = encode_row(e)
    assert "\n" not in row and row.count("\t") == 14
    assert row_to_event(check_rows(row)[0]) == e


def test_null_principal_and_the_text_backslash_n_are_different() -> None:
    none, text = event(principal=None), event(1, principal="\\N")
    rows = check_rows(encode_rows([none, text]))
    assert row_values(rows[0])[4] is None
    assert row_values(rows[1])[4] == "\\N"


def test_nul_cannot_be_stored_by_postgresql_so_it_becomes_a_replacement_character() -> None:
    row = encode_row(event(principal="x\x00y"))
    assert row_to_event(check_rows(row)[0]).principal == "x\ufffdy"


GOOD = encode_row(event())


def _with_field(i: int, value: str) -> str:
    fields = GOOD.split("\t")
    fields[i] = value
    return "\t".join(fields)


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("", "empty line"),
        (GOOD + "\n", "a trailing newline is an empty row"),
        (GOOD + "\textra", "16 fields"),
        (GOOD.rsplit("\t", 1)[0], "14 fields"),
        (_with_field(0, ""), "empty event id"),
        (_with_field(2, "-1"), "negative seq"),
        (_with_field(12, "-5000"), "negative duration"),
        (_with_field(13, "1" * 19), "bytes beyond BIGINT"),
        (_with_field(13, "1e6"), "not an integer"),
        (_with_field(13, "007"), "leading zeros"),
        (_with_field(7, "LIVE"), "unknown kind"),
        (_with_field(14, "2"), "final must be 0 or 1"),
        (_with_field(10, "2026-13-01T00:00:00.000000Z"), "month 13"),
        (_with_field(10, "2026-02-30T00:00:00.000000Z"), "30 February"),
        (_with_field(10, "2026-11-03T09:30:00Z"), "no microseconds"),
        (_with_field(10, "2026-11-03T09:30:00.000000+00:00"), "offset instead of Z"),
        (_with_field(11, "2026-11-03T09:29:59.999999Z"), "ends before it starts"),
        (_with_field(1, "a\\x"), "an escape COPY would read differently"),
        (_with_field(1, "trailing\\"), "a lone backslash"),
        (_with_field(1, "nul\x00"), "NUL"),
        (_with_field(1, "cr\r"), "a raw carriage return"),
        (_with_field(3, "\\N"), "NULL where a tenant is required"),
    ],
)
def test_hostile_rows_are_refused(row: str, why: str) -> None:
    with pytest.raises(RowError):
        check_rows(row)


def test_one_bad_row_refuses_the_block_and_names_it() -> None:
    block = "\n".join([GOOD, GOOD, _with_field(7, "nope")])
    with pytest.raises(RowError, match="row 3"):
        check_rows(block)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_fuzz_check_rows_accepts_or_raises_row_error(text: str) -> None:
    try:
        rows = check_rows(text)
    except RowError:
        return
    for row in rows:  # anything accepted decodes and re-encodes to itself
        assert encode_row(row_to_event(row)) == row


_names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    ident=_names.filter(bool),
    principal=st.none() | _names,
    protocol=_names,
    kind=st.sampled_from(list(UsageKind)),
    start_us=st.integers(0, 10**15),
    length_us=st.integers(0, 10**10),
    n=st.integers(0, 10**18 - 1),
)
def test_fuzz_any_event_round_trips(
    ident: str,
    principal: str | None,
    protocol: str,
    kind: UsageKind,
    start_us: int,
    length_us: int,
    n: int,
) -> None:
    start = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=start_us)
    e = UsageEvent(
        event_id=ident,
        session_id=ident,
        seq=n,
        tenant=ident,
        principal=principal,
        camera=ident,
        camera_owner=ident,
        kind=kind,
        protocol=protocol,
        variant=protocol,
        start=start,
        end=start + timedelta(microseconds=length_us),
        duration_ms=n,
        bytes_sent=n,
        final=bool(n % 2),
    )
    assert [row_to_event(r) for r in check_rows(encode_row(e))] == [e]


# -- the ledger


@pytest.fixture
def ledger(db: Database) -> Iterator[Ledger]:
    yield Ledger(db)


def test_record_rows_is_exactly_once_and_matches_record(ledger: Ledger) -> None:
    events = [event(i) for i in range(10)]
    rows = [encode_row(e) for e in events]
    assert ledger.record_rows(rows[:6]) == 6
    # A redelivered batch overlapping what is stored (on PostgreSQL the straight COPY fails
    # and the staging path takes over): only the new ones count, nothing twice.
    assert ledger.record_rows(rows[3:] + rows[3:5]) == 4
    assert ledger.record_rows(rows) == 0
    assert ledger.record(events) == 0
    assert ledger.count() == 10
    usage = ledger.usage("met-police", "2026-11")
    assert sum(usage.values()) == 10 * 5000 + 10 * 2_500_000


def test_rows_and_events_store_the_same_thing(db: Database) -> None:
    ledger = Ledger(db)
    a = [event(i, session_id="a", event_id=f"a{i}") for i in range(3)]
    b = [event(i, session_id="b", event_id=f"b{i}", principal=None) for i in range(3)]
    ledger.record(a)
    ledger.record_rows([encode_row(e) for e in b])
    stored = db.query(
        "SELECT session_id, principal, start_at, end_at, duration_ms, bytes_sent, final"
        " FROM usage_events ORDER BY event_id"
    )
    assert [r[0] for r in stored] == ["a"] * 3 + ["b"] * 3
    assert [r[1] for r in stored] == ["officer-7"] * 3 + [None] * 3
    assert stored[0][2:] == stored[3][2:]


def test_high_water_waits_for_a_writer_in_flight(db_url: str) -> None:
    """A writer stamps its rows before it commits. An invoice run that read the mark while the
    writer was in flight, and then missed the writer's rows, would never bill them (they would
    be 'before the mark' yet not in the invoice). So the mark waits for the writer."""
    if not db_url.startswith("postgres"):
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE")
    writer_db, reader_db, watch_db = (Database.open(db_url) for _ in range(3))
    try:
        writer, reader = Ledger(writer_db), Ledger(reader_db)
        writer.record([event(0)])
        stamped, release = threading.Event(), threading.Event()

        def write() -> None:
            with writer_db.transaction():  # record() joins it: commit waits for `release`
                writer.record([event(1)])
                stamped.set()
                release.wait(30)

        t = threading.Thread(target=write)
        t.start()
        assert stamped.wait(30)
        marks: list[datetime | None] = []
        r = threading.Thread(target=lambda: marks.append(reader.high_water()))
        r.start()
        # The reader is queued on the table lock behind the writer (PostgreSQL says so).
        deadline = time.monotonic() + 30
        while not watch_db.query_one(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'LOCK TABLE usage_events IN SHARE MODE%'"
        )[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "high_water did not wait for the writer"
            time.sleep(0.01)
        assert not marks
        release.set()
        t.join(30)
        r.join(30)
        rows = reader_db.query("SELECT recorded_at FROM usage_events ORDER BY recorded_at")
        assert len(rows) == 2
        assert marks and marks[0] is not None
        assert marks[0].isoformat(timespec="microseconds")[:-6] + "Z" == rows[-1][0]
    finally:
        for d in (writer_db, reader_db, watch_db):
            d.close()


def _at_once(ledgers: list[Ledger], batches: list[list[str]]) -> list[int | BaseException]:
    """record_rows on every ledger in its own thread, released together; results in order."""
    results: list[int | BaseException] = [RuntimeError("did not finish")] * len(ledgers)
    barrier = threading.Barrier(len(ledgers))

    def write(i: int) -> None:
        barrier.wait(30)
        try:
            results[i] = ledgers[i].record_rows(batches[i])
        except BaseException as exc:  # returned, not lost in the thread
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(ledgers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_overlapping_batches_written_at_once_count_each_event_once(db_url: str) -> None:
    """Two consumers recording the same events at the same moment (an entry claimed from a
    consumer that was only slow), in opposite orders: neither fails, nothing counts twice."""
    if not db_url.startswith("postgres"):
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE")
    dbs = [Database.open(db_url) for _ in range(2)]
    try:
        ledgers = [Ledger(d) for d in dbs]
        for round_no in range(5):
            session = f"race-{round_no}"
            rows = [
                encode_row(event(i, session_id=session, event_id=UsageEvent.make_id(session, i)))
                for i in range(2000)
            ]
            results = _at_once(ledgers, [rows, rows[::-1]])
            assert all(isinstance(r, int) for r in results), results
            assert sorted(r for r in results if isinstance(r, int)) == [0, 2000]
        assert ledgers[0].count() == 5 * 2000
    finally:
        for d in dbs:
            d.close()
