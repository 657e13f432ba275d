"""A fake of the part of Apify's API v2 that apify-client uses to run an actor and read its results.

Endpoints (all JSON, ``{"data": ...}`` envelopes and ``{"error": {"type", "message"}}`` errors as
the real API): ``GET /v2/acts/{actorId}``, ``POST /v2/acts/{actorId}/runs`` (also ``/v2/actors/``,
which apify-client 3 calls), ``GET /v2/actor-runs/{runId}?waitForFinish=N``,
``POST /v2/actor-runs/{runId}/abort``, ``GET /v2/datasets/{id}/items`` (with the
``X-Apify-Pagination-*`` headers), ``GET /v2/key-value-stores/{id}/records/{key}``.

A run executes the real actor as a subprocess (``python -m src`` with its own local storage), or
a scripted function standing in for it. Run it as a demo::

    python -m tests.fake_apify --port 8002
"""

from __future__ import annotations

import argparse
import gzip
import json
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.actor_process import run_actor_process
from tests.http_fake import FakeHandler, ServedInThread

ACTOR_ID = 'me~strava-heatmap-cookies'
TOKEN = 'apify_api_FAKE_TOKEN_0123456789'

# A scripted actor takes the run input and returns (status, status message, dataset items).
Script = Callable[[dict], tuple[str, str, list[dict]]]


def _now() -> str:
    return datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'


def _new_id() -> str:
    return secrets.token_urlsafe(12).replace('-', 'a').replace('_', 'b')[:17]


@dataclass
class Run:
    id: str
    actor_id: str
    input: dict
    status: str = 'RUNNING'
    status_message: str | None = 'Starting the actor'
    items: list[dict] = field(default_factory=list)
    records: dict[str, object] = field(default_factory=dict)
    dataset_id: str = field(default_factory=_new_id)
    store_id: str = field(default_factory=_new_id)
    started_at: str = field(default_factory=_now)
    finished_at: str | None = None
    exit_code: int | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def finish(self, status: str, message: str | None, items: list[dict], exit_code: int) -> None:
        if self.done.is_set():  # aborted meanwhile
            return
        self.status, self.status_message, self.items, self.exit_code = status, message, items, exit_code
        self.finished_at = _now()
        self.done.set()

    def as_json(self) -> dict:
        return {
            'id': self.id, 'actId': self.actor_id, 'userId': 'fakeUser000000000', 'startedAt': self.started_at,
            'finishedAt': self.finished_at, 'status': self.status, 'statusMessage': self.status_message,
            'isStatusMessageTerminal': self.done.is_set(), 'exitCode': self.exit_code,
            'meta': {'origin': 'API'}, 'stats': {'inputBodyLen': len(json.dumps(self.input))},
            'options': {'build': 'latest', 'timeoutSecs': 3600, 'memoryMbytes': 1024, 'diskMbytes': 2048},
            'buildId': 'fakeBuild00000000', 'buildNumber': '1.0.1',
            'defaultKeyValueStoreId': self.store_id, 'defaultDatasetId': self.dataset_id,
            'defaultRequestQueueId': 'fakeQueue00000000',
        }


@dataclass
class FakeApify(ServedInThread):
    """The fake platform. ``script`` replaces the real actor; ``chromium`` is the browser it runs with."""

    token: str = TOKEN
    actor_id: str = ACTOR_ID
    script: Script | None = None
    chromium: str | None = None
    start_delay: float = 0.0  # the start request answers this late (an API that times out)
    host: str = '127.0.0.1'
    port: int = 0
    runs: dict[str, Run] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self._lock = threading.Lock()
        self.generation = 0  # one more at each reset: a request of an earlier test starts no run in this one

    def reset(self) -> None:
        self.script, self.start_delay = None, 0.0
        with self._lock:
            self.generation += 1
            self.runs.clear()
            self.counters.clear()

    def start_run(self, actor_input: dict) -> Run:
        run = Run(_new_id(), self.actor_id, actor_input)
        with self._lock:
            self.runs[run.id] = run
            self.counters['runs'] += 1
        threading.Thread(target=self._execute, args=(run,), daemon=True).start()
        return run

    def _execute(self, run: Run) -> None:
        if self.script:
            status, message, items = self.script(run.input)
            run.finish(status, message, items, 0 if status == 'SUCCEEDED' else 1)
            return
        storage = Path(tempfile.mkdtemp(prefix='fake-apify-run-'))
        try:
            done = run_actor_process(run.input, storage / 'storage', self.chromium, timeout=300)
            run.records['OUTPUT'] = done.output
            run.finish('SUCCEEDED' if done.returncode == 0 else 'FAILED', done.status_message,
                       done.dataset_items, done.returncode)
        finally:
            shutil.rmtree(storage, ignore_errors=True)


