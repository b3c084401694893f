"""The Python client of workflowd: `Client` (asyncio) and `SyncClient` (blocking), for every
route of the API, answers as typed objects (`workflowd.answers`), problems as `ApiError`.

    from workflowd.client import SyncClient

    with SyncClient("http://127.0.0.1:8080") as wd:
        run = wd.start("audit-plan", {"areas": ["access"]})
        wd.approve(run.execution_id, "looks good")
        print(wd.wait(run.execution_id).status)
"""

from workflowd.client._async import DEFAULT_URL, Client, Snapshot
from workflowd.client._errors import ApiError, Unreachable
from workflowd.client._sync import SyncClient

__all__ = ["DEFAULT_URL", "ApiError", "Client", "Snapshot", "SyncClient", "Unreachable"]
