"""Run the login actor as a subprocess with its own Apify local storage, as `cd actor && python -m src` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ACTOR_DIR = Path(__file__).resolve().parent.parent / 'actor'
BROWSER_UP = '[Status message]: Opening the login page'  # the first thing the actor says once Chromium runs


@dataclass
class ActorRun:
    returncode: int
    stdout: str
    stderr: str
    storage: Path
    seconds: float
    seconds_after_browser_start: float | None  # from BROWSER_UP to the end; None when no browser was started

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

    @property
    def dataset_items(self) -> list[dict]:
        files = sorted((self.storage / 'datasets' / 'default').glob('0*.json'))
        return [json.loads(path.read_text()) for path in files]


def run_actor_process(actor_input: dict, storage: Path, chromium: str | None, timeout: float = 120) -> ActorRun:
    """Run the actor; each line it writes is timed as it arrives, so a time limit can leave out Chromium's start,
    which a busy machine stretches most."""
    (storage / 'key_value_stores' / 'default').mkdir(parents=True)
    (storage / 'key_value_stores' / 'default' / 'INPUT.json').write_text(json.dumps(actor_input))
    env = {**os.environ, 'APIFY_LOCAL_STORAGE_DIR': str(storage), 'NO_COLOR': '1'}
    if chromium:
        env['CHROMIUM_PATH'] = chromium
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, '-m', 'src'], cwd=ACTOR_DIR, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: dict[str, list[tuple[float, str]]] = {'stdout': [], 'stderr': []}

    def read(stream, into):
        for line in stream:
            into.append((time.monotonic(), line))
    readers = [threading.Thread(target=read, args=(getattr(process, name), into), daemon=True)
               for name, into in lines.items()]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    finally:
        for reader in readers:
            reader.join()
    ended = time.monotonic()
    browser_up = min((at for at, line in lines['stdout'] + lines['stderr'] if BROWSER_UP in line), default=None)
    return ActorRun(process.returncode, ''.join(line for _, line in lines['stdout']),
                    ''.join(line for _, line in lines['stderr']), storage, ended - started,
                    None if browser_up is None else ended - browser_up)
