"""Parsers for property values: each returns a typed value or raises ValueProblem.

Messages quote the offending value shortened to 40 characters; callers never pass values of
keys that may hold secrets (there are none among the accepted keys: secrets come from files
or environment variables).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from config.errors import CmcgateError

E = TypeVar("E", bound=str)

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_RE = re.compile(r"^([0-9]{1,9})\s*([smhd]?)$", re.IGNORECASE)
_SIZE_RE = re.compile(r"^([0-9]{1,12})\s*([kmg]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class ValueProblem(CmcgateError):
    """One value that does not parse; turned into a ConfigIssue by the caller."""


def shown(value: str) -> str:
    """``value`` quoted for a message, at most 40 characters."""
    return repr(value if len(value) <= 40 else value[:37] + "...")


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ValueProblem(f"expected true or false, not {shown(value)}")


def is_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``¹``, ``²`` and other digits that
    int() refuses)."""
    return text.isascii() and text.isdigit()


def parse_int(value: str, *, minimum: int, maximum: int) -> int:
    if not re.fullmatch(r"[+-]?[0-9]{1,18}", value):
        raise ValueProblem(f"expected a whole number, not {shown(value)}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise ValueProblem(f"{number} is out of range {minimum}-{maximum}")
    return number


def parse_port(value: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]{1,18}", value):
        raise ValueProblem(f"expected a port number 1-65535, not {shown(value)}")
    return parse_int(value, minimum=1, maximum=65535)


def parse_seconds(value: str, *, minimum: float = 0.001, maximum: float = 86400.0) -> float:
    try:
        number = float(value) if re.fullmatch(r"[0-9]{1,9}(?:\.[0-9]{1,6})?", value) else None
    except ValueError:
        number = None
    if number is None:
        raise ValueProblem(f"expected a number of seconds, not {shown(value)}")
    if not minimum <= number <= maximum:
        raise ValueProblem(f"{value} is out of range {minimum:g}-{maximum:g} seconds")
    return number


def parse_duration(value: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` -> seconds."""
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueProblem(f"expected a duration such as 3600, 30m, 1h or 7d, not {shown(value)}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_size(value: str) -> int:
    """``52428800``, ``50M``, ``512K``, ``1G`` (binary multiples) -> bytes."""
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueProblem(f"expected a size such as 52428800, 512K or 50M, not {shown(value)}")
    size = int(match.group(1)) * _SIZES[match.group(2).lower()]
    if size < 1024:
        raise ValueProblem(f"{size} bytes is too small for a mail size limit")
    return size


def parse_choice(value: str, choices: Iterable[E]) -> E:
    options = list(choices)
    for option in options:
        if value.lower() == option.lower():
            return option
    raise ValueProblem(f"expected one of {', '.join(options)}, not {shown(value)}")


def parse_hostname(value: str) -> str:
    """A DNS name or an IP address (IPv6 with or without brackets); lower-cased."""
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if "://" in value:
        raise ValueProblem(f"expected a host name without a scheme, not {shown(value)}")
    if not _HOSTNAME_RE.match(value):
        raise ValueProblem(f"{shown(value)} is not a host name")
    return value.rstrip(".").lower()


def parse_domain(value: str) -> str:
    lowered = value.strip().lower().rstrip(".")
    try:
        ipaddress.ip_address(lowered)
    except ValueError:
        if _HOSTNAME_RE.match(lowered):
            return lowered
    raise ValueProblem(f"{shown(value)} is not a domain name (write IDNs as xn--...)")


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_host_port(value: str, *, default_port: int | None = None) -> HostPort:
    """``host:port``, ``[v6]:port``, or ``host`` alone when there is a default port."""
    match = re.fullmatch(r"\[([^\]]+)\](?::(.*))?|([^:\[\]]+)(?::(.*))?", value)
    if not match:
        raise ValueProblem(f"expected host:port (IPv6 as [addr]:port), not {shown(value)}")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) if match.group(1) else match.group(4)
    if port_text is None:
        if default_port is None:
            raise ValueProblem(f"{shown(value)} has no :port")
        port = default_port
    else:
        port = parse_port(port_text)
    return HostPort(parse_hostname(host), port)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueProblem(f"{shown(value)} is not an address or network (CIDR)") from None
    raise ValueProblem(f"{shown(value)} has host bits set: did you mean {loose}?")


def parse_env_name(value: str) -> str:
    if not _ENV_RE.match(value):
        raise ValueProblem(f"{shown(value)} is not an environment variable name")
    return value


def parse_path(value: str, base_dir: Path) -> Path:
    """A path; relative paths are relative to the properties file's directory."""
    if "\x00" in value:
        raise ValueProblem("a path must not contain NUL")
    return base_dir / value  # an absolute value replaces base_dir


def split_list(value: str) -> list[str]:
    """``a, b,c`` -> ``["a", "b", "c"]`` (commas; blanks around items ignored)."""
    return [item.strip() for item in value.split(",") if item.strip()]
