"""The store contract, run on both stores: what the engine and the API rely on, whichever
holds the data (SQLite file, PostgreSQL server)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from tests.pgserver import PgServer
from workflowd.clock import utcnow
from workflowd.codec import encode
from workflowd.errors import StoreError, StoreUnavailableError, WorkflowConflictError
from workflowd.records import Event, ExecutionRecord, IdempotencyRecord, Progress, StepRecord
from workflowd.store import (
    Delivery,
    ExecutionFilter,
    SQLiteStore,
    StaleWriteError,
    Store,
    StoreClosedError,
    Write,
)
from workflowd.store.artifacts import ArtifactRow
from workflowd.store.definitions import DefinitionHead, StoredVersion
from workflowd.store.pgschema import MIGRATIONS as PG_MIGRATIONS
from workflowd.store.schema import MIGRATIONS


class Opener:
    """Opens the store of one kind at one place, as often as a test asks."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.where = where

    async def open(self) -> Store:
        if self.kind == "sqlite":
            return await SQLiteStore.open(self.where)
        from workflowd.store.postgres import PostgresStore

        return await PostgresStore.open(self.where, node_id="node-a", lease_seconds=30)

    async def sql(self, statement: str, database: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of the test's own (PostgreSQL: to `database`
        on the same server, if given)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.where, isolation_level=None)
            try:
                return [tuple(row) for row in conn.execute(statement).fetchall()]
            finally:
                conn.close()
        import asyncpg

        url = self.where if database is None else self.where.rsplit("/", 1)[0] + f"/{database}"
        pg = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await pg.fetch(statement)]
        finally:
            await pg.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    if request.param == "sqlite":
        yield Opener("sqlite", str(tmp_path / "s.db"))
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = await server.database()
    try:
        yield Opener("postgres", url)
    finally:
        await server.drop(url)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[Store]:
    opened = await opener.open()
    try:
        yield opened
    finally:
        await opened.close()


def _record(n: int, seq: int = 1, **changes: Any) -> ExecutionRecord:
    now = utcnow()
    rec = ExecutionRecord(execution_id=f"e{n}", workflow_id="wf", workflow_version=1,
                          status="queued", input={}, max_cycles=5,
                          progress=Progress(total_steps=1), created_at=now, updated_at=now,
                          seq=seq)
    return replace(rec, **changes) if changes else rec


def _event(n: int, seq: int, type_: str = "workflow_queued") -> Event:
    return Event(f"e{n}", seq, type_,
                 encode({"seq": seq, "type": type_, "execution_id": f"e{n}"}))


def _write(n: int, seq: int = 1, base: int | None = None, **changes: Any) -> Write:
    """Record `e{n}` at `seq` with its event `seq`; a first write leases it to this node
    (PostgreSQL: later writes of it need the lease)."""
    base_seq = seq - 1 if base is None else base
    return Write.of(_record(n, seq, **changes), [_event(n, seq)], base_seq=base_seq,
                    claim=base_seq == 0)


async def test_reopen_keeps_data_and_migrates_once(opener: Opener) -> None:
    """Reopening keeps the data and runs no migration twice."""
    store = await opener.open()
    await store.commit(_write(1))
    await store.close()
    store = await opener.open()
    try:
        assert (await store.get_execution("e1")) is not None
    finally:
        await store.close()
    versions = await opener.sql("SELECT version FROM schema_version ORDER BY version")
    assert [row[0] for row in versions] == list(range(1, len(MIGRATIONS) + 1))


def test_both_stores_have_every_schema_version() -> None:
    """A migration added to one store has its counterpart in the other."""
    assert len(PG_MIGRATIONS) == len(MIGRATIONS)


async def test_a_newer_schema_is_refused(opener: Opener) -> None:
    """A store whose schema is newer than this code is refused at open, changing nothing."""
    store = await opener.open()
    await store.close()
    await opener.sql(f"INSERT INTO schema_version VALUES ({len(MIGRATIONS) + 1})")
    with pytest.raises(StoreError, match="newer"):
        await opener.open()
    assert (await opener.sql("SELECT MAX(version) FROM schema_version"))[0][0] == \
        len(MIGRATIONS) + 1


async def test_concurrent_writes_share_commits(store: Store) -> None:
    """Writes queued together commit in fewer transactions than writes (group commit)."""
    await asyncio.gather(*(store.commit(_write(n)) for n in range(200)))
    assert store.writer.writes == 200
    assert store.writer.commits < 200
    assert len(await store.events("e199")) == 1


