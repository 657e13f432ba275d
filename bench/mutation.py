"""Mutation testing of the pure modules: mutmut (configured in pyproject.toml) against their unit tests.

    .venv/bin/python bench/mutation.py

Starts afresh (``mutants/`` is removed), runs every mutant of heatmap/layers.py, heatmap/cookies.py,
actor/src/strava_cookies.py, heatmap/access.py, heatmap/overzoom.py and heatmap/packs/area.py, and prints a table
per module: mutants, killed, the survivors listed as equivalent in docs/mutation.md, the others, and the score
(killed of those not equivalent). About 8 minutes on two cores; not run in CI. ``.venv/bin/mutmut browse`` shows
a survivor's diff. Mutant names follow the code: after a change, look at the survivors again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).with_name('mutmut')


def equivalents() -> set[str]:
    """The mutant names that docs/mutation.md lists as equivalent (each in backquotes at the start of an item)."""
    text = (ROOT / 'docs' / 'mutation.md').read_text()
    return set(re.findall(r'^- `([\w.ǁ]+__mutmut_\d+)`', text, re.MULTILINE))


def main() -> int:
    shutil.rmtree(ROOT / 'mutants', ignore_errors=True)
    started = time.monotonic()
    run = subprocess.run([str(MUTMUT), 'run', '--max-children', '2'], cwd=ROOT, stdout=subprocess.DEVNULL)
    minutes = (time.monotonic() - started) / 60
    results = subprocess.run([str(MUTMUT), 'results', '--all', 'true'], cwd=ROOT, capture_output=True, text=True)
    counts: dict[str, Counter] = defaultdict(Counter)
    listed, survivors = equivalents(), []
    for name, status in re.findall(r'^\s*(\S+__mutmut_\d+): (.+)$', results.stdout, re.MULTILINE):
        module = re.sub(r'\.x[_ǁ].*$', '', name)
        counts[module]['mutants'] += 1
        if status.strip() == 'killed':
            counts[module]['killed'] += 1
        elif name in listed:
            counts[module]['equivalent'] += 1
        else:
            counts[module]['surviving'] += 1
            survivors.append(f'{name}: {status.strip()}')
    print(f'{"module":28} {"mutants":>7} {"killed":>7} {"equiv.":>7} {"surv.":>7} {"score":>7}')
    for module, count in counts.items():
        score = count['killed'] / (count['mutants'] - count['equivalent'])
        print(f'{module:28} {count["mutants"]:7} {count["killed"]:7} {count["equivalent"]:7} {count["surviving"]:7} '
              f'{score:7.1%}')
    print(f'{minutes:.1f} minutes; surviving, not listed as equivalent:', *survivors, sep='\n  ')
    return run.returncode


if __name__ == '__main__':
    sys.exit(main())
