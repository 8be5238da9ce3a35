"""Loading the properties file: :func:`load` and the :class:`ConfigHolder` services keep.

``load(path)`` is atomic: it returns a complete, valid :class:`~config.model.Config` or raises
:class:`~config.errors.ConfigError` carrying every error found, each located as
``FILE:LINE: KEY: problem``.  Warnings (keys that are not cmcgate's, repeated keys) do not
fail a load; they are in ``Config.warnings`` (and in ``ConfigError.warnings``).

Load checks syntax and consistency; it reads no file the configuration merely names (P12,
roots, keys) — :func:`config.checks.check_files` does that for ``cmcgate config check`` —
except the YAML policy file, which is part of the configuration.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from config.build_gateway import (
    build_dkim,
    build_enrolment,
    build_gateway,
    build_keys,
    build_lookup,
    build_metrics,
    build_publish,
    build_smime,
    build_store,
)
from config.build_pki import build_pki
from config.build_policy import build_policy
from config.errors import CmcgateError, ConfigError, ConfigIssue
from config.model import Config
from config.reader import parse_text, read_file
from config.source import Props

log = logging.getLogger(__name__)


def load(path: str | os.PathLike[str]) -> Config:
    """The configuration in ``path``; ConfigError with every problem when it is not valid."""
    source = Path(path)
    entries, issues = read_file(source)
    return _build(Props(source, entries, issues))


def loads(text: str, path: str | os.PathLike[str] = "<string>") -> Config:
    """Like :func:`load` for text already read; ``path`` names it and anchors relative paths."""
    source = Path(path)
    entries, issues = parse_text(text, str(source))
    return _build(Props(source, entries, issues))


def _build(p: Props) -> Config:
    pki = build_pki(p)
    gateway = build_gateway(p)
    policy, policy_file = build_policy(p, gateway.internal_domains)
    dkim = build_dkim(p)
    store = build_store(p)
    keys = build_keys(p)
    lookup = build_lookup(p)
    publish = build_publish(p)
    enrolment = build_enrolment(p)
    metrics = build_metrics(p)
    smime = build_smime(p)
    if pki is not None and pki.enrol_internal_users and keys is None:
        p.error(
            "cmcgate.keys.backend",
            "missing: getFromPKIForNewIntUsers=true needs a key backend for the users' keys",
            p.line("security.pkiConnection.getFromPKIForNewIntUsers"),
        )
    errors = [issue for issue in p.issues if issue.is_error]
    warnings = [issue for issue in p.issues if not issue.is_error]
    if errors:
        raise ConfigError(errors, warnings)
    origins = {p.written(key): entry.line for key, entry in p.values.items()}
    return Config(
        source=p.path,
        pki=pki,
        gateway=gateway,
        policy=policy,
        policy_file=policy_file,
        dkim=dkim,
        store=store,
        keys=keys,
        lookup=lookup,
        publish=publish,
        enrolment=enrolment,
        metrics_listen=metrics,
        smime=smime,
        warnings=tuple(warnings),
        origins=MappingProxyType(origins),
    )


class ConfigHolder:
    """The current configuration of a service; :meth:`reload` swaps it only when valid.

    Construction loads the file and raises ConfigError when it is bad (a service must not
    start on a broken configuration).  Later reloads keep the old configuration on error,
    log one line with every error and return them.  Listeners run after each successful reload.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loader: Callable[[str | os.PathLike[str]], Config] = load,
    ) -> None:
        self.path = Path(path)
        self._loader = loader
        self._lock = threading.Lock()
        self._config = loader(self.path)
        self._listeners: list[Callable[[Config], None]] = []
        self.last_errors: tuple[ConfigIssue, ...] = ()

    @property
    def current(self) -> Config:
        with self._lock:
            return self._config

    def subscribe(self, listener: Callable[[Config], None]) -> None:
        self._listeners.append(listener)

    def reload(self, check: Callable[[Config], None] | None = None) -> tuple[ConfigIssue, ...]:
        """Load the file again; () when it was applied, else its errors (old config kept).

        ``check`` sees the loaded configuration before it becomes current and refuses it by
        raising :class:`~config.errors.CmcgateError` (a file it names cannot be used, say):
        that is returned as one issue.  A refused reload is logged as one line.
        """
        try:
            config = self._loader(self.path)
            if check is not None:
                check(config)
        except ConfigError as exc:
            return self._refused(exc.errors)
        except CmcgateError as exc:
            return self._refused((ConfigIssue(str(self.path), None, "", str(exc)),))
        for issue in config.warnings:
            log.warning("%s", issue)
        with self._lock:
            self._config = config
        self.last_errors = ()
        log.info("configuration reloaded from %s", self.path)
        for listener in list(self._listeners):
            listener(config)
        return ()

    def _refused(self, errors: tuple[ConfigIssue, ...]) -> tuple[ConfigIssue, ...]:
        log.error(
            "configuration not reloaded, the running one is kept: %s",
            "; ".join(str(issue) for issue in errors),
        )
        self.last_errors = errors
        return errors

    def install_sighup(self, loop: Any = None) -> None:
        """Reload on SIGHUP: through ``loop.add_signal_handler`` when an asyncio loop is given."""
        if loop is not None:
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        else:
            signal.signal(signal.SIGHUP, lambda _signum, _frame: self.reload())
