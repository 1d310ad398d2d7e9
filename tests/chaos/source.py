"""The reports' data source: an HTTP JSON API on loopback that can fail or hang on command."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests import factories
from tests.e2e.conftest import free_port

PATH = "/api/positions"
FIGURE = "Globex 4.25% 2032"  # a row of factories.POSITIONS that every report email shows
READ_TIMEOUT = 3.0  # the chaos data source's read timeout (scenario.create_reports)


class ChaosSource:
    """Serves factories.POSITIONS at /api/positions; `fail(status)` and `hang(delay)` break it."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.status = 200
        self.delay = 0.0
        self.answered: Counter[str] = Counter()  # "200", "503", "slow", "timed out", …
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="chaos-source", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, status: int) -> None:
        self.status, self.delay = status, 0.0

    def hang(self, delay: float) -> None:
        self.status, self.delay = 200, delay

    def normal(self) -> None:
        self.status, self.delay = 200, 0.0

    def count(self, outcome: str) -> None:
        with self._lock:
            self.answered[outcome] += 1


def _handler_for(source: ChaosSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, delay = source.status, source.delay
            if self.path.split("?")[0] != PATH:
                self._answer(404, {"error": "not found"})
                return
            if delay:
                source.count("slow" if delay < READ_TIMEOUT else "timed out")
                time.sleep(delay)
            else:
                source.count(str(status))
            if status == 200:
                self._answer(200, factories.POSITIONS)
            else:
                self._answer(status, {"error": "outage injected by the chaos harness"})

        def _answer(self, status: int, body: object) -> None:
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up waiting
                pass

        def log_message(self, format: str, *args) -> None:  # quiet: the harness counts answers
            pass

    return Handler
