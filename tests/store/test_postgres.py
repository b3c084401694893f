"""What only the PostgreSQL store has: leases checked inside the commit, claims, the leader
row, changes under a row lock, artifact uses and retention kept apart by row locks, and
start-up errors that never show the password."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import asyncpg
import pytest
from msgspec.structs import replace

from tests.store.test_contract import _event, _record, _write
from workflowd.cli import main
from workflowd.clock import utcnow
from workflowd.errors import InvalidTransitionError, StoreError
from workflowd.records import ExecutionRecord, Wait
from workflowd.store import Write
from workflowd.store.artifacts import ArtifactRow
from workflowd.store.cluster import OwnedElsewhere
from workflowd.store.pgwriter import LeaseLostError
from workflowd.store.postgres import PostgresStore, check_url
from workflowd.store.writer import StaleWriteError


@pytest.fixture
async def node_a(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(pg_url, node_id="a", lease_seconds=30)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def node_b(pg_url: str, node_a: PostgresStore) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(pg_url, node_id="b", lease_seconds=30)
    try:
        yield store
    finally:
        await store.close()


async def _lease(url: str, execution_id: str, owner: str | None, seconds: float) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE executions SET lease_owner = $2, lease_until = CASE WHEN $2::text IS NULL "
            "THEN NULL ELSE statement_timestamp() + $3 * interval '1 second' END WHERE id = $1",
            execution_id, owner, seconds)
    finally:
        await conn.close()


async def test_a_write_without_the_lease_keeps_nothing(pg_url: str, node_a: PostgresStore,
                                                       node_b: PostgresStore) -> None:
    """A node whose lease another node took writes nothing of that execution (snapshot,
    events, logs); the other executions of its batch commit."""
    await node_a.commit(_write(1))
    await node_a.commit(_write(2))
    await _lease(pg_url, "e1", "b", 30)  # b took e1 over
    lost: list[list[str]] = []
    node_a.writer.on_lease_lost.append(lambda ids: lost.append(list(ids)))
    late = Write.of(_record(1, 2, status="running"), [_event(1, 2)], base_seq=1,
                    logs=[("e1", "{}")])
    results = await asyncio.gather(node_a.commit(late), node_a.commit(_write(2, 2)),
                                   return_exceptions=True)
    assert isinstance(results[0], LeaseLostError)
    assert results[1] is None
    assert lost == [["e1"]]
    rec = await node_a.get_execution("e1")
    assert rec is not None
    assert (rec.seq, rec.status) == (1, "queued")
    assert len(await node_a.events("e1")) == 1
    assert await node_a.logs("e1") == []
    assert len(await node_a.events("e2")) == 2


async def test_a_lease_lost_and_claimed_again_writes_from_the_new_head(
        pg_url: str, node_a: PostgresStore, node_b: PostgresStore) -> None:
    """A node whose write was refused for want of the lease, and which claims the execution
    again later, writes from the head it claimed; a write built on its refused one stays
    refused."""
    await node_a.commit(_write(1))
    await _lease(pg_url, "e1", "a", -1)  # a stopped renewing
    with pytest.raises(LeaseLostError):
        await node_a.commit(_write(1, 2))
    assert [r.execution_id for r in await node_b.claim(5, ["wf"])] == ["e1"]
    await node_b.commit(_write(1, 2))
    await node_b.commit(_write(1, 3))
    await node_b.release(["e1"])
    [head] = await node_a.claim(5, ["wf"])
    assert head.seq == 3
    with pytest.raises(StaleWriteError):  # built on the write refused before
        await node_a.commit(_write(1, 3, base=2))
    await node_a.commit(_write(1, 4))
    assert [r.seq for r in [await node_a.get_execution("e1")] if r] == [4]


async def test_an_expired_lease_is_not_written_either(pg_url: str,
                                                      node_a: PostgresStore) -> None:
    """Past `lease_until` the lease is gone even if no one took it."""
    await node_a.commit(_write(1))
    await _lease(pg_url, "e1", "a", -1)
    with pytest.raises(LeaseLostError):
        await node_a.commit(_write(1, 2))


async def test_claims_take_queued_by_priority_and_expired_leases(
        pg_url: str, node_a: PostgresStore, node_b: PostgresStore) -> None:
    """A claim takes unleased queued executions highest priority first, never one a live node
    holds, and takes back expired leases first."""
    for n, priority in enumerate((0, 5, 1)):
        await node_a.commit(Write.of(_record(n, priority=priority), [_event(n, 1)], base_seq=0))
    await node_a.commit(_write(9))  # leased to a at birth
    assert [r.execution_id for r in await node_b.claim(2, ["wf"])] == ["e1", "e2"]
    assert [r.execution_id for r in await node_b.claim(5, ["other"])] == []
    assert [r.execution_id for r in await node_b.claim(5, ["wf"])] == ["e0"]
    assert await node_b.claim(5, ["wf"]) == []
    await _lease(pg_url, "e9", "a", -1)  # a stopped renewing
    assert [r.execution_id for r in await node_b.claim(5, ["wf"])] == ["e9"]
    assert await node_a.renew() == set()
    assert await node_b.renew() == {"e0", "e1", "e2", "e9"}
    await node_b.release(["e0", "e1"])
    assert await node_b.renew() == {"e2", "e9"}
    assert [r.execution_id for r in await node_a.claim(5, ["wf"])] == ["e1", "e0"]


async def test_waiting_and_finished_records_release_the_lease(node_a: PostgresStore,
                                                              node_b: PostgresStore) -> None:
    """A commit that leaves the execution waiting (or terminal) gives the lease up."""
    await node_a.commit(_write(1))
    waiting = Write.of(_record(1, 2, status="awaiting_approval", wait=Wait(kind="approval")),
                       [_event(1, 2)], base_seq=1)
    await node_a.commit(waiting)
    assert await node_a.renew() == set()
    with pytest.raises(LeaseLostError):
        await node_a.commit(_write(1, 3))


async def test_due_waits_leave_out_sleeps_of_workflows_not_given(pg_url: str,
                                                                 node_a: PostgresStore) -> None:
    """A due sleep is listed only for a node that has its workflow (it could not wake it
    otherwise); a due approval or external wait is listed whatever its workflow."""
    past = "2000-01-01T00:00:00.000Z"
    cases: list[tuple[int, str, Literal["approval", "sleep"]]] = [
        (1, "wf", "sleep"), (2, "gone", "sleep"), (3, "gone", "approval")]
    for n, workflow_id, kind in cases:
        rec = _record(n, workflow_id=workflow_id, status="running",
                      wait=Wait(kind=kind, deadline=past))
        await node_a.commit(Write.of(rec, [_event(n, 1)], base_seq=0))
        await _lease(pg_url, f"e{n}", None, 0)
    assert sorted(await node_a.due_waits(utcnow(), 10, ["wf"])) == ["e1", "e3"]
    assert sorted(await node_a.due_waits(utcnow(), 10, ["wf", "gone"])) == ["e1", "e2", "e3"]


async def test_the_leader_row_has_one_holder_until_it_expires(node_a: PostgresStore,
                                                              node_b: PostgresStore) -> None:
    """One node holds the leader row; the other takes it only once it expired."""
    assert await node_a.lead("chores", 0.5)
    assert not await node_b.lead("chores", 0.5)
    assert await node_a.lead("chores", 0.5)  # renewed
    async with asyncio.timeout(5):
        while not await node_b.lead("chores", 30):
            await asyncio.sleep(0.1)
    assert not await node_a.lead("chores", 30)


async def test_a_change_under_the_row_lock(pg_url: str, node_a: PostgresStore,
                                           node_b: PostgresStore) -> None:
    """A change to an execution no node holds is applied under its row lock, in one
    transaction; one held by a live node is refused with the holder's name."""
    await node_a.commit(Write.of(_record(1, status="awaiting_approval",
                                         wait=Wait(kind="approval")), [_event(1, 1)],
                                 base_seq=0))
    committed: list[int] = []

    def approve(rec: ExecutionRecord) -> Write:
        if rec.status != "awaiting_approval":
            raise InvalidTransitionError("not waiting")
        write = Write.of(replace(rec, status="queued", wait=None, seq=2), [_event(1, 2)],
                         base_seq=rec.seq)
        write.on_commit = lambda: committed.append(2)
        return write

    rec, write = await node_b.locked_change("e1", approve)
    assert rec is not None
    assert write is not None
    assert committed == [2]
    after = await node_a.get_execution("e1")
    assert after is not None
    assert (after.status, after.seq) == ("queued", 2)
    with pytest.raises(InvalidTransitionError):
        await node_b.locked_change("e1", approve)
    assert [r.execution_id for r in await node_a.claim(5, ["wf"])] == ["e1"]
    with pytest.raises(OwnedElsewhere) as held:
        await node_b.locked_change("e1", approve)
    assert held.value.node_id == "a"
    assert await node_b.locked_change("nope", approve) == (None, None)
    # Its own lease stops a node too, unless it says that nothing of its own holds it.
    with pytest.raises(OwnedElsewhere) as held:
        await node_a.locked_change("e1", approve)
    assert held.value.node_id == "a"
    with pytest.raises(InvalidTransitionError):
        await node_a.locked_change("e1", approve, own_lease=True)


