"""Whatever text the loader is fed, only ConfigError escapes (and valid files load)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.dn import parse_dn
from config.errors import ConfigError, DnError
from config.keys import OWN_KEYS, TOTEMO_KEYS
from config.model import Config
from config.properties import load

KEYS = st.sampled_from(
    [
        *TOTEMO_KEYS,
        *OWN_KEYS,
        "cmcgate.policy.sender.example.org.sign",
        "cmcgate.policy.recipient.a@b.example.encrypt",
        "cmcgate.dkim.example.org.selector",
        "cmcgate.lookup.ldap.corp.url",
        "cmcgate.pki.accessCertificatePassword",
    ]
)
VALUES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["true", "FALSE", "https://", "0", "65536", "/CN=x /O=y/ C=CH", "1y", ""]),
)
LINE = st.tuples(KEYS, st.sampled_from(["=", ":", " ", " = "]), VALUES).map(
    lambda parts: "".join(parts)
)
DOCUMENT = st.lists(st.one_of(LINE, st.text(max_size=80)), max_size=12).map("\n".join)


_DIRECTORY = tempfile.TemporaryDirectory(prefix="cmcgate-fuzz-")


def teardown_module() -> None:
    _DIRECTORY.cleanup()


def _load_text(text: str) -> None:
    path = Path(_DIRECTORY.name, "fuzz.properties")
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load(path)
    except ConfigError as exc:
        assert exc.errors
        # In the properties file, or in a file it names (cmcgate.policy.file: hypothesis
        # also tries paths it finds in our code, such as /usr/sbin/slapd).
        # A relative name such as "." or ".." names the file's own directory or one above it.
        assert all(
            issue.path == str(path)
            or Path(issue.path).name in text
            or Path(issue.path).resolve() in (path.parent.resolve(), *path.parent.resolve().parents)
            for issue in exc.errors
        )
        return
    assert isinstance(config, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), DOCUMENT))
def test_arbitrary_text_never_raises_anything_but_config_error(text):
    _load_text(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_dns_never_raise_anything_but_dn_error(text):
    try:
        parse_dn(text)
    except DnError:
        pass


@pytest.mark.fuzz
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), DOCUMENT))
def test_fuzz_loader_ten_thousand_documents(text):
    _load_text(text)


@pytest.mark.fuzz
@settings(max_examples=10_000, deadline=None)
@given(st.one_of(st.text(max_size=200), st.text(alphabet='/=,+;\\"# CNOEcx', max_size=40)))
def test_fuzz_dn_parser_ten_thousand_names(text):
    try:
        parse_dn(text)
    except DnError:
        pass
