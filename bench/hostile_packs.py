"""The hostile set of track uploads against a running server: answer time, memory, and the slowest answer meanwhile.

    .venv/bin/python bench/hostile_packs.py [--rounds 3]

One real server (against the fake Strava, with valid cookies and one cached tile) takes each upload of
``tests/hostile_tracks.py`` on ``POST /packs/estimate``, round after round. For each it prints the time to the
answer, how much the server's peak memory rose above its memory just before (the kernel's high-water mark,
reset before each upload), and the slowest answer to ``/livez`` or the cached tile while the upload was worked
on, beside the goals (10 s, 200 MB, 1 s); the last lines give the worst of each over every round.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Redirector, cookie_export, free_port, redirector_env  # noqa: E402
from tests.fake_strava import FakeStrava  # noqa: E402
from tests.hostile_tracks import HOSTILE  # noqa: E402
from tests.test_packs_hostile import (  # noqa: E402
    ANSWER_WITHIN,
    KEY,
    MEMORY_GROWTH,
    PROBE_WITHIN,
    Probe,
    memory,
    post,
    reset_peak,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    strava = FakeStrava().start()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / 'data'
        env = redirector_env(strava, data_dir, HEATMAP_PORT=free_port(), HEATMAP_ACCESS_KEY=KEY)
        subprocess.run([sys.executable, 'redirector.py', 'import-cookies', '-'], cwd=ROOT, env=env, check=True,
                       input=cookie_export(strava), text=True, capture_output=True)
        log = open(Path(folder) / 'server.log', 'w')
        process = subprocess.Popen([sys.executable, 'redirector.py'], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        server = Redirector(f'http://127.0.0.1:{env["HEATMAP_PORT"]}', process, data_dir, Path(log.name))
        try:
            server.wait_until(lambda: _answers(server), 30)
            tile = f'/tiles/all/hot/13/4401/2686.png?key={KEY}'
            assert server.get(tile).status_code == 200
            worst = {'seconds': 0.0, 'grew': 0, 'probe': 0.0}
            print(f'{"upload":<28} {"answer":>6} {"s":>6} {"MB":>5} {"probe s":>8}   (goals: {ANSWER_WITHIN} s, '
                  f'{MEMORY_GROWTH} MB, {PROBE_WITHIN:g} s)')
            for round_ in range(1, args.rounds + 1):
                print(f'round {round_}')
                for name, _, corridor, make, _ in HOSTILE:
                    data = make()
                    reset_peak(process.pid)
                    before = memory(process.pid)['VmRSS']
                    with Probe(server, tile) as probe:
                        started = time.monotonic()
                        answer = post(server, '/packs/estimate', name, data, corridor)
                        took = time.monotonic() - started
                    grew = memory(process.pid)['VmHWM'] - before
                    print(f'{name:<28} {answer.status_code:>6} {took:>6.2f} {grew:>5} {probe.slowest:>8.3f}')
                    worst = {'seconds': max(worst['seconds'], took), 'grew': max(worst['grew'], grew),
                             'probe': max(worst['probe'], probe.slowest)}
            print(f"worst: answer {worst['seconds']:.2f} s (goal {ANSWER_WITHIN} s), memory +{worst['grew']} MB "
                  f"(goal {MEMORY_GROWTH} MB), /livez or a cached tile {worst['probe']:.3f} s "
                  f'(goal {PROBE_WITHIN:g} s)')
        finally:
            server.stop()
            strava.stop()


def _answers(server: Redirector) -> bool:
    try:
        return server.get('/livez', timeout=1).ok
    except OSError:  # requests' errors are OSErrors: not listening yet
        return False


if __name__ == '__main__':
    main()
