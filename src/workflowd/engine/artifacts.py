"""Artifacts (API.md §12): files uploaded or saved by steps, content-addressed on disk.

The bytes live under `[artifacts] dir` as `blobs/ab/abcdef...` (their sha256), stored once
however many artifacts name them; a row per artifact (`store/artifacts.py`) names them. Nothing
half-written is ever visible: bytes go to a temp file in `dir/tmp` (the same file system),
are synced, renamed into place, and only then is the row committed. A crash leaves at most a
temp file, removed at the next start. Retention deletes rows no execution uses, then the
files no row names.

Writing, syncing and reading the bytes runs in threads (`asyncio.to_thread`); only the quick
calls that must not be cut short by a cancel (open, close, unlink of a temp file) run on the
loop.

Several nodes (PostgreSQL) share the rows and must share `dir` too (a network file system
every node mounts at the same path): any node serves any artifact, and retention, run by the
leader, deletes files another node stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import structlog

from workflowd.clock import utcnow
from workflowd.errors import PayloadTooLargeError
from workflowd.ids import new_execution_id
from workflowd.store import Store
from workflowd.store.artifacts import ArtifactRow, Role

__all__ = ["CHUNK", "ArtifactStore", "StepArtifacts", "artifact_refs"]

log = structlog.get_logger("workflowd.artifacts")

CHUNK = 256 * 1024


class ArtifactStore:
    def __init__(self, directory: str | Path, store: Store, max_bytes: int) -> None:
        self.dir = Path(directory)
        self.store = store
        self.max_bytes = max_bytes
        self._tmp = self.dir / "tmp"
        self._blobs = self.dir / "blobs"
        # Placing a file and committing its row, against deleting files no row names: on
        # this node; with several nodes on one `dir`, also across them (`_bytes_lock`).
        self._lock = asyncio.Lock()
        # Recently used rows. Only on one node: several nodes share the rows, and the leader
        # deletes them, which another node's copy would not know.
        self._rows: OrderedDict[str, ArtifactRow] = OrderedDict()
        self._keep_rows = store.cluster is None
        self._noted: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    async def open(self) -> None:
        """Make the directories; drop temp files a crash left (never visible anyway)."""
        def prepare() -> int:
            self._blobs.mkdir(parents=True, exist_ok=True)
            left = 0
            if self._tmp.exists():
                for path in self._tmp.iterdir():
                    path.unlink(missing_ok=True)
                    left += 1
            self._tmp.mkdir(parents=True, exist_ok=True)
            return left

        left = await asyncio.to_thread(prepare)
        if left:
            log.info("artifact_temp_files_removed", files=left, dir=str(self._tmp))

    def path(self, sha256: str) -> Path:
        return self._blobs / sha256[:2] / sha256

    # ---- reading --------------------------------------------------------------------------

    async def get(self, artifact_id: str) -> ArtifactRow | None:
        row = self._rows.get(artifact_id)
        if row is None:
            row = await self.store.artifact(artifact_id)
            if row is not None:
                self._remember(row)
        return row

    def _remember(self, row: ArtifactRow) -> None:
        if not self._keep_rows:
            return
        self._rows[row.artifact_id] = row
        self._rows.move_to_end(row.artifact_id)
        if len(self._rows) > 10_000:
            self._rows.popitem(last=False)

    def note_use(self, execution_id: str, artifact_id: str, role: Role) -> None:
        """Record that an execution used an artifact (once; written in the background)."""
        key = (execution_id, artifact_id, role)
        if key in self._noted:
            return
        self._noted[key] = None
        if len(self._noted) > 10_000:
            self._noted.popitem(last=False)

        async def note() -> None:
            try:
                await self.store.note_artifact_use(execution_id, artifact_id, role, utcnow())
            except Exception:
                self._noted.pop(key, None)
                log.warning("artifact_use_not_recorded", execution_id=execution_id,
                            artifact_id=artifact_id, exc_info=True)

        task = asyncio.get_running_loop().create_task(note(), name="artifact-use")
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    # ---- writing --------------------------------------------------------------------------

    async def put(self, chunks: AsyncIterable[bytes], *, name: str, media_type: str,
                  execution_id: str | None = None) -> ArtifactRow:
        """Store the bytes `chunks` yield as a new artifact; `PayloadTooLargeError` past
        `max_bytes` (nothing kept). The same bytes already stored are not written again."""
        part = self._tmp / f"{secrets.token_hex(12)}.part"
        # Opened, closed and removed on the loop (quick calls): cleanup must not hang on an
        # await that a cancel (a client gone, a shutdown) could cut short.
        handle = open(part, "xb")  # noqa: SIM115, ASYNC230 - closed in `finally`
        digest = hashlib.sha256()
        size = 0
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLargeError(
                            f"the artifact is larger than {self.max_bytes} bytes "
                            "([artifacts] max_bytes)")
                    await asyncio.to_thread(_write, handle, digest, chunk)
                await asyncio.to_thread(_sync, handle)
            finally:
                handle.close()
            sha256 = digest.hexdigest()
            row = ArtifactRow(artifact_id=new_execution_id(), name=name, media_type=media_type,
                              size=size, sha256=sha256, created_at=utcnow(),
                              execution_id=execution_id)
            async with self._lock, self._bytes_lock(sha256):
                await asyncio.to_thread(self._place, part, sha256)
                await self.store.add_artifact(row, "output" if execution_id else None)
        finally:
            part.unlink(missing_ok=True)
        self._remember(row)
        if execution_id is not None:
            self._noted[(execution_id, row.artifact_id, "output")] = None
        log.info("artifact_stored", artifact_id=row.artifact_id, size=size, sha256=sha256,
                 execution_id=execution_id)
        return row

    def _bytes_lock(self, sha256: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Across the nodes that share the store (and `dir`): a node placing these bytes and
        committing their row, against the leader finding no row names them and deleting the
        file, which would leave the new row without its bytes. One node: `_lock` does."""
        cluster = self.store.cluster
        if cluster is None:
            return contextlib.nullcontext()
        return cluster.shared_lock(f"artifact:{sha256}")

    def _place(self, part: Path, sha256: str) -> None:
        target = self.path(sha256)
        if target.exists():
            return  # the same bytes are there: stored once
        target.parent.mkdir(exist_ok=True)
        os.replace(part, target)
        _sync_dir(target.parent)

    # ---- retention ------------------------------------------------------------------------

    async def collect(self, cutoff: str) -> int:
        """Delete artifacts no execution uses that are older than `cutoff`, then the files no
        artifact names; answer how many artifacts went."""
        deleted = 0
        while True:
            shas = await self.store.sweep_artifacts(cutoff)
            if not shas:
                break
            async with self._lock:
                for sha256 in shas:
                    async with self._bytes_lock(sha256):
                        if not await self.store.sha256_in_use(sha256):
                            await asyncio.to_thread(self.path(sha256).unlink, missing_ok=True)
            deleted += len(shas)
            self._rows.clear()
        if deleted:
            log.info("artifacts_swept", files=deleted, cutoff=cutoff)
        return deleted


