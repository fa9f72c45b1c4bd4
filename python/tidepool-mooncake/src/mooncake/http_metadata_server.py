"""``mooncake.http_metadata_server``: the HTTP metadata service (contract §4.3).

``mooncake_http_metadata_server --port 8080 --host 0.0.0.0`` or
``python -m mooncake.http_metadata_server``. Keys come URL-encoded in ``?key=``; re-PUT of any
key (``rpc_meta`` included) overwrites and answers 200 (W7). ``GET /health`` answers ``OK``.
Prints ``READY metadata=host:port`` once listening (the port may be 0 = any).
"""

import argparse
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.data: dict[str, bytes] = {}


def _handler(store: _Store):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet by default
            pass

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _key(self):
            url = urlsplit(self.path)
            return url.path, parse_qs(url.query).get("key", [""])[0]

        def do_GET(self):
            path, key = self._key()
            if path == "/health":
                return self._reply(200, b"OK")
            if path != "/metadata":
                return self._reply(404, b"not found")
            if not key:
                return self._reply(400, b"missing key")
            with store.lock:
                value = store.data.get(key)
            if value is None:
                return self._reply(404, b"metadata not found")
            return self._reply(200, value, "application/json")

        def do_PUT(self):
            path, key = self._key()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            if path != "/metadata":
                return self._reply(404, b"not found")
            if not key:
                return self._reply(400, b"missing key")
            with store.lock:
                store.data[key] = body
            return self._reply(200, b"metadata updated")

        def do_DELETE(self):
            path, key = self._key()
            if path != "/metadata":
                return self._reply(404, b"not found")
            if not key:
                return self._reply(400, b"missing key")
            with store.lock:
                found = store.data.pop(key, None) is not None
            if not found:
                return self._reply(404, b"metadata not found")
            return self._reply(200, b"metadata deleted")

        def _other(self):
            path, _ = self._key()
            if path == "/metadata":
                return self._reply(405, b"method not allowed")
            return self._reply(404, b"not found")

        do_POST = _other
        do_PATCH = _other

    return Handler


def serve(host: str = "0.0.0.0", port: int = 8080) -> ThreadingHTTPServer:
    """Starts the server in a background thread and returns it (``server_address`` has the port)."""
    server = ThreadingHTTPServer((host, port), _handler(_Store()))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="mooncake_http_metadata_server")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    args, unknown = p.parse_known_args(argv)
    for flag in unknown:
        print(f"warning: ignoring flag {flag}", file=sys.stderr)
    server = ThreadingHTTPServer((args.host, args.port), _handler(_Store()))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"READY metadata={host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
