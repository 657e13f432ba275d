"""Fixtures: the fakes start once per session; each test gets them back in their default state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_strava import FakeStrava

ROOT = Path(__file__).resolve().parent.parent
ACTOR_DIR = ROOT / 'actor'
PASSWORD = 'correct horse'


def find_chromium() -> str | None:
    for candidate in (os.environ.get('CHROMIUM_PATH'), shutil.which('chromium'), shutil.which('chromium-browser')):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope='session')
def chromium() -> str:
    """Browser tests fail (never skip) without a browser: CI must install one."""
    path = find_chromium()
    if path is None:
        pytest.fail('no Chromium for the browser tests: install Debian\'s `chromium` (apt-get install chromium) '
                    'or set CHROMIUM_PATH', pytrace=False)
    return path


@pytest.fixture(scope='session')
def _strava_server():
    fake = FakeStrava().start()
    yield fake
    fake.stop()


@pytest.fixture
def strava(_strava_server) -> FakeStrava:
    _strava_server.reset()
    return _strava_server


@dataclass
class ActorRun:
    returncode: int
    stdout: str
    stderr: str
    storage: Path
    seconds: float

    @property
    def status_message(self) -> str | None:
        """The last status message the SDK logged (locally it logs what the platform would show)."""
        for line in reversed((self.stdout + self.stderr).splitlines()):
            for marker in ('[Terminal status message]: ', '[Status message]: '):
                if marker in line:
                    return line.split(marker, 1)[1].strip()
        return None

    @property
    def output(self) -> dict | None:
        path = self.storage / 'key_value_stores' / 'default' / 'OUTPUT'
        return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def run_actor(tmp_path, chromium):
    """Run the actor as `python -m src` with its own local storage, as a user would."""
    def run(actor_input: dict, timeout: float = 120) -> ActorRun:
        storage = tmp_path / f'storage-{time.monotonic_ns()}'
        (storage / 'key_value_stores' / 'default').mkdir(parents=True)
        (storage / 'key_value_stores' / 'default' / 'INPUT.json').write_text(json.dumps(actor_input))
        env = {**os.environ, 'APIFY_LOCAL_STORAGE_DIR': str(storage), 'CHROMIUM_PATH': chromium, 'NO_COLOR': '1'}
        started = time.monotonic()
        done = subprocess.run([sys.executable, '-m', 'src'], cwd=ACTOR_DIR, env=env, capture_output=True,
                              text=True, timeout=timeout)
        return ActorRun(done.returncode, done.stdout, done.stderr, storage, time.monotonic() - started)
    return run