async def test_a_bad_write_fails_alone(store: Store) -> None:
    """A write that breaks a constraint fails its own future; its batch neighbours commit."""
    await store.commit(_write(1))
    clash = Write.of(_record(1, 2), [_event(1, 1)], base_seq=1)  # seq 1 of e1 exists already
    results = await asyncio.gather(store.commit(_write(2)), store.commit(clash),
                                   store.commit(_write(3)), return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], Exception)
    assert results[2] is None
    assert await store.get_execution("e2") is not None
    assert await store.get_execution("e3") is not None
    assert (await store.get_execution("e1")).seq == 1  # type: ignore[union-attr]


async def test_a_write_built_on_a_failed_one_is_stale(store: Store) -> None:
    """After a failed write, a later one built on it is refused; one built on the last
    committed record goes in: no gap in the events."""
    await store.commit(_write(1))
    bad = Write.of(_record(1, 2), [_event(1, 1)], base_seq=1)
    after_bad = _write(1, 3)  # built on seq 2, which failed
    results = await asyncio.gather(store.commit(bad), store.commit(after_bad),
                                   return_exceptions=True)
    assert isinstance(results[0], Exception)
    assert isinstance(results[1], StaleWriteError)
    await store.commit(_write(1, 2))
    assert [seq for seq, _ in await store.event_rows("e1", 0, 10)] == [1, 2]


async def test_closed_store_refuses_writes(store: Store) -> None:
    """After close, a write is refused at once instead of hanging."""
    await store.close()
    with pytest.raises(StoreClosedError):
        store.write(_write(1))


async def test_an_execution_with_its_rows(store: Store) -> None:
    """Steps, events and log lines of one execution read back in order."""
    step = StepRecord(step_id="e1:1", name="a", status="running", cycle=1)
    await store.commit(Write.of(_record(1), [_event(1, 1)], [step], base_seq=0, claim=True))
    done = replace(step, status="completed")
    events = [_event(1, 2, "step_started"), _event(1, 3, "step_finished")]
    await store.commit(Write.of(_record(1, 3, status="running"), events, [done], base_seq=1,
                                logs=[("e1", '{"message": "one"}'), ("e1", '{"message": "2"}')]))
    rec = await store.get_execution("e1")
    assert rec is not None
    assert (rec.status, rec.seq) == ("running", 3)
    assert [s.status for s in await store.steps("e1")] == ["completed"]
    assert (await store.step_at("e1", 1)) == done
    assert await store.step_at("e1", 2) is None
    docs = await store.events("e1")
    assert [doc for _, doc in await store.event_rows("e1", 0, 10)] == docs
    assert docs[1] == events[0].json.decode()  # the stored text is the event's own
    assert [seq for seq, _ in await store.event_rows("e1", 1, 1)] == [2]
    logs = await store.logs("e1")
    assert [doc for _, doc in logs] == ['{"message": "one"}', '{"message": "2"}']
    assert await store.logs("e1", after=logs[0][0]) == logs[1:]
    assert await store.get_execution("nope") is None


async def test_unfinished_and_lists(store: Store) -> None:
    """`unfinished` in order of arrival; lists newest first, filtered, page by page."""
    for n in range(5):
        status = "completed" if n % 2 else "queued"
        labels = {"team": "a" if n < 3 else "b"}
        await store.commit(Write.of(_record(n, status=status, labels=labels,
                                            workflow_id="wf" if n != 4 else "other",
                                            finished_at=utcnow() if n % 2 else None),
                                    [_event(n, 1)], base_seq=0, claim=True))
    assert [r.execution_id for r in await store.unfinished()] == ["e0", "e2", "e4"]
    page, next_num = await store.list_executions(ExecutionFilter(limit=2))
    assert [r.execution_id for r in page] == ["e4", "e3"]
    assert next_num is not None
    page, next_num = await store.list_executions(ExecutionFilter(limit=2, before_num=next_num))
    assert [r.execution_id for r in page] == ["e2", "e1"]
    page, _ = await store.list_executions(ExecutionFilter(status="completed"))
    assert [r.execution_id for r in page] == ["e3", "e1"]
    page, _ = await store.list_executions(ExecutionFilter(workflow_id="other"))
    assert [r.execution_id for r in page] == ["e4"]
    page, _ = await store.list_executions(ExecutionFilter(labels=(("team", "b"),)))
    assert [r.execution_id for r in page] == ["e4", "e3"]
    first = (await store.get_execution("e0")).created_at  # type: ignore[union-attr]
    page, _ = await store.list_executions(ExecutionFilter(created_before=first))
    assert page == []
    assert await store.count_by_workflow_status() == {
        ("wf", "queued"): 2, ("wf", "completed"): 2, ("other", "queued"): 1}
    assert await store.count_by_workflow_status(["e1", "e4"]) == {
        ("wf", "completed"): 1, ("other", "queued"): 1}


