"""The OpenAPI 3.1 document of the REST API, generated from the route table and the declared
types (pydantic's JSON Schema 2020-12 is OpenAPI 3.1's), never written by hand."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.http.api.problems import CONTENT_TYPE, TITLES, Problem
from gateway.http.api.routes import Binary, NoQuery, Route
from tenants.control.schemas import ID_PATTERN

REF = "#/components/schemas/{model}"


def openapi(routes: list[Route], *, title: str = "feedgate control API") -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Problem, "serialization")]
    for r in routes:
        if r.body is not None:
            wanted.append((r.body, "validation"))
        if isinstance(r.response, type):
            wanted.append((r.response, "serialization"))
        elif isinstance(r.response, Binary) and r.response.schema is not None:
            wanted.append((r.response.schema, "serialization"))
        if r.query is not NoQuery:
            wanted.append((r.query, "validation"))
    keys, schema = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    components: dict[str, Any] = dict(schema.get("$defs", {}))

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(keys[(model, mode)])

    def component(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        name = keys[(model, mode)]["$ref"].rsplit("/", 1)[1]
        return dict(components[name])

    problem_ref = ref(Problem, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    queries: set[str] = set()
    for r in routes:
        patterns = dict(r.patterns)
        params: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": patterns.get(name, ID_PATTERN)},
            }
            for name in _path_params(r.path)
        ]
        if r.query is not NoQuery:
            q = component(r.query, "validation")
            queries.add(keys[(r.query, "validation")]["$ref"].rsplit("/", 1)[1])
            required = set(q.get("required", ()))
            for name, prop in q.get("properties", {}).items():
                prop = _not_null(prop)
                params.append(
                    {"name": name, "in": "query", "required": name in required, "schema": prop}
                )
        responses: dict[str, Any] = {}
        if r.response is None:
            responses["204"] = {"description": "Done"}
        elif isinstance(r.response, Binary):
            declared = r.response.schema
            shape = ref(declared, "serialization") if declared is not None else None
            responses.update(_binary(r.response, r.status, shape))
            if r.response.ranges:
                params.append(_RANGE)
        else:
            responses[str(r.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": ref(r.response, "serialization")}},
            }
        if r.location is not None:
            responses[str(r.status)]["headers"] = {
                "Location": {"description": "the resource made", "schema": {"type": "string"}}
            }
        for status in (*r.errors, 500):
            if status == 401 and r.public:
                continue
            responses[str(status)] = {
                "description": TITLES.get(status, "Error"),
                "content": {CONTENT_TYPE: {"schema": problem_ref}},
            }
        op: dict[str, Any] = {
            "operationId": r.operation,
            "summary": r.summary,
            "tags": [r.tag],
            "parameters": params,
            "responses": responses,
        }
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(r.body, "validation")}},
            }
        op["security"] = [] if r.public else [{"bearer": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    for name in queries:  # query models are parameters, not bodies
        components.pop(name, None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": "1",
            "description": "Tenants, principals, cameras, masks, grants, tokens, the audit log, "
            "live sessions, usage and invoices; evidence exports and locks, subject access "
            "requests; PTZ control. Errors are RFC 9457 problem documents with a "
            "stable `code`. Every list is paged with `limit` and `offset`.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


_RANGE = {
    "name": "Range",
    "in": "header",
    "required": False,
    "description": "RFC 9110 byte ranges: bytes=0-1023",
    "schema": {"type": "string", "maxLength": 256},
}


def _binary(b: Binary, status: int, shape: dict[str, Any] | None) -> dict[str, Any]:
    """A response its handler writes itself: bytes of ``b.media_type``, of the declared
    ``shape`` if it has one."""
    schema = shape or {"type": "string", "contentMediaType": b.media_type}
    content = {b.media_type: {"schema": schema}}
    out: dict[str, Any] = {str(status): {"description": b.description, "content": content}}
    if b.ranges:
        out["206"] = {"description": "The ranges asked for", "content": content}
        out["416"] = {"description": "No such range"}
    return out


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: drop the null branch of an optional."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    out = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    if len(kept) == 1:
        out.update(kept[0])
    else:
        out["anyOf"] = kept
    if schema.get("default") is not None:
        out["default"] = schema["default"]
    return out


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


__all__ = ["openapi"]
