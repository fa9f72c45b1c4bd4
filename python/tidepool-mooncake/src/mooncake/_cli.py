"""Console scripts ``mooncake_master`` and ``mooncake_client``: run the ``tidepool`` binary
(``tidepool master`` / ``tidepool node``) with Mooncake's flags unchanged (contract §4)."""

import sys

from tidepool._bin import exec_binary


def master() -> None:
    """``mooncake_master [flags]`` → ``tidepool master [flags]``."""
    exec_binary(["master", *sys.argv[1:]])


def client() -> None:
    """``mooncake_client [flags]`` → ``tidepool node [flags]``."""
    exec_binary(["node", *sys.argv[1:]])