async def test_idempotency_answers(store: Store) -> None:
    """An answer is kept with its change; the same key again replaces it."""
    first = IdempotencyRecord("submit", "k", "f1", 202, '{"a": 1}', "/x")
    await store.commit(Write.of(_record(1), [_event(1, 1)], base_seq=0, claim=True,
                                idempotency=first))
    assert await store.idempotency("submit", "k") == first
    again = IdempotencyRecord("submit", "k", "f2", 201, "{}", None)
    await store.commit(Write(idempotency=again))
    assert await store.idempotency("submit", "k") == again
    assert await store.idempotency("submit", "other") is None


async def test_deliveries_wait_until_sent(store: Store) -> None:
    """A delivery committed with a write is due at once; a failed attempt waits; a delivered
    one goes; one given up stays failed."""
    deliveries = [Delivery("http://127.0.0.1:9/a", "{}", {"X": "1"}),
                  Delivery("http://127.0.0.1:9/b", "[]", {})]
    await store.commit(Write.of(_record(1), [_event(1, 1)], base_seq=0, claim=True,
                                deliveries=deliveries))
    due = await store.due_deliveries("9999-01-01T00:00:00.000Z", 10)
    assert [(d.url, d.body, d.headers, attempts) for _, d, attempts in due] == [
        ("http://127.0.0.1:9/a", "{}", {"X": "1"}, 0), ("http://127.0.0.1:9/b", "[]", {}, 0)]
    (first, _, _), (second, _, _) = due
    await store.delivery_outcome(first, delivered=True, attempts=1, next_at=None, error=None)
    await store.delivery_outcome(second, delivered=False, attempts=1,
                                 next_at="9000-01-01T00:00:00.000Z", error="refused")
    assert await store.due_deliveries("8000-01-01T00:00:00.000Z", 10) == []
    assert [attempts for _, _, attempts in
            await store.due_deliveries("9999-01-01T00:00:00.000Z", 10)] == [1]
    await store.delivery_outcome(second, delivered=False, attempts=2, next_at=None,
                                 error="gave up")
    assert await store.due_deliveries("9999-01-01T00:00:00.000Z", 10) == []


async def test_retention_deletes_what_finished_before(store: Store) -> None:
    """Finished executions before the cutoff go with their rows; `on_deleted` is told."""
    await store.commit(Write.of(_record(1, status="completed",
                                        finished_at="2020-01-01T00:00:00.000Z"),
                                [_event(1, 1)], base_seq=0, claim=True,
                                logs=[("e1", "{}")]))
    await store.commit(_write(2))
    told: list[list[str]] = []
    store.on_deleted.append(lambda ids: told.append(list(ids)))
    ids = await store.finished_before("2021-01-01T00:00:00.000Z")
    assert ids == ["e1"]
    await store.delete_executions(ids, idempotency_before="2021-01-01T00:00:00.000Z")
    assert told == [["e1"]]
    assert await store.get_execution("e1") is None
    assert await store.events("e1") == []
    assert await store.logs("e1") == []
    assert await store.get_execution("e2") is not None


async def _make_unavailable(opener: Opener, store: Store) -> Any:
    """Make the store refuse writes; answers what undoes it."""
    if opener.kind == "sqlite":
        # Another program holds the file's write lock past the writer's busy timeout.
        other = sqlite3.connect(opener.where, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")

        async def undo_sqlite() -> None:
            other.execute("ROLLBACK")
            other.close()

        return undo_sqlite
    # The server is gone for this store: its writer's connection is cut and no new one is
    # let in.
    name = opener.where.rsplit("/", 1)[1]
    await opener.sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false', "postgres")
    await opener.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE datname = '{name}' AND application_name LIKE 'workflowd-writer:%'",
                     "postgres")

    async def undo_pg() -> None:
        await opener.sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true', "postgres")

    return undo_pg


