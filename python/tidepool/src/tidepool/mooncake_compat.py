"""Mooncake's ``MooncakeDistributedStore`` on top of ``tidepool.Store`` (contract §1).

The native class already follows Mooncake's method set and return conventions; this module adds
the two ``setup`` overloads (§1.3) with their argument rules, the ``MC_*`` environment variables
that apply to ``setup`` (§5.3), and ``setup_dummy``.
"""

import logging
import os

from ._native import Store, parse_bool, parse_size

log = logging.getLogger("tidepool.mooncake")

INVALID_PARAMS = -600
KIB = 1024
TIB = 1 << 40

_DICT_DEFAULTS = {
    "global_segment_size": str(16 << 20),
    "local_buffer_size": str(16 << 20),
    "protocol": "tcp",
    "rdma_devices": "",
    "master_server_addr": "127.0.0.1:50051",
    "enable_ssd_offload": "false",
    "ssd_offload_path": "",
    "tenant_id": "default",
    "enable_client_http_server": "false",
    "client_http_port": "9300",
}


def _need_str(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    return value


def _need_size(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be int, got {type(value).__name__}")
    if value < 0 or value >= 1 << 64:
        raise TypeError(f"{name} must be a non-negative int below 2**64")
    return value


def _need_bool(name, value):
    if not isinstance(value, (bool, int)):
        raise TypeError(f"{name} must be bool, got {type(value).__name__}")
    return bool(value)


def _env_ms(name, default):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not an integer", name, raw)
        return default


class MooncakeDistributedStore(Store):
    """Drop-in for ``mooncake.store.MooncakeDistributedStore``; see contract §1.4 and §1.5."""

    def setup(self, *args, **kwargs):
        """``setup(local_hostname, metadata_server, global_segment_size, local_buffer_size,
        protocol, rdma_devices, master_server_addr, engine=None, ...)`` or ``setup(config)``."""
        if len(args) == 1 and not kwargs and isinstance(args[0], dict):
            return self._setup_dict(args[0])
        if not args and list(kwargs) == ["config"] and isinstance(kwargs["config"], dict):
            return self._setup_dict(kwargs["config"])
        return self._setup_args(*args, **kwargs)

    def _setup_args(
        self,
        local_hostname,
        metadata_server,
        global_segment_size,
        local_buffer_size,
        protocol,
        rdma_devices,
        master_server_addr,
        engine=None,
        enable_ssd_offload=False,
        ssd_offload_path="",
        tenant_id="default",
        enable_client_http_server=False,
        client_http_port=9300,
    ):
        # Every type check runs before any work (TypeError, §1.2).
        _need_str("local_hostname", local_hostname)
        _need_str("metadata_server", metadata_server)
        _need_size("global_segment_size", global_segment_size)
        _need_size("local_buffer_size", local_buffer_size)
        _need_str("protocol", protocol)
        _need_str("rdma_devices", rdma_devices)
        _need_str("master_server_addr", master_server_addr)
        _need_bool("enable_ssd_offload", enable_ssd_offload)
        _need_str("ssd_offload_path", ssd_offload_path)
        _need_str("tenant_id", tenant_id)
        _need_bool("enable_client_http_server", enable_client_http_server)
        _need_size("client_http_port", client_http_port)
        if engine is not None:
            log.warning("setup: engine= is ignored until the transfer engine API exists (P4)")
        return self._start(
            local_hostname,
            metadata_server,
            global_segment_size,
            local_buffer_size,
            protocol,
            master_server_addr,
            bool(enable_ssd_offload),
            bool(enable_client_http_server),
            client_http_port,
        )

    def _setup_dict(self, config):
        cfg = {k: str(v) for k, v in config.items()}
        for alias, name in (("device_name", "rdma_devices"), ("master_server_address", "master_server_addr")):
            if alias in cfg and name not in cfg:
                cfg[name] = cfg[alias]
        merged = dict(_DICT_DEFAULTS)
        merged.update(cfg)
        hostname = merged.get("local_hostname", "")
        metadata = merged.get("metadata_server", "")
        if not hostname or not metadata:
            log.error("setup: local_hostname and metadata_server are required")
            return INVALID_PARAMS
        try:
            segment = parse_size(merged["global_segment_size"])
            local = parse_size(merged["local_buffer_size"])
            ssd = parse_bool(merged["enable_ssd_offload"])
            http = parse_bool(merged["enable_client_http_server"])
            http_port = int(merged["client_http_port"])
        except ValueError as e:
            log.error("setup: %s", e)
            return INVALID_PARAMS
        if local != 0 and not (KIB <= local <= TIB):
            log.error("setup: local_buffer_size must be 0 or in [1 KiB, 1 TiB]")
            return INVALID_PARAMS
        return self._start(
            hostname, metadata, segment, local, merged["protocol"], merged["master_server_addr"], ssd, http, http_port
        )

    def _start(self, hostname, metadata, segment, local, protocol, master, ssd, http, http_port=9300):
        """Checks the semantic rules of §1.3 and connects; 0 or a §2 code."""
        if not hostname:
            log.error("setup: empty local_hostname")
            return INVALID_PARAMS
        scheme = metadata.split("://", 1)[0].lower() if "://" in metadata else ""
        if metadata != "P2PHANDSHAKE" and scheme not in ("http", "etcd", ""):
            # P2PHANDSHAKE, http://, etcd://h:2379[;h2:2379] and bare h:2379 (= etcd) pass
            # through to the native client, which checks their form; redis:// is not supported.
            log.error(
                "setup: unsupported metadata_server %r (use P2PHANDSHAKE, http://… or etcd://…)", metadata
            )
            return INVALID_PARAMS
        if 0 < segment < KIB:
            log.error("setup: global_segment_size must be 0 or at least 1 KiB")
            return INVALID_PARAMS
        proto = protocol.lower()
        if proto == "rdma":
            if os.environ.get("MC_FORCE_TCP", "") in ("1", "true", "TRUE", "True"):
                log.warning("setup: protocol rdma forced to tcp (MC_FORCE_TCP)")
            else:
                log.error("setup: protocol rdma is not available yet; set MC_FORCE_TCP=1 for tcp")
                return INVALID_PARAMS
        elif proto != "tcp":
            log.error("setup: unknown protocol %r", protocol)
            return INVALID_PARAMS
        if not master or "://" in master:
            log.error("setup: master_server_addr must be host:port (HA locators come later): %r", master)
            return INVALID_PARAMS
        if ssd:
            log.error("setup: enable_ssd_offload needs an SSD tier, which this build lacks")
            return INVALID_PARAMS
        # The segment is named after local_hostname; MC_TCP_BIND_ADDRESS (read by the native
        # side) only chooses the address the data server binds.
        timeout = _env_ms("MC_RPC_CONNECT_TIMEOUT_MS", 30000)
        self._stop_http()
        rc = self._connect(master, hostname, segment, local, timeout, metadata)
        if rc == 0 and http:
            self._start_http(http_port)
        return rc

    def close(self):
        self._stop_http()
        return super().close()

    def _start_http(self, port):
        """The client HTTP endpoint (contract §4.5): ``GET /health``, ``/metrics``,
        ``/metrics/summary``. A port that cannot be bound is logged, not fatal."""
        from ._client_http import serve

        try:
            self.__dict__["_http"] = serve(self, "0.0.0.0", port)
        except OSError as e:
            log.error("setup: client HTTP server on port %s: %s", port, e)

    def _stop_http(self):
        srv = self.__dict__.pop("_http", None)
        if srv is not None:
            srv.shutdown()
            srv.server_close()

    def setup_dummy(self, mem_pool_size, local_buffer_size, server_address):
        """Thin-client (standalone) mode: forward every call to the ``mooncake_client`` /
        ``tidepool node`` serving thin clients at ``server_address`` (its ``--port``, 50052 by
        default) on this host. Memory from ``MooncakeHostMemAllocator`` and a staging buffer of
        ``local_buffer_size`` bytes are shared with it, so zero-copy calls on them move no bytes
        through this process; other pointers and ``bytes`` values are copied over the socket.
        ``mem_pool_size`` is accepted for Mooncake's signature: the pool lives in the node.
        Returns 0 or a §2 code (-900 when nothing answers)."""
        _need_size("mem_pool_size", mem_pool_size)
        _need_size("local_buffer_size", local_buffer_size)
        _need_str("server_address", server_address)
        if not server_address or "://" in server_address or ":" not in server_address:
            log.error("setup_dummy: server_address must be host:port, got %r", server_address)
            return INVALID_PARAMS
        if local_buffer_size != 0 and not (KIB <= local_buffer_size <= TIB):
            log.error("setup_dummy: local_buffer_size must be 0 or in [1 KiB, 1 TiB]")
            return INVALID_PARAMS
        self._stop_http()
        connect = _env_ms("MC_RPC_CONNECT_TIMEOUT_MS", 30000)
        call = _env_ms("MC_RPC_TIMEOUT_MS", 30000)
        return self._connect_dummy(server_address, local_buffer_size, connect, call)
