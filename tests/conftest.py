"""Shared fixtures: real services started by the tests themselves (see tests/fixtures/)."""

pytest_plugins = [
    "tests.fixtures.softhsm",
    "tests.fixtures.slapd",
    "tests.fixtures.smtp_sink",
    "tests.fixtures.dns",
]
