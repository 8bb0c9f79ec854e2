"""A non-Python writer posts photonflow's file event to a real Prefect server, as curl would.

Prefect 3.8.8 takes events over plain HTTP: ``POST /api/events`` with a JSON *list* of events
(answer 204, no body); each event needs ``id`` (a UUID the writer makes), ``occurred`` (ISO 8601),
``event`` (the name), ``resource`` (with ``prefect.resource.id``) and may carry ``payload``,
``related`` and ``follows``. The server stores them asynchronously (its event persister flushes every
few seconds), and ``POST /api/events/filter`` reads them back. The websocket ``/api/events/in``
(what Prefect's own client uses: one event JSON per text message) is tested too. No Prefect client
is used here: only httpx and websockets, the way any other language would do it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest
from realserver import prefect_server_fixture

pytestmark = pytest.mark.slow

# The event persister's default flush interval is 5 s; a shorter one keeps these tests quick.
prefect_server = prefect_server_fixture(
    scope="module",
    extra_env={"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.25"},
)

PATH = "/data/frame_00001.tif"


def file_event(path: str = PATH, size: int = 2_000_000, event_id: str | None = None) -> dict:
    return {
        "id": event_id or str(uuid.uuid4()),
        "occurred": datetime.now(timezone.utc).isoformat(),
        "event": "photonflow.file.arrived",
        "resource": {"prefect.resource.id": f"photonflow.file.{path}"},
        "payload": {"path": path, "event": None, "size": size},
    }


def read_back(client: httpx.Client, api_url: str, event_id: str, timeout: float = 20.0) -> dict:
    """Poll POST /api/events/filter until the event with `event_id` is stored."""
    body = {
        "filter": {
            "id": {"id": [event_id]},
            "event": {"name": ["photonflow.file.arrived"]},
        },
        "limit": 10,
    }
    deadline = time.monotonic() + timeout
    while True:
        r = client.post(f"{api_url}/events/filter", json=body)
        assert r.status_code == 200, r.text
        page = r.json()
        # the server can list the event a moment before its count includes it: wait for both
        if page["events"] and page["total"] == 1:
            assert len(page["events"]) == 1
            return page["events"][0]
        if time.monotonic() > deadline:
            pytest.fail(
                f"event {event_id} not readable through {api_url}/events/filter after {timeout} s "
                f"(events {len(page['events'])}, total {page['total']})"
            )
        time.sleep(0.2)


def test_post_file_event_over_plain_http_and_read_it_back(prefect_server):
    api_url = prefect_server
    event = file_event()
    with httpx.Client(timeout=10, trust_env=False) as client:
        # what `curl -X POST "$API/events" -H 'Content-Type: application/json' -d "[$EVENT]"` sends
        r = client.post(
            f"{api_url}/events",
            content=json.dumps([event]),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 204, r.text
        stored = read_back(client, api_url, event["id"])

        assert stored["event"] == "photonflow.file.arrived"
        assert stored["resource"] == {"prefect.resource.id": "photonflow.file./data/frame_00001.tif"}
        assert stored["payload"] == {"path": PATH, "event": None, "size": 2_000_000}
        assert stored["id"] == event["id"]
        assert datetime.fromisoformat(stored["occurred"]) == datetime.fromisoformat(event["occurred"])
        assert stored["received"]  # set by the server

        # The same read by resource id, as an operator would look a file up.
        r = client.post(
            f"{api_url}/events/filter",
            json={"filter": {"resource": {"id": [f"photonflow.file.{PATH}"]}}, "limit": 50},
        )
        assert r.status_code == 200
        assert event["id"] in [e["id"] for e in r.json()["events"]]


def test_invalid_event_is_refused_with_the_field_named(prefect_server):
    event = file_event()
    del event["resource"]["prefect.resource.id"]
    with httpx.Client(timeout=10, trust_env=False) as client:
        r = client.post(f"{prefect_server}/events", json=[event])
        assert r.status_code == 422
        assert "prefect.resource.id" in r.text
        # a single object instead of a list is refused too
        r = client.post(f"{prefect_server}/events", json=file_event())
        assert r.status_code == 422
        assert "list" in r.text


def test_post_file_event_over_the_websocket(prefect_server):
    """The route Prefect's own client uses, driven with the plain websockets package."""
    from websockets.sync.client import connect

    event = file_event(path="/data/frame_00002.tif", size=17)
    ws_url = prefect_server.replace("http://", "ws://", 1) + "/events/in"
    with connect(ws_url, open_timeout=10, proxy=None) as ws:
        ws.send(json.dumps(event))
    with httpx.Client(timeout=10, trust_env=False) as client:
        stored = read_back(client, prefect_server, event["id"])
    assert stored["payload"] == {"path": "/data/frame_00002.tif", "event": None, "size": 17}
    assert stored["resource"]["prefect.resource.id"] == "photonflow.file./data/frame_00002.tif"