async def test_unavailable_fails_the_write_and_recovers(opener: Opener, store: Store) -> None:
    """A store that refuses (locked file, server gone) fails the write with 503 and keeps
    nothing of it; a later write built on the failed one is stale; once the store is back,
    the execution goes on from its last committed record."""
    await store.commit(_write(1))
    undo = await _make_unavailable(opener, store)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.commit(_write(1, 2))
        assert not isinstance(caught.value, StaleWriteError)
        assert caught.value.status == 503
        with pytest.raises(StaleWriteError):
            await store.commit(_write(1, 3))
    finally:
        await undo()
    await store.commit(_write(1, 2))
    assert [seq for seq, _ in await store.event_rows("e1", 0, 10)] == [1, 2]


# ---- workflows defined as data --------------------------------------------------------------


async def test_definition_versions_and_delete(store: Store) -> None:
    """Versions are kept in order, the head names the latest; a delete hides the id from the
    current ones (its versions stay) and a later version undeletes it."""
    assert await store.definition_head("j") is None
    assert await store.definition_ids() == []
    await store.add_definition_version("j", 1, '{"id": "j", "v": 1}', "2026-01-01T00:00:00.000Z")
    await store.add_definition_version("k", 1, '{"id": "k"}', "2026-01-01T00:00:01.000Z")
    await store.add_definition_version("j", 2, '{"id": "j", "v": 2}', "2026-01-02T00:00:00.000Z")
    head = await store.definition_head("j")
    assert head == DefinitionHead("j", 2, "2026-01-01T00:00:00.000Z",
                                  "2026-01-02T00:00:00.000Z", None)
    assert await store.definition_version("j", 1) == StoredVersion(
        "j", 1, '{"id": "j", "v": 1}', "2026-01-01T00:00:00.000Z")
    assert await store.definition_version("j", 3) is None
    assert [v.version for v in await store.definition_versions("j")] == [1, 2]
    assert [(v.workflow_id, v.version) for v in await store.current_definitions()] == [
        ("j", 2), ("k", 1)]
    await store.delete_definition("j", "2026-01-03T00:00:00.000Z")
    head = await store.definition_head("j")
    assert head is not None
    assert (head.deleted_at, head.updated_at) == ("2026-01-03T00:00:00.000Z",) * 2
    assert [v.workflow_id for v in await store.current_definitions()] == ["k"]
    assert await store.definition_ids() == ["j", "k"]  # a deleted one's executions run on
    assert [v.version for v in await store.definition_versions("j")] == [1, 2]
    await store.add_definition_version("j", 3, '{"id": "j", "v": 3}', "2026-01-04T00:00:00.000Z")
    head = await store.definition_head("j")
    assert head is not None
    assert (head.latest, head.deleted_at, head.created_at) == (
        3, None, "2026-01-01T00:00:00.000Z")


async def test_the_same_version_stored_twice_is_a_conflict(opener: Opener,
                                                            store: Store) -> None:
    """A version stored again, or by two stores at once (two nodes), is refused with 409 for
    all but one; what is stored is the one that won."""
    await store.add_definition_version("j", 1, '{"n": 0}', utcnow())
    with pytest.raises(WorkflowConflictError) as caught:
        await store.add_definition_version("j", 1, '{"n": 1}', utcnow())
    assert caught.value.status == 409
    other = await opener.open() if opener.kind == "postgres" else store
    try:
        results = await asyncio.gather(
            store.add_definition_version("j", 2, '{"n": 2}', utcnow()),
            other.add_definition_version("j", 2, '{"n": 3}', utcnow()),
            return_exceptions=True)
    finally:
        if other is not store:
            await other.close()
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "WorkflowConflictError"]
    won = '{"n": 2}' if results[0] is None else '{"n": 3}'
    stored = await store.definition_version("j", 2)
    assert stored is not None
    assert stored.doc == won
    assert (await store.definition_head("j")).latest == 2  # type: ignore[union-attr]


# ---- artifacts --------------------------------------------------------------------------------


def _artifact(n: int, sha: str = "ab" * 32, execution_id: str | None = None,
              created_at: str = "2026-01-01T00:00:00.000Z") -> ArtifactRow:
    return ArtifactRow(f"a{n}", f"file{n}.txt", "text/plain", 10 * n, sha, created_at,
                       execution_id)


