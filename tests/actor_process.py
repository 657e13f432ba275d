"""Run the login actor as a subprocess with its own Apify local storage, as `cd actor && python -m src` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACTOR_DIR = Path(__file__).resolve().parent.parent / 'actor'


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

    @property
    def dataset_items(self) -> list[dict]:
        files = sorted((self.storage / 'datasets' / 'default').glob('0*.json'))
        return [json.loads(path.read_text()) for path in files]


def run_actor_process(actor_input: dict, storage: Path, chromium: str | None, timeout: float = 120) -> ActorRun:
    (storage / 'key_value_stores' / 'default').mkdir(parents=True)
    (storage / 'key_value_stores' / 'default' / 'INPUT.json').write_text(json.dumps(actor_input))
    env = {**os.environ, 'APIFY_LOCAL_STORAGE_DIR': str(storage), 'NO_COLOR': '1'}
    if chromium:
        env['CHROMIUM_PATH'] = chromium
    started = time.monotonic()
    done = subprocess.run([sys.executable, '-m', 'src'], cwd=ACTOR_DIR, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return ActorRun(done.returncode, done.stdout, done.stderr, storage, time.monotonic() - started)
