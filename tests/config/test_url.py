"""connection.ssl.* : the URL Totemo builds, and its query (account, product, validity)."""

from __future__ import annotations

import pytest

from config.build_pki import parse_server_name, parse_url
from config.errors import ConfigError
from config.model import Validity
from config.properties import load
from config.values import ValueProblem

from .conftest import SWISSSIGN_BLOCK


def test_the_query_yields_account_product_and_validity():
    query = parse_url("/ws/cmc?account=totemoag.ra&product=totemo-persogold&validity=2Y")

    assert (query.account, query.product, query.validity) == (
        "totemoag.ra",
        "totemo-persogold",
        Validity(2, "y"),
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ws/cmc?account=a&product=b", "must start with '/'"),
        ("https://ra.swisssign.net/ws/cmc?account=a&product=b", "the path only"),
        ("/ws/cmc", "has no query"),
        ("/ws/cmc?product=b", "no account="),
        ("/ws/cmc?account=a", "no product="),
        ("/ws/cmc?account=a&account=b&product=c", "given twice"),
        ("/ws/cmc?account=&product=c", "account is empty"),
        ("/ws/cmc?account=a&product=b&validity=4y", "longer than 3 years"),
        ("/ws/cmc?account=a&product=b&validity=forever", "validity must look like"),
        ("/ws/cmc?account=a&product=b#x", "#fragment"),
        ("/ws/cmc?account=a b&product=c", "blanks"),
        ("/ws/cmc?account&product=c", "not name=value"),
    ],
)
def test_bad_paths_and_queries_say_what_is_wrong(url, problem):
    with pytest.raises(ValueProblem, match=problem):
        parse_url(url)


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ("https://ra.swisssign.net", "scheme goes in connection.ssl.protocol"),
        ("ra.swisssign.net/ws", "path goes in connection.ssl.url"),
        ("ra.swisssign.net:443", "port goes in connection.ssl.serverPort"),
        ("ra swisssign", "is not a host name"),
    ],
)
def test_a_server_name_is_the_host_only(server, problem):
    with pytest.raises(ValueProblem, match=problem):
        parse_server_name(server)


def test_ipv6_servers_are_bracketed_in_the_url(write_props):
    text = SWISSSIGN_BLOCK.replace("serverName=ra.swisssign.net", "serverName=::1")

    pki = load(write_props(text)).pki

    assert pki is not None
    assert pki.url.startswith("https://[::1]:443/ws/cmc?")


def test_the_port_defaults_to_the_protocols(write_props):
    text = SWISSSIGN_BLOCK.replace("connection.ssl.serverPort=443\n", "")

    pki = load(write_props(text)).pki

    assert pki is not None and pki.server_port == 443


def test_unknown_query_parameters_pass_with_a_warning(write_props):
    text = SWISSSIGN_BLOCK.replace("product=totemo-persogold", "product=totemo-persogold&lang=de")

    config = load(write_props(text))

    assert config.pki is not None and config.pki.query.other == (("lang", "de"),)
    assert any("'lang'" in str(w) for w in config.warnings)


def test_a_bad_query_is_reported_on_the_url_line(write_props):
    path = write_props(SWISSSIGN_BLOCK.replace("account=totemoag.ra&", ""))

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert str(caught.value) == (
        f"{path}:4: connection.ssl.url: the query has no account= "
        "(expected ?account=...&product=...)"
    )
