"""What the fakes share: serving a handler class on a free port in a background thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
