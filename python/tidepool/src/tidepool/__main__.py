"""``python -m tidepool ARGS`` runs the ``tidepool`` binary (``master``, ``node``, ...)."""

import sys

from ._bin import exec_binary

exec_binary(sys.argv[1:])
