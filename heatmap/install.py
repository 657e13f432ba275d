"""The one line for an interpreter that lacks the server's install: a fresh clone run with the system's Python, or
a venv from before an upgrade added a requirement."""

from __future__ import annotations

import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / 'requirements.txt'


def missing_install(module: str, executable: str = sys.executable, in_venv: bool = sys.prefix != sys.base_prefix,
                    requirements: Path = REQUIREMENTS) -> str:
    """What to run when ``module``, which the server needs, cannot be imported by ``executable``.

    >>> missing_install('bottle', '/usr/bin/python3', in_venv=False, requirements=Path('/srv/h/requirements.txt'))
    'bottle is not installed for /usr/bin/python3: give the server a venv of its own and run it from there: \
python3 -m venv /srv/h/.venv && /srv/h/.venv/bin/pip install -q -r /srv/h/requirements.txt && \
/srv/h/.venv/bin/python /srv/h/redirector.py'
    >>> missing_install('shapely', '/srv/h/.venv/bin/python', True, Path('/srv/h/requirements.txt'))
    'shapely is not installed for /srv/h/.venv/bin/python: install what this version needs: \
/srv/h/.venv/bin/python -m pip install -q -r /srv/h/requirements.txt'
    """
    if in_venv:
        return (f'{module} is not installed for {executable}: install what this version needs: '
                f'{executable} -m pip install -q -r {requirements}')
    venv = requirements.parent / '.venv'
    return (f'{module} is not installed for {executable}: give the server a venv of its own and run it from there: '
            f'python3 -m venv {venv} && {venv}/bin/pip install -q -r {requirements} && '
            f'{venv}/bin/python {requirements.parent / "redirector.py"}')
