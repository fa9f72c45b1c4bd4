"""Locating and running the ``tidepool`` executable."""

import os
import shutil
import sys
from pathlib import Path


def binary_path() -> str:
    """``$TIDEPOOL_BIN``, else the binary shipped in this package, else ``tidepool`` on PATH."""
    env = os.environ.get("TIDEPOOL_BIN")
    if env:
        return env
    shipped = Path(__file__).resolve().parent / "bin" / "tidepool"
    if shipped.is_file():
        return str(shipped)
    found = shutil.which("tidepool")
    if found:
        return found
    raise FileNotFoundError(
        "tidepool binary not found: set TIDEPOOL_BIN or install a tidepool wheel that ships it"
    )


def exec_binary(args: list[str]) -> None:
    """Replaces this process with ``tidepool ARGS`` (signals and exit codes pass through)."""
    path = binary_path()
    try:
        os.execv(path, [path, *args])
    except OSError as e:
        print(f"cannot run {path}: {e}", file=sys.stderr)
        raise SystemExit(127) from e