@pytest.mark.parametrize("url", [
    "mysql://u:hunter2@localhost/db",
    "postgresql://u:hunter2@localhost:notaport/db",
    "postgresql://u:hunter2@/db",
])
def test_a_bad_url_is_refused_without_its_password(url: str) -> None:
    """A URL that is not PostgreSQL's, or does not parse, is refused naming it, password
    hidden."""
    with pytest.raises(StoreError) as caught:
        check_url(url)
    assert "hunter2" not in caught.value.detail
    assert "[store] url" in caught.value.detail


async def test_a_wrong_password_or_server_is_a_store_error(pg_url: str) -> None:
    """Opening a server that refuses, or one that is not there, is a `StoreError` that says
    why and never shows the password."""
    host = pg_url.split("@", 1)[1].split("/", 1)[0]
    with pytest.raises(StoreError) as caught:
        await PostgresStore.open(f"postgresql://nobody:hunter2@{host}/nodb", node_id="x")
    assert "hunter2" not in caught.value.detail
    assert "***" in caught.value.detail
    with pytest.raises(StoreError) as caught:
        await PostgresStore.open("postgresql://u:hunter2@127.0.0.1:1/db", node_id="x")
    assert "hunter2" not in caught.value.detail


def test_serve_stops_at_a_bad_url_without_its_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`workflowd serve` with a URL that is not PostgreSQL's exits 2, saying why, password
    hidden."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "mysql://u:hunter2@localhost/db"\n')
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "postgresql://" in err
    assert "hunter2" not in err


