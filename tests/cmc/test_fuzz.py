"""Arbitrary and mutated bytes into every parser raise only the library's own errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmc.errors import CmcError
from cmc.inspect import inspect_bytes, to_dict, to_text
from cmc.messages.cms import verify_signed_data
from cmc.messages.requests import parse_request
from cmc.messages.responses import parse_response
from tests.cmc.conftest import shared_dir

SAMPLES = [
    (shared_dir() / "interop" / name).read_bytes()
    for name in ("request-rsa.der", "request-ec.der", "response-success.der", "response-failed.der")
    if (shared_dir() / "interop" / name).exists()
]


def _inspect(data: bytes) -> object:
    inspection = inspect_bytes(data)
    to_text(inspection)
    return to_dict(inspection)


PARSERS: dict[str, Callable[[bytes], object]] = {
    "parse_request": parse_request,
    "parse_response": parse_response,
    "inspect": _inspect,
    "verify_signed_data": verify_signed_data,
}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real message with a few bytes changed, inserted, or cut off."""
    if not SAMPLES:
        return draw(st.binary(max_size=64))
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[position]
        else:
            del data[position:]
            break
        if not data:
            break
    return bytes(data)


inputs = st.one_of(st.binary(max_size=300), mutated())


def _only_our_errors(parser: Callable[[bytes], object], data: bytes) -> None:
    try:
        parser(data)
    except CmcError:
        pass


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs)
def test_garbage_into_parser_raises_only_cmc_errors(name: str, data: bytes) -> None:
    _only_our_errors(PARSERS[name], data)


@pytest.mark.fuzz
@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=inputs)
def test_fuzz_parser_raises_only_cmc_errors(name: str, data: bytes) -> None:
    _only_our_errors(PARSERS[name], data)
