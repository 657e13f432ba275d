"""The browser extension as browsers and Mozilla's linter see it: its manifest and `web-ext lint`."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import ROOT

EXTENSION = ROOT / 'extension'


def test_the_extension_asks_for_strava_cookies_storage_and_a_timer_only():
    manifest = json.loads((EXTENSION / 'manifest.json').read_text())
    assert manifest['manifest_version'] == 3
    assert sorted(manifest['permissions']) == ['alarms', 'cookies', 'storage']
    assert manifest['host_permissions'] == ['https://*.strava.com/*']
    assert 'optional_permissions' not in manifest and 'content_scripts' not in manifest
    assert manifest['background']['scripts'] == [manifest['background']['service_worker']], 'Firefox runs the same file'
    assert manifest['browser_specific_settings']['gecko']['id']
    icons = [*manifest['icons'].values(), *manifest['action']['default_icon'].values()]
    for path in [manifest['options_ui']['page'], *icons]:
        assert (EXTENSION / path).is_file(), path


def test_web_ext_lint_finds_no_errors(web_ext):
    done = subprocess.run([str(web_ext), 'lint', '--source-dir', str(EXTENSION), '--output', 'json',
                           '--no-config-discovery'], capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert report['errors'] == [] and report['summary']['errors'] == 0, report['errors']
    # Firefox ignores the service worker that Chromium runs; it runs the same file as a background script.
    assert {w['code'] for w in report['warnings']} <= {'BACKGROUND_SERVICE_WORKER_IGNORED'}, report['warnings']