async def test_a_sweep_passes_over_an_artifact_whose_use_is_committing(
        pg_url: str, node_a: PostgresStore) -> None:
    """An artifact keyed by a transaction that records a use of it (as the writer's does) is
    left alone by a sweep running meanwhile (which does not wait for it), and kept once that
    use commits."""
    old = "2020-01-01T00:00:00.000Z"
    await node_a.add_artifact(ArtifactRow("a1", "f", "text/plain", 1, "01" * 32, old))
    await node_a.commit(_write(1))
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT id FROM artifacts WHERE id = 'a1' FOR KEY SHARE")
            assert await asyncio.wait_for(node_a.sweep_artifacts("2021-01-01T00:00:00.000Z"),
                                          10) == []
            await conn.execute("INSERT INTO artifact_uses VALUES ('e1', 'a1', 'input', $1)",
                               old)
    finally:
        await conn.close()
    assert await node_a.sweep_artifacts("2021-01-01T00:00:00.000Z") == []
    assert await node_a.artifact("a1") is not None


async def test_a_use_waits_for_a_sweep_that_deletes_its_artifact(pg_url: str,
                                                                 node_a: PostgresStore) -> None:
    """A submit naming an artifact that a sweep has locked to delete waits for the sweep, then
    commits without the use (the artifact is gone), as on SQLite."""
    old = "2020-01-01T00:00:00.000Z"
    await node_a.add_artifact(ArtifactRow("a1", "f", "text/plain", 1, "01" * 32, old))
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT id FROM artifacts WHERE id = 'a1' FOR UPDATE")
            submit = asyncio.ensure_future(node_a.commit(Write.of(
                _record(1), [_event(1, 1)], base_seq=0, claim=True,
                artifact_uses=[("e1", "a1", "input", old)])))
            async with asyncio.timeout(10):  # the writer's statement waits for the row
                while not await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND application_name LIKE 'workflowd-writer:%'"):
                    await asyncio.sleep(0.02)
            assert not submit.done()
            await conn.execute("DELETE FROM artifacts WHERE id = 'a1'")
        await asyncio.wait_for(submit, 10)
    finally:
        await conn.close()
    assert await node_a.get_execution("e1") is not None
    assert await node_a.artifacts_of("e1") == []
    rows = await node_a._rows("SELECT count(*) FROM artifact_uses")
    assert rows[0][0] == 0
