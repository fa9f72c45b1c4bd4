"""``mooncake.mooncake_config``: the JSON config file and ``MOONCAKE_*`` variables (§5)."""

import json
import os
from dataclasses import dataclass

from tidepool import parse_bool, parse_size

DEFAULT_GLOBAL_SEGMENT_SIZE = 3355443200
DEFAULT_LOCAL_BUFFER_SIZE = 1073741824


def _size(value, name):
    try:
        return parse_size(str(value))
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e


@dataclass
class MooncakeConfig:
    """The common keys of Mooncake's config file, read the way Mooncake reads them."""

    local_hostname: str
    metadata_server: str
    global_segment_size: int
    local_buffer_size: int
    protocol: str
    device_name: str
    master_server_address: str
    enable_ssd_offload: bool = False
    ssd_offload_path: str = ""
    tenant_id: str = "default"
    enable_client_http_server: bool = False
    client_http_port: int = 9300

    @staticmethod
    def from_dict(d: dict) -> "MooncakeConfig":
        for key in ("local_hostname", "metadata_server", "master_server_address"):
            if key not in d:
                raise ValueError(f"missing required config key {key!r}")
        return MooncakeConfig(
            local_hostname=str(d["local_hostname"]),
            metadata_server=str(d["metadata_server"]),
            global_segment_size=_size(d.get("global_segment_size", DEFAULT_GLOBAL_SEGMENT_SIZE), "global_segment_size"),
            local_buffer_size=_size(d.get("local_buffer_size", DEFAULT_LOCAL_BUFFER_SIZE), "local_buffer_size"),
            protocol=str(d.get("protocol", "tcp")).lower(),
            device_name=d.get("device_name", "") if isinstance(d.get("device_name", ""), str) else json.dumps(d["device_name"]),
            master_server_address=str(d["master_server_address"]),
            enable_ssd_offload=parse_bool(str(d.get("enable_ssd_offload", False))),
            ssd_offload_path=str(d.get("ssd_offload_path", "")),
            tenant_id=str(d.get("tenant_id", "default")),
            enable_client_http_server=parse_bool(str(d.get("enable_client_http_server", False))),
            client_http_port=int(d.get("client_http_port", 9300)),
        )

    @staticmethod
    def from_file(path: str) -> "MooncakeConfig":
        with open(path, encoding="utf-8") as f:
            return MooncakeConfig.from_dict(json.load(f))

    @staticmethod
    def load_from_env() -> "MooncakeConfig":
        """``MOONCAKE_CONFIG_PATH`` alone if set, else ``MOONCAKE_*`` (``MOONCAKE_MASTER`` required)."""
        path = os.environ.get("MOONCAKE_CONFIG_PATH")
        if path:
            return MooncakeConfig.from_file(path)
        master = os.environ.get("MOONCAKE_MASTER")
        if not master:
            raise ValueError("neither MOONCAKE_CONFIG_PATH nor MOONCAKE_MASTER is set")
        env = os.environ.get
        return MooncakeConfig(
            local_hostname=env("MOONCAKE_LOCAL_HOSTNAME", "localhost"),
            metadata_server=env("MOONCAKE_TE_META_DATA_SERVER", "P2PHANDSHAKE"),
            global_segment_size=_size(env("MOONCAKE_GLOBAL_SEGMENT_SIZE", str(DEFAULT_GLOBAL_SEGMENT_SIZE)), "MOONCAKE_GLOBAL_SEGMENT_SIZE"),
            local_buffer_size=_size(env("MOONCAKE_LOCAL_BUFFER_SIZE", str(DEFAULT_LOCAL_BUFFER_SIZE)), "MOONCAKE_LOCAL_BUFFER_SIZE"),
            protocol=env("MOONCAKE_PROTOCOL", "tcp").lower(),
            device_name=env("MOONCAKE_DEVICE", ""),
            master_server_address=master,
            enable_ssd_offload=parse_bool(env("MOONCAKE_OFFLOAD_ENABLED", "false")),
            ssd_offload_path=env("MOONCAKE_OFFLOAD_FILE_STORAGE_PATH", ""),
            tenant_id=env("MOONCAKE_TENANT_ID", "default"),
            enable_client_http_server=parse_bool(env("MOONCAKE_ENABLE_CLIENT_HTTP_SERVER", "false")),
            client_http_port=int(env("MOONCAKE_CLIENT_HTTP_PORT", "9300")),
        )
