"""``mooncake.mooncake_store_service`` (also ``mc_store_rest_server``): a REST front end for a
store (contract §4.2).

Config: ``--config FILE``, else ``MOONCAKE_CONFIG_PATH``, else ``MOONCAKE_*`` variables; then
every ``-D key=value`` override. Serves on ``--port`` (8080):
``PUT /api/put`` (JSON ``{"key", "value"}`` → 200 / 400 / 500), ``GET /api/get/{key}``
(200 octet-stream / 404), ``GET /api/exist/{key}`` (``{"exists": bool}``),
``DELETE /api/remove/{key}``, ``DELETE /api/remove_all``.
"""

import argparse
import json
import sys
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from .mooncake_config import MooncakeConfig
from .store import MooncakeDistributedStore


def _handler(store):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def _reply(self, code, body, ctype="application/json"):
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _key(self, prefix):
            return unquote(self.path[len(prefix) :]) if self.path.startswith(prefix) else None

        def do_PUT(self):
            if self.path != "/api/put":
                return self._reply(404, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            try:
                req = json.loads(self.rfile.read(length) or b"{}")
                key, value = req["key"], req["value"]
                if not isinstance(key, str) or not key:
                    raise ValueError("key must be a non-empty string")
                data = value.encode() if isinstance(value, str) else bytes(value)
            except (ValueError, KeyError, TypeError) as e:
                return self._reply(400, {"error": str(e)})
            rc = store.put(key, data)
            if rc != 0:
                return self._reply(500, {"error": f"put failed: {rc}", "code": rc})
            return self._reply(200, {"status": "ok"})

        def do_GET(self):
            key = self._key("/api/get/")
            if key is not None:
                data = store.get(key)
                if not data:
                    return self._reply(404, {"error": "not found"})
                return self._reply(200, data, "application/octet-stream")
            key = self._key("/api/exist/")
            if key is not None:
                return self._reply(200, {"exists": store.is_exist(key) == 1})
            return self._reply(404, {"error": "not found"})

        def do_DELETE(self):
            if self.path == "/api/remove_all":
                n = store.remove_all()
                return self._reply(200 if n >= 0 else 500, {"removed": n})
            key = self._key("/api/remove/")
            if key is None:
                return self._reply(404, {"error": "not found"})
            rc = store.remove(key)
            if rc == 0:
                return self._reply(200, {"status": "ok"})
            return self._reply(404 if rc == -704 else 500, {"error": f"remove failed: {rc}", "code": rc})

    return Handler


def load_config(config_path, overrides):
    """The config of §5.4's REST-service path: file, else environment, then ``-D`` overrides."""
    base = asdict(MooncakeConfig.from_file(config_path) if config_path else MooncakeConfig.load_from_env())
    for item in overrides:
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"-D expects key=value, got {item!r}")
        base[k.strip()] = v.strip()
    return MooncakeConfig.from_dict(base)


def main(argv=None):
    p = argparse.ArgumentParser(prog="mc_store_rest_server")
    p.add_argument("--config", default=None)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("-D", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OSError) as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(1) from e
    store = MooncakeDistributedStore()
    rc = store.setup(
        cfg.local_hostname,
        cfg.metadata_server,
        cfg.global_segment_size,
        cfg.local_buffer_size,
        cfg.protocol,
        cfg.device_name,
        cfg.master_server_address,
    )
    if rc != 0:
        print(f"store setup failed: {rc}", file=sys.stderr)
        raise SystemExit(1)
    server = ThreadingHTTPServer((args.host, args.port), _handler(store))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"READY rest={host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


if __name__ == "__main__":
    main()