class _Handler(FakeHandler):
    fake: FakeApify

    def _json(self, status: int, payload, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), 'application/json; charset=utf-8',
                   list((headers or {}).items()))

    def _error(self, status: int, kind: str, message: str) -> None:
        self._json(status, {'error': {'type': kind, 'message': message}})

    def _authorized(self, query: dict) -> bool:
        given = self.headers.get('Authorization', '').removeprefix('Bearer ') or query.get('token', '')
        if given != self.fake.token:
            self._error(401, 'token-not-valid', 'Authentication token is not valid.')
            return False
        return True

    def _body(self) -> bytes:
        raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        return gzip.decompress(raw) if self.headers.get('Content-Encoding') == 'gzip' else raw

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip('/').split('/')
        body = self._body() if method == 'POST' else b''
        if not self._authorized(query):
            return
        fake = self.fake
        actors = parts[:2] in (['v2', 'acts'], ['v2', 'actors'])
        if method == 'GET' and len(parts) == 3 and actors:
            if parts[2] != fake.actor_id:
                return self._error(404, 'record-not-found', 'Actor was not found')
            username, name = fake.actor_id.split('~')
            return self._json(200, {'data': {
                'id': 'fakeActor00000000', 'userId': 'fakeUser000000000', 'name': name, 'username': username,
                'isPublic': False, 'createdAt': _now(), 'modifiedAt': _now(), 'stats': {}, 'versions': [],
                'defaultRunOptions': {'build': 'latest', 'timeoutSecs': 3600, 'memoryMbytes': 1024}}})
        if method == 'POST' and len(parts) == 4 and actors and parts[3] == 'runs':
            if parts[2] != fake.actor_id:
                return self._error(404, 'record-not-found', 'Actor was not found')
            with fake._lock:
                fake.counters['starts'] += 1  # as it arrives; 'runs' counts the runs started, after start_delay
                generation = fake.generation
            time.sleep(fake.start_delay)
            if fake.generation != generation:
                return self._error(503, 'fake-reset', 'the test that asked for this run has ended')
            run = fake.start_run(json.loads(body or b'{}'))
            return self._json(201, {'data': run.as_json()})
        if len(parts) >= 3 and parts[:2] == ['v2', 'actor-runs']:
            run = fake.runs.get(parts[2])
            if run is None:
                return self._error(404, 'record-not-found', 'Actor run was not found')
            if method == 'POST' and parts[3:] == ['abort']:
                run.finish('ABORTED', 'Aborted by the API', [], 1)
                return self._json(200, {'data': run.as_json()})
            if method == 'GET' and len(parts) == 3:
                fake.counters['polls'] += 1
                run.done.wait(min(float(query.get('waitForFinish') or 0), 60))
                return self._json(200, {'data': run.as_json()})
        if method == 'GET' and len(parts) == 4 and parts[:2] == ['v2', 'datasets'] and parts[3] == 'items':
            run = next((r for r in fake.runs.values() if r.dataset_id == parts[2]), None)
            if run is None:
                return self._error(404, 'record-not-found', 'Dataset was not found')
            offset, limit = int(query.get('offset') or 0), int(query.get('limit') or 250000)
            items = run.items[offset:offset + limit]
            return self._json(200, items, {
                'X-Apify-Pagination-Total': str(len(run.items)), 'X-Apify-Pagination-Offset': str(offset),
                'X-Apify-Pagination-Count': str(len(items)), 'X-Apify-Pagination-Limit': str(limit),
                'X-Apify-Pagination-Desc': 'false'})
        if method == 'GET' and len(parts) == 5 and parts[:2] == ['v2', 'key-value-stores'] and parts[3] == 'records':
            run = next((r for r in fake.runs.values() if r.store_id == parts[2]), None)
            if run is None or run.records.get(parts[4]) is None:
                return self._error(404, 'record-not-found', 'Record was not found')
            return self._json(200, run.records[parts[4]])
        self._error(404, 'page-not-found', f'No route for {method} {url.path}')

    def do_GET(self):
        self._route('GET')

    def do_POST(self):
        self._route('POST')


FakeApify.handler = _Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, default=8002)
    parser.add_argument('--chromium', default=shutil.which('chromium'))
    args = parser.parse_args()
    fake = FakeApify(port=args.port, chromium=args.chromium)
    fake.serve_until_interrupted(f'fake Apify API (APIFY_TOKEN={fake.token} APIFY_ACTOR={fake.actor_id})')


if __name__ == '__main__':
    main()
