"""The nodes sharing the store (API.md 9): `GET /api/v1/cluster`."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from workflowd.api.keys import SCHEDULER, SETTINGS
from workflowd.api.parsing import json_response
from workflowd.api.routing import Routes
from workflowd.clock import format_ts, utcnow
from workflowd.records import API_PREFIX

__all__ = ["ClusterView", "NodeView", "routes"]

routes = Routes()


class NodeView(BaseModel):
    node_id: str
    last_seen: str
    running: int


class ClusterView(BaseModel):
    nodes: list[NodeView]


@routes.get(f"{API_PREFIX}/cluster", role="viewer", answers={200: ClusterView},
            summary="The nodes sharing the store: when each was last seen, what it runs")
async def get_cluster(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    cluster = scheduler.cluster
    if cluster is None:  # SQLite: this node alone
        nodes = [NodeView(node_id=request.app[SETTINGS].cluster.name(), last_seen=utcnow(),
                          running=scheduler.running)]
    else:
        # Nodes seen within three renewals; one that stopped renewing is gone for the others.
        rows = await cluster.ops.nodes(within=cluster.settings.lease_seconds)
        nodes = [NodeView(node_id=node_id, last_seen=format_ts(seen), running=running)
                 for node_id, seen, running in rows]
    return json_response(ClusterView(nodes=nodes).model_dump_json())