async def test_artifacts_and_their_uses(store: Store) -> None:
    """Rows read back; uses commit with a submit's write, alone, or with a saved artifact,
    each once, listed per execution in order of first use with their roles; a use of an
    artifact that does not exist records nothing."""
    await store.add_artifact(_artifact(1))
    await store.add_artifact(_artifact(2, sha="cd" * 32))
    assert await store.artifact("a1") == _artifact(1)
    assert await store.artifact("nope") is None
    assert await store.existing_artifacts(["a1", "a2", "nope", "a1"]) == {"a1", "a2"}
    assert await store.existing_artifacts([]) == set()
    submit = Write.of(_record(1), [_event(1, 1)], base_seq=0, claim=True, artifact_uses=[
        ("e1", "a2", "input", "2026-01-02T00:00:00.000Z"),
        ("e1", "a1", "input", "2026-01-02T00:00:00.000Z"),
        ("e1", "gone", "input", "2026-01-02T00:00:00.000Z")])
    await store.commit(submit)
    await store.note_artifact_use("e1", "a1", "read", "2026-01-03T00:00:00.000Z")
    await store.note_artifact_use("e1", "a1", "read", "2026-01-04T00:00:00.000Z")
    await store.note_artifact_use("e1", "gone", "read", "2026-01-04T00:00:00.000Z")
    saved = _artifact(3, execution_id="e1", created_at="2026-01-05T00:00:00.000Z")
    await store.add_artifact(saved, "output")
    await store.note_artifact_use("e1", "a3", "read", "2026-01-06T00:00:00.000Z")
    listed = await store.artifacts_of("e1")
    assert [(row.artifact_id, roles) for row, roles in listed] == [
        ("a1", ["input", "read"]), ("a2", ["input"]), ("a3", ["read", "output"])]
    assert listed[2][0] == saved
    assert await store.artifacts_of("e2") == []
    assert await store.sha256_in_use("ab" * 32)
    assert not await store.sha256_in_use("ef" * 32)


async def test_artifact_uses_commit_only_with_their_write(store: Store) -> None:
    """A write that fails keeps none of its uses; the batch's other writes keep theirs."""
    await store.add_artifact(_artifact(1))
    await store.commit(_write(1))
    clash = Write.of(_record(1, 2), [_event(1, 1)], base_seq=1,  # seq 1 of e1 exists already
                     artifact_uses=[("e1", "a1", "read", utcnow())])
    fine = Write.of(_record(2), [_event(2, 1)], base_seq=0, claim=True,
                    artifact_uses=[("e2", "a1", "input", utcnow())])
    results = await asyncio.gather(store.commit(clash), store.commit(fine),
                                   return_exceptions=True)
    assert isinstance(results[0], Exception)
    assert results[1] is None
    assert await store.artifacts_of("e1") == []
    assert [roles for _, roles in await store.artifacts_of("e2")] == [["input"]]


async def test_sweep_deletes_artifacts_no_execution_uses(store: Store) -> None:
    """Older than the cutoff and used by no execution that exists: deleted, its sha256
    answered; used by a live execution, or newer: kept. The uses of a deleted execution
    are forgotten, so what only it used goes."""
    old, new = "2020-01-01T00:00:00.000Z", "2030-01-01T00:00:00.000Z"
    await store.add_artifact(_artifact(1, sha="01" * 32, created_at=old))  # unused
    await store.add_artifact(_artifact(2, sha="02" * 32, created_at=old))  # used by e1
    await store.add_artifact(_artifact(3, sha="03" * 32, created_at=old))  # used by e2
    await store.add_artifact(_artifact(4, sha="04" * 32, created_at=new))  # too new
    await store.commit(Write.of(_record(1), [_event(1, 1)], base_seq=0, claim=True,
                                artifact_uses=[("e1", "a2", "input", old)]))
    await store.commit(Write.of(_record(2, status="completed", finished_at=old),
                                [_event(2, 1)], base_seq=0, claim=True,
                                artifact_uses=[("e2", "a3", "input", old)]))
    cutoff = "2021-01-01T00:00:00.000Z"
    assert await store.sweep_artifacts(cutoff) == ["01" * 32]
    assert await store.sweep_artifacts(cutoff) == []
    await store.delete_executions(await store.finished_before(cutoff), cutoff)
    assert await store.sweep_artifacts(cutoff) == ["03" * 32]
    assert await store.artifacts_of("e2") == []
    assert [await store.artifact(f"a{n}") is not None for n in (1, 2, 3, 4)] == [
        False, True, False, True]
    assert not await store.sha256_in_use("03" * 32)
    assert await store.sweep_artifacts(cutoff, limit=1) == []