_BACKGROUND: set[asyncio.Task[None]] = set()


def _write(handle: IO[bytes], digest: Any, chunk: bytes) -> None:
    digest.update(chunk)
    handle.write(chunk)


def _sync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def artifact_refs(value: Any, loc: tuple[str | int, ...] = (), depth: int = 0,
                  ) -> list[tuple[str, tuple[str | int, ...]]]:
    """Every `{"artifact_id": "..."}` in a JSON value, with where it is."""
    found: list[tuple[str, tuple[str | int, ...]]] = []
    if depth > 64:
        return found
    if isinstance(value, dict):
        ref = value.get("artifact_id")
        if isinstance(ref, str):
            found.append((ref, (*loc, "artifact_id")))
        for key, item in value.items():
            if isinstance(item, dict | list):
                found.extend(artifact_refs(item, (*loc, key), depth + 1))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                found.extend(artifact_refs(item, (*loc, index), depth + 1))
    return found


class StepArtifacts:
    """`ctx.artifacts`: what a step reads and writes (API.md §12).

    - `with ctx.artifacts.open(id) as f:` (in a `def` step) or `async with ...` (in an async
      one): the artifact's bytes as a binary file;
    - `await ctx.artifacts.read(id)`: all its bytes;
    - `await ctx.artifacts.save(name, data, media_type)` (`save_sync` in a `def` step): a new
      artifact from bytes, text or a binary file; answers `{"artifact_id", "name",
      "media_type", "size", "sha256", "created_at"}`, which can go into the state as it is.

    What a step opens and saves is listed with its execution (`GET .../artifacts`).
    """

    __slots__ = ("_ctx", "_loop", "_store")

    def __init__(self, store: ArtifactStore, ctx: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._ctx = ctx
        self._loop = loop

    def open(self, artifact_id: str) -> _Opened:
        return _Opened(self, artifact_id)

    async def info(self, artifact_id: str) -> dict[str, Any]:
        return (await self._row(artifact_id)).view()

    async def read(self, artifact_id: str) -> bytes:
        row = await self._row(artifact_id)
        data: bytes = await asyncio.to_thread(self._store.path(row.sha256).read_bytes)
        return data

    async def save(self, name: str, data: bytes | bytearray | memoryview | str | BinaryIO,
                   media_type: str = "application/octet-stream") -> dict[str, Any]:
        if self._ctx.cancelled:
            raise RuntimeError("this attempt of the step is over: nothing is saved")
        row = await self._store.put(_chunks(data), name=str(name)[:255],
                                    media_type=str(media_type)[:255],
                                    execution_id=self._ctx.execution_id)
        return row.view()

    def save_sync(self, name: str, data: bytes | bytearray | memoryview | str | BinaryIO,
                  media_type: str = "application/octet-stream") -> dict[str, Any]:
        """`save` from a plain `def` step (its worker thread waits for the loop to do it)."""
        self._off_loop("save_sync")
        return asyncio.run_coroutine_threadsafe(self.save(name, data, media_type),
                                                self._loop).result()

    async def _row(self, artifact_id: str) -> ArtifactRow:
        row = await self._store.get(str(artifact_id))
        if row is None:
            raise LookupError(f"no artifact {artifact_id!r}")
        self._store.note_use(self._ctx.execution_id, row.artifact_id, "read")
        return row

    def _off_loop(self, what: str) -> None:
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is self._loop:
                raise RuntimeError(f"ctx.artifacts.{what} is for plain `def` steps; an "
                                   "async step awaits the async form")


class _Opened:
    """An artifact being opened, as `with` (a `def` step) or `async with` (an async one)."""

    __slots__ = ("_artifacts", "_file", "_id")

    def __init__(self, artifacts: StepArtifacts, artifact_id: str) -> None:
        self._artifacts = artifacts
        self._id = artifact_id
        self._file: BinaryIO | None = None

    async def __aenter__(self) -> BinaryIO:
        row = await self._artifacts._row(self._id)
        self._file = await asyncio.to_thread(self._open, row)
        return self._file

    async def __aexit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> BinaryIO:
        self._artifacts._off_loop("open (with `with`)")
        row = asyncio.run_coroutine_threadsafe(self._artifacts._row(self._id),
                                               self._artifacts._loop).result()
        self._file = self._open(row)
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def _open(self, row: ArtifactRow) -> BinaryIO:
        return self._artifacts._store.path(row.sha256).open("rb")


async def _chunks(data: bytes | bytearray | memoryview | str | BinaryIO) -> AsyncIterator[bytes]:
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start:start + CHUNK])
        return
    while chunk := await asyncio.to_thread(data.read, CHUNK):
        yield chunk
