"""What the fakes share: a quiet keep-alive handler, and serving it on a free port in a background thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive and no Nagle delay (else keep-alive clients stall 40 ms on delayed ACKs), quiet."""

    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # tests read counters, not logs
        pass

    def _send(self, status: int, body: bytes = b'', content_type: str = 'text/html; charset=utf-8',
              headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)


class ServedInThread:
    """Mixin for a fake with ``host``, ``port`` and a ``handler`` class whose ``fake`` attribute is set to it."""

    handler: type[BaseHTTPRequestHandler]
    host: str
    port: int
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f'http://{self.host}:{self.port}'

    def start(self):
        handler = type('Handler', (self.handler,), {'fake': self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name=type(self).__name__).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def serve_until_interrupted(self, banner: str) -> None:
        """Run as a demo server: say where and how, then serve until Ctrl-C."""
        self.start()
        print(f'{banner} on {self.url}', flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            self.stop()
