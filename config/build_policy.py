"""The signing/encryption policy from properties and, optionally, a YAML policy file.

Properties::

    cmcgate.policy.sign=allow                     # default for everyone
    cmcgate.policy.sender.example.org.sign=always # an internal domain (or sub-domain)
    cmcgate.policy.recipient.bob@partner.example.encrypt=mandatory

YAML (``cmcgate.policy.file``)::

    sign: allow
    senders:
      alice@example.org: {sign: never}
    recipients:
      partner.example: {encrypt: mandatory, missingCertificate: hold}

The same setting for the same scope and pattern in both places is an error.  The result is a
:class:`gateway.policy.Policy` (most specific wins, see there).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from config.errors import ConfigIssue, DnError, Severity
from config.keys import POLICY_LEAVES
from config.policy import EncryptMode, MissingAction, Policy, Rule, Scope, SignMode
from config.source import Props
from config.subject import normalise_email
from config.values import ValueProblem, parse_choice, parse_domain

MAX_POLICY_BYTES = 1024 * 1024
_ENUMS: dict[str, type[SignMode] | type[EncryptMode] | type[MissingAction]] = {
    "sign": SignMode,
    "encrypt": EncryptMode,
    "missingCertificate": MissingAction,
}
_SCOPES = {"senders": Scope.SENDER, "recipients": Scope.RECIPIENT}
#: (scope or None for the default, pattern) -> setting -> (value, where it was set)
Origin = tuple[str, int | None, str]  # file, line, key
Settings = dict[tuple[Scope | None, str], dict[str, tuple[str, Origin]]]


def parse_setting(leaf: str, value: str) -> str:
    return str(parse_choice(value.lower(), [member.value for member in _ENUMS[leaf]]))


def parse_pattern(value: str) -> str:
    if "@" in value:
        try:
            return normalise_email(value).lower()
        except DnError as exc:
            raise ValueProblem(str(exc)) from None
    return parse_domain(value)


def _pattern_of(pattern: str, _value: str) -> str:
    return parse_pattern(pattern)


def _put(
    settings: Settings, where: tuple[Scope | None, str], leaf: str, value: str, origin: Origin
) -> Origin | None:
    """Record a setting; the origin of an earlier one for the same place when there is one."""
    slot = settings.setdefault(where, {})
    if leaf in slot:
        return slot[leaf][1]
    slot[leaf] = (value, origin)
    return None


def build_policy(p: Props, internal_domains: tuple[str, ...]) -> tuple[Policy, Path | None]:
    settings: Settings = {}
    for leaf in POLICY_LEAVES:
        key = "cmcgate.policy." + leaf
        value = p.get(key, partial(parse_setting, leaf), None)
        if value is not None:
            _put(settings, (None, ""), leaf, value, (p.name, p.line(key), key))
    for scope, prefix in ((Scope.SENDER, "sender"), (Scope.RECIPIENT, "recipient")):
        family = f"cmcgate.policy.{prefix}."
        for key in p.family(family):
            pattern_text, _, leaf = key[len(family) :].rpartition(".")
            pattern = p.get(key, partial(_pattern_of, pattern_text), None)
            value = p.get(key, partial(parse_setting, leaf), None)
            if pattern is not None and value is not None:
                _put(settings, (scope, pattern), leaf, value, (p.name, p.line(key), key))
    policy_file = p.get_path("cmcgate.policy.file")
    if policy_file is not None:
        issues = read_policy_file(policy_file, settings)
        if issues is None:
            line = p.line("cmcgate.policy.file")
            p.error("cmcgate.policy.file", f"cannot read {policy_file}", line)
        else:
            p.issues.extend(issues)
    for (rule_scope, pattern), slot in settings.items():
        if rule_scope is Scope.SENDER and internal_domains:
            domain = pattern.rpartition("@")[2]
            if not any(domain == d or domain.endswith("." + d) for d in internal_domains):
                file, line, key = next(iter(slot.values()))[1]
                problem = f"{pattern} is outside the internal domains: this rule never applies"
                p.issues.append(ConfigIssue(file, line, key, problem, Severity.WARNING))
    return _policy(settings), policy_file


def _policy(settings: Settings) -> Policy:
    defaults = settings.get((None, ""), {})
    rules = []
    for (scope, pattern), slot in settings.items():
        if scope is None:
            continue
        rules.append(
            Rule(
                scope,
                pattern,
                sign=SignMode(slot["sign"][0]) if "sign" in slot else None,
                encrypt=EncryptMode(slot["encrypt"][0]) if "encrypt" in slot else None,
                missing=(
                    MissingAction(slot["missingCertificate"][0])
                    if "missingCertificate" in slot
                    else None
                ),
            )
        )
    return Policy(
        rules=tuple(rules),
        default_sign=SignMode(defaults["sign"][0]) if "sign" in defaults else SignMode.ALLOW,
        default_encrypt=(
            EncryptMode(defaults["encrypt"][0]) if "encrypt" in defaults else EncryptMode.ALLOW
        ),
        default_missing=(
            MissingAction(defaults["missingCertificate"][0])
            if "missingCertificate" in defaults
            else MissingAction.TEMPFAIL
        ),
    )


def read_policy_file(path: Path, settings: Settings) -> list[ConfigIssue] | None:
    """Add the file's rules to ``settings``; its issues, or None when it cannot be read."""
    name = str(path)
    try:
        if path.exists() and not path.is_file():
            # A FIFO or a device would block or never end.
            return [ConfigIssue(name, None, "", "not a regular file")]
        with path.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_POLICY_BYTES:
        return [ConfigIssue(name, None, "", f"larger than {MAX_POLICY_BYTES} bytes")]
    try:
        root = yaml.compose(data.decode("utf-8", "replace"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return [ConfigIssue(name, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")]
    issues: list[ConfigIssue] = []

    def error(node: Node, key: str, problem: str) -> None:
        issues.append(ConfigIssue(name, node.start_mark.line + 1, key, problem))

    if root is None:
        return issues
    for key_node, value_node, key in _pairs(root, "", error):
        if key in POLICY_LEAVES:
            _setting(key_node, value_node, (None, ""), key, key, settings, error, name)
        elif key in _SCOPES:
            for pattern_node, body, pattern_text in _pairs(value_node, key, error):
                full = f"{key}.{pattern_text}"
                try:
                    pattern = parse_pattern(pattern_text)
                except ValueProblem as exc:
                    error(pattern_node, full, str(exc))
                    continue
                for leaf_node, leaf_value, leaf in _pairs(body, full, error):
                    if leaf not in POLICY_LEAVES:
                        error(
                            leaf_node,
                            f"{full}.{leaf}",
                            f"unknown setting: expected {', '.join(POLICY_LEAVES)}",
                        )
                        continue
                    where = (_SCOPES[key], pattern)
                    _setting(
                        leaf_node, leaf_value, where, leaf, f"{full}.{leaf}", settings, error, name
                    )
        else:
            error(
                key_node,
                key,
                "unknown key: expected sign, encrypt, missingCertificate, senders or recipients",
            )
    return issues


def _pairs(
    node: Node, where: str, error: Callable[[Node, str, str], None]
) -> list[tuple[Node, Node, str]]:
    if not isinstance(node, MappingNode):
        error(node, where, "expected a mapping")
        return []
    result: list[tuple[Node, Node, str]] = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            error(key_node, where, "keys must be plain text")
            continue
        result.append((key_node, value_node, str(key_node.value)))
    return result


def _setting(
    key_node: Node,
    value_node: Node,
    where: tuple[Scope | None, str],
    leaf: str,
    full: str,
    settings: Settings,
    error: Callable[[Node, str, str], None],
    name: str,
) -> None:
    if not isinstance(value_node, ScalarNode):
        error(value_node, full, "expected a single word")
        return
    try:
        value = parse_setting(leaf, str(value_node.value))
    except ValueProblem as exc:
        error(value_node, full, str(exc))
        return
    earlier = _put(settings, where, leaf, value, (name, key_node.start_mark.line + 1, full))
    if earlier is not None:
        error(key_node, full, f"already set as {earlier[2]} at {earlier[0]}:{earlier[1]}")
