"""OpenAPI helpers: the routes that read their body themselves (to answer malformed JSON with
their own errors) describe it with :func:`json_body`; :func:`add_components` puts the schemas
they refer to (:func:`ref`) into the document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


def ref(name: str) -> dict[str, str]:
    """A JSON-schema reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """``openapi_extra`` of a route: a required JSON request body of ``schema``."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


def _schema_components(*models: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def add_components(app: FastAPI, *models: type[BaseModel]) -> None:
    """Make ``app``'s OpenAPI document also carry the schemas of ``models`` (and the ones they
    use) under ``components.schemas``; a schema FastAPI already generated is kept."""
    extra = _schema_components(*models)
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in extra.items():
                components.setdefault(name, definition)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
