"""Process control of ``cmcgate gateway run``: signals, configuration reload, readiness.

Shared by a single gateway process and the supervisor of several (:mod:`gateway.smtp.workers`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from config.model import Config
from config.properties import ConfigHolder

log = logging.getLogger("cmcgate.gateway")


class ControlSignals:
    """SIGTERM/SIGINT set :attr:`stop`, SIGHUP asks for a reload.

    Installed before anything listens: a SIGHUP sent as soon as the port answers must not
    meet SIGHUP's default action, which ends the process.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._reload = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def take_reload(self) -> bool:
        """Whether a reload was asked for since the last call."""
        if not self._reload.is_set():
            return False
        self._reload.clear()
        return True


#: the variable naming the pipe a worker writes to once it listens (set by gateway.smtp.workers)
READY_FD_VARIABLE = "CMCGATE_READY_FD"


def reload_config(holder: ConfigHolder, check: Callable[[Config], None]) -> bool:
    """Re-read the properties file; False when it is refused (logged as one line by the
    holder).  ``check`` (e.g. :meth:`RunningGateway.apply`) may refuse it too."""
    return not holder.reload(check)


def _report_ready() -> None:
    """Tell the supervisor (gateway.smtp.workers) that this worker listens."""
    fd = os.environ.pop(READY_FD_VARIABLE, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready")
        os.close(int(fd))
    except (OSError, ValueError):
        log.warning("could not report readiness to the supervisor")
