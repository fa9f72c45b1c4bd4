"""The client HTTP endpoint of a store (contract §4.5, Mooncake's port 9300)."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_STATUS = {0: "healthy", 1: "not_initialized", 2: "master_unreachable"}


def serve(store, host, port):
    """Serves ``store``'s health and metrics on ``host:port`` from a daemon thread."""
    metrics_on = os.environ.get("MC_STORE_CLIENT_METRIC", "1") not in ("0", "false", "False")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def _reply(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                code = store.health_check()
                body = json.dumps({"status": _STATUS.get(code, "unknown"), "code": code}).encode()
                return self._reply(200 if code == 0 else 503, body, "application/json")
            if self.path in ("/metrics", "/metrics/summary"):
                if not metrics_on:
                    return self._reply(503, b"client metrics are disabled", "text/plain")
                healthy = 1 if store.health_check() == 0 else 0
                if self.path == "/metrics":
                    body = f"# TYPE tidepool_client_healthy gauge\ntidepool_client_healthy {healthy}\n"
                    return self._reply(200, body.encode(), "text/plain; version=0.0.4")
                body = f"segment={store.get_hostname()}, healthy={bool(healthy)}\n"
                return self._reply(200, body.encode(), "text/plain")
            return self._reply(404, b"not found", "text/plain")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
