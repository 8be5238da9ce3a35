"""A small JSON Schema checker for the subset the RA API's OpenAPI 3.1 document uses, and the
document's structural rules — so the tests judge the document and the answers without a new
dependency.

Supported keywords: ``$ref`` (local ``#/...``), ``type`` (a name or a list of names, ``null``
included), ``enum``, ``const``, ``properties``, ``required``, ``additionalProperties`` (bool or
schema), ``items``, ``oneOf``, ``anyOf``, ``minimum``/``maximum``, ``minLength``/``maxLength``,
``pattern``.
``format``, ``description`` and ``contentMediaType`` are annotations. An unknown keyword is
an error, so the document cannot start using one this checker silently ignores.
"""

from __future__ import annotations

import re
from typing import Any

_ANNOTATIONS = {"description", "format", "contentMediaType", "title", "example", "examples",
                "default", "deprecated", "readOnly", "writeOnly"}  # fmt: skip
_KEYWORDS = {"$ref", "type", "enum", "const", "properties", "required", "additionalProperties",
             "items", "oneOf", "anyOf", "minimum", "maximum", "minLength", "maxLength",
             "minItems", "maxItems", "pattern"} | _ANNOTATIONS  # fmt: skip
_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
_PATH_PARAM = re.compile(r"{([^}/]+)}")


def resolve(root: dict[str, Any], ref: str) -> Any:
    """The target of a local ``$ref`` (KeyError when it does not resolve)."""
    if not ref.startswith("#/"):
        raise KeyError(f"not a local reference: {ref}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"unknown type {name!r}")


def errors(value: Any, schema: Any, root: dict[str, Any], at: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (empty: it conforms)."""
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [f"{at}: no value is allowed here"]
    unknown = set(schema) - _KEYWORDS
    if unknown:
        return [f"{at}: the checker does not know {sorted(unknown)}"]
    if "$ref" in schema:
        return errors(value, resolve(root, schema["$ref"]), root, at)
    out: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_type_ok(value, n) for n in names):
            return [f"{at}: {type(value).__name__} {value!r:.60} is not {names}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: {value!r:.60} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{at}: {value!r:.60} is not {schema['const']!r}")
    for keyword in ("oneOf", "anyOf"):
        if keyword in schema:
            matches = sum(not errors(value, s, root, at) for s in schema[keyword])
            if matches == 0 or (keyword == "oneOf" and matches > 1):
                out.append(f"{at}: {value!r:.60} matches {matches} of the {keyword} schemas")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{at}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{at}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{at}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{at}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{at}: {value!r:.60} does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{at}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{at}: more than {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                out += errors(item, schema["items"], root, f"{at}[{index}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                out.append(f"{at}: {name} is missing")
        extra = schema.get("additionalProperties", True)
        for name, member in value.items():
            if name in props:
                out += errors(member, props[name], root, f"{at}.{name}")
            elif extra is False:
                out.append(f"{at}: {name} is not a documented member")
            elif isinstance(extra, dict):
                out += errors(member, extra, root, f"{at}.{name}")
    return out


def document_problems(document: dict[str, Any]) -> list[str]:
    """What makes ``document`` an invalid OpenAPI 3.1 description of this API (empty: none).

    Checks: top-level fields; every ``$ref`` resolves; every operation has a unique
    operationId, responses, and either ``security`` or an explicit empty list; every path
    template's parameters are declared ``in: path`` and ``required: true`` (and no others);
    every 4xx/5xx answer is ``application/problem+json``; security requirements name a
    declared scheme; every schema uses only keywords :func:`errors` understands.
    """
    out: list[str] = []
    if not str(document.get("openapi", "")).startswith("3.1"):
        out.append("openapi must be 3.1.x")
    for field in ("title", "version"):
        if not isinstance(document.get("info", {}).get(field), str):
            out.append(f"info.{field} is required")
    schemes = document.get("components", {}).get("securitySchemes", {})

    def walk(node: Any, at: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    resolve(document, ref)
                except (KeyError, TypeError):
                    out.append(f"{at}: $ref {ref} does not resolve")
            for key, child in node.items():
                walk(child, f"{at}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{at}/{index}")

    walk(document, "#")
    ids: dict[str, str] = {}
    for path, item in document.get("paths", {}).items():
        if not path.startswith("/"):
            out.append(f"{path}: paths start with /")
        templated = _PATH_PARAM.findall(path)
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            if method not in _HTTP_METHODS:
                out.append(f"{where}: not an HTTP method")
                continue
            op_id = op.get("operationId")
            if not isinstance(op_id, str) or not op_id:
                out.append(f"{where}: no operationId")
            elif op_id in ids:
                out.append(f"{where}: operationId {op_id} is also {ids[op_id]}")
            else:
                ids[op_id] = where
            if "security" not in op and "security" not in document:
                out.append(f"{where}: security is neither given nor explicitly empty")
            for requirement in op.get("security", ()):
                for name in requirement:
                    if name not in schemes:
                        out.append(f"{where}: security scheme {name} is not declared")
            params = op.get("parameters", [])
            seen = set()
            for param in params:
                key = (param.get("name"), param.get("in"))
                if key in seen:
                    out.append(f"{where}: parameter {key} twice")
                seen.add(key)
                if param.get("in") not in ("path", "query", "header", "cookie"):
                    out.append(f"{where}: parameter {param.get('name')} has no valid 'in'")
                if "schema" not in param and "content" not in param:
                    out.append(f"{where}: parameter {param.get('name')} has no schema")
                if param.get("in") == "path" and param.get("required") is not True:
                    out.append(f"{where}: path parameter {param.get('name')} not required")
                out += _schema_keyword_problems(param.get("schema", {}), f"{where} {key}")
            declared = sorted(p["name"] for p in params if p.get("in") == "path")
            if declared != sorted(templated):
                out.append(f"{where}: path parameters {declared} != template {templated}")
            responses = op.get("responses")
            if not isinstance(responses, dict) or not responses:
                out.append(f"{where}: no responses")
                continue
            for code, response in responses.items():
                if not re.fullmatch(r"[1-5][0-9][0-9]|[1-5]XX|default", code):
                    out.append(f"{where}: response key {code!r}")
                if "$ref" not in response and not isinstance(response.get("description"), str):
                    out.append(f"{where} {code}: description is required")
                content = response.get("content", {})
                if code[0] in "45" and set(content) != {"application/problem+json"}:
                    out.append(f"{where} {code}: errors must be application/problem+json")
                for media in content.values():
                    out += _schema_keyword_problems(media.get("schema", {}), f"{where} {code}")
            body = op.get("requestBody")
            if body is not None:
                for media in body.get("content", {}).values():
                    out += _schema_keyword_problems(media.get("schema", {}), f"{where} body")
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        out += _schema_keyword_problems(schema, f"components.schemas.{name}")
    return out


def _schema_keyword_problems(schema: Any, at: str) -> list[str]:
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, dict):
        return [f"{at}: a schema must be an object"]
    out = [f"{at}: unknown schema keyword {k}" for k in set(schema) - _KEYWORDS]
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += _schema_keyword_problems(schema[key], f"{at}.{key}")
    for name, sub in schema.get("properties", {}).items():
        out += _schema_keyword_problems(sub, f"{at}.{name}")
    for key in ("oneOf", "anyOf"):
        for index, sub in enumerate(schema.get(key, ())):
            out += _schema_keyword_problems(sub, f"{at}.{key}[{index}]")
    return out
