"""Offline packs under attack: any upload is answered within seconds, in bounded memory, without stalling others.

One real server for the module. For each hostile track the server's peak memory is read from the
kernel (the high-water mark, reset before each upload), and a probe asks ``/livez`` and a cached tile
over and over while the upload is worked on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from heatmap.server import too_large
from tests.conftest import ROOT, Redirector, free_port, redirector_env
from tests.hostile_tracks import HOSTILE, gpx, random_points, tour
from tests.test_tiles import import_cookies

ANSWER_WITHIN = 10  # seconds of the server's CPU, the goal for an estimate or a start (a busy machine adds waits)
MEMORY_GROWTH = 200  # MB the server may grow by while it works on one upload
PROBE_WITHIN = 1.0  # seconds for /livez and a cached tile meanwhile, on a machine with a core for each runnable task
KEY = 'pack-key'


def memory(pid: int) -> dict[str, int]:
    """The process's resident memory now and its high-water mark since the last reset, in MB."""
    fields = dict(line.split(':', 1) for line in Path(f'/proc/{pid}/status').read_text().splitlines() if ':' in line)
    return {name: int(fields[name].split()[0]) // 1024 for name in ('VmRSS', 'VmHWM')}


def reset_peak(pid: int) -> None:
    Path(f'/proc/{pid}/clear_refs').write_text('5')  # the kernel's way to restart VmHWM from VmRSS


def cpu_seconds(pid: int) -> float:
    """The CPU time the process has used so far, all its threads: the work, which a busy machine does not stretch."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')  # utime and stime


def timed_get(server: Redirector, path: str) -> float:
    """Seconds to a 200 for ``path`` (infinite: anything else)."""
    started = time.monotonic()
    try:
        status = requests.get(server.url + path, timeout=30).status_code
    except requests.RequestException:
        return float('inf')
    return time.monotonic() - started if status == 200 else float('inf')


def probe_limit() -> float:
    """How long a probe may take while an upload is worked on: PROBE_WITHIN, stretched by as many times as the
    machine has more runnable tasks than cores (the server's threads share the core it gets with the upload's)."""
    return PROBE_WITHIN * max(1.0, os.getloadavg()[0] / os.cpu_count())


class Probe:
    """Asks for /livez and a cached tile in turn until stopped; remembers the slowest answer (infinite: one failed)
    and the limit for it as the machine is loaded now."""

    def __init__(self, server: Redirector, tile: str):
        self.server, self.paths = server, ['/livez', tile]
        self.slowest, self.answers = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.slowest = max(self.slowest, timed_get(self.server, self.paths[self.answers % 2]))
            self.answers += 1
            time.sleep(0.02)

    def __enter__(self) -> Probe:
        self.limit = probe_limit()
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture(scope='module')
def server(_strava_server, tmp_path_factory):
    """The real server with valid cookies and one tile in its cache; track uploads need the access key."""
    tmp = tmp_path_factory.mktemp('hostile')
    data_dir, uploads = tmp / 'data', tmp / 'uploads'
    uploads.mkdir()
    import_cookies(_strava_server, data_dir)
    port = free_port()
    env = redirector_env(_strava_server, data_dir, HEATMAP_PORT=port, HEATMAP_ACCESS_KEY=KEY, TMPDIR=uploads)
    log_path = tmp / 'server.log'
    with open(log_path, 'w') as log:
        process = subprocess.Popen([sys.executable, 'redirector.py'], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    started = Redirector(f'http://127.0.0.1:{port}', process, data_dir, log_path)
    try:
        started.wait_until(lambda: _answers(started), timeout=30, interval=0.05)
        tile = f'/tiles/all/hot/13/4401/2686.png?key={KEY}'
        assert started.get(tile).status_code == 200
        started.uploads, started.tile = uploads, tile
        yield started
    finally:
        started.stop()


def _answers(server: Redirector) -> bool:
    assert server.process.poll() is None, server.logs()
    try:
        return requests.get(server.url + '/livez', timeout=1).ok
    except requests.ConnectionError:
        return False


def post(server: Redirector, path: str, name: str, data: bytes, corridor: str, zooms: str = '10-15',
         key: str = KEY) -> requests.Response:
    return requests.post(f'{server.url}{path}', params={'key': key}, timeout=60,
                         files={'track': (name, data)}, data={'layer': 'ride/hot', 'zooms': zooms,
                                                              'corridor_km': corridor})


@pytest.mark.parametrize('name, what, corridor, make, expected', HOSTILE, ids=[entry[0] for entry in HOSTILE])
def test_any_upload_is_answered_within_seconds_in_bounded_memory_while_others_are_served(server, name, what,
                                                                                         corridor, make, expected):
    data = make()
    pid = server.process.pid
    reset_peak(pid)
    before = memory(pid)['VmRSS']
    with Probe(server, server.tile) as probe:
        cpu_before = cpu_seconds(pid)
        answer = post(server, '/packs/estimate', name, data, corridor)
        worked = cpu_seconds(pid) - cpu_before
    grew = memory(pid)['VmHWM'] - before
    assert worked <= ANSWER_WITHIN, f'{what}: answered after {worked:.1f} s of CPU'
    assert grew <= MEMORY_GROWTH, f'{what}: the server grew by {grew} MB'
    assert probe.slowest <= probe.limit, \
        f'{what}: /livez or a cached tile took {probe.slowest:.2f} s meanwhile (at most {probe.limit:.2f} s)'
    if expected == 200:
        assert answer.status_code == 200, answer.text
        estimate = answer.json()['estimate']
        assert estimate['total'] > 0 and estimate['summary'].startswith(f"{'more than ' * (not estimate['complete'])}")
    else:
        assert answer.status_code == 400 and answer.text.startswith(expected) and answer.text.count('\n') == 1, \
            answer.text[:300]


def test_a_started_pack_keeps_only_its_simplified_track_and_the_pages_stay_quick(server):
    limit = probe_limit()
    tour = gpx([random_points(2000, 7)])
    refused = post(server, '/packs/', 'around.geojson', json.dumps(
        {'type': 'MultiLineString', 'coordinates': [[[-89, lat], [89, lat]] for lat in range(5)]}).encode(), '0.001')
    assert refused.status_code == 400 and refused.text.startswith('the pack would hold more than 21,288 tiles,')
    started = post(server, '/packs/', 'crossing.gpx', tour, '1', zooms='10-13')
    assert started.status_code == 202, started.text
    job = started.json()
    job_file = server.data_dir / 'packs' / f'{job["id"]}.json'
    assert job_file.stat().st_size < 200_000, 'the job holds the simplified track, not its corridor'
    assert len(json.dumps(job)) < 10_000, "what the page polls leaves the track's shape out"
    for path in ('/packs/', f'/packs/{job["id"]}.json'):
        assert timed_get(server, f'{path}?key={KEY}') <= limit, path
    assert requests.delete(f'{server.url}/packs/{job["id"]}', params={'key': KEY}, timeout=30).json()['result'] \
        in ('cancelled', 'deleted')


def test_an_upload_without_the_key_is_refused_before_its_body_is_read(server):
    """A 20 MB upload without the key is refused at its head: the server answers before the body is sent."""
    for query in ('', '?key=wrong'):
        with socket_to(server) as connection:
            connection.sendall(f'POST /packs/estimate{query} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; '
                               f'boundary=b\r\nContent-Length: {20 * 2 ** 20}\r\n\r\n'.encode())
            answer = receive_all(connection)
        assert answer.startswith('HTTP/1.1 413 '), answer
        assert answer.split('\r\n\r\n', 1)[1] == too_large(upload=False) + '\n'
    with socket_to(server) as connection:  # with the key, the server waits for the body
        connection.sendall(f'POST /packs/estimate?key={KEY} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;'
                           f' boundary=b\r\nContent-Length: {20 * 2 ** 20}\r\n\r\n'.encode())
        connection.settimeout(1)
        with pytest.raises(TimeoutError):
            connection.recv(65536)


def test_uploads_leave_no_temporary_file_open_or_behind(server):
    ride = gpx([tour(300, 10)])  # 1.3 MB: past what Bottle keeps in memory
    for _ in range(5):
        assert post(server, '/packs/estimate', 'ride.gpx', ride, '1', zooms='10-12').status_code == 200

    def spooled() -> list[str]:
        fds = f'/proc/{server.process.pid}/fd'
        names = []
        for fd in os.listdir(fds):
            try:
                names.append(os.readlink(f'{fds}/{fd}'))
            except FileNotFoundError:  # closed meanwhile
                pass
        return [name for name in names if str(server.uploads) in name] + os.listdir(server.uploads)

    # waitress lets go of its own copy of a body just after the answer is sent
    server.wait_until(lambda: spooled() == [], timeout=5)


def receive_all(connection: socket.socket) -> str:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b''.join(chunks).decode()


def socket_to(server: Redirector) -> socket.socket:
    host, port = server.url.removeprefix('http://').split(':')
    return socket.create_connection((host, int(port)), timeout=10)


def test_a_flood_of_uploads_holds_one_request_thread_and_the_rest_are_told_to_retry(server):
    ride = gpx([tour(600, 10)])  # 60,000 points: a second or so of work each
    answers = []

    def upload():
        answers.append(post(server, '/packs/estimate', 'ride.gpx', ride, '1', zooms='10-12'))

    flood = [threading.Thread(target=upload) for _ in range(24)]  # more than the server's 16 threads
    with Probe(server, server.tile) as probe:
        for thread in flood:
            thread.start()
        for thread in flood:
            thread.join(120)
    statuses = sorted(answer.status_code for answer in answers)
    assert len(statuses) == 24 and set(statuses) <= {200, 503} and 200 in statuses, statuses
    busy = next(answer for answer in answers if answer.status_code == 503)
    assert busy.text == 'another estimate is being counted: retry in a few seconds\n'
    assert busy.headers['Retry-After'] == '5'
    assert probe.slowest <= probe.limit, \
        f'/livez or a cached tile took {probe.slowest:.2f} s during the flood (at most {probe.limit:.2f} s)'
