"""The API documentation at ``/docs``: Swagger UI 5 (it reads FastAPI's OpenAPI 3.1) from the
files the ``fastapi-offline`` package ships (``fastapi_offline/static``), never from a CDN —
the school's server may have no way out, and a page must make no outside request
(docs/console.md)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)

ASSETS = "/docs/assets"


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui() -> HTMLResponse:
    """Swagger UI for ``/openapi.json`` with local script, styles and icon; the online
    validator badge is off (it would call validator.swagger.io)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="escalator API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None})


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets (``/docs/assets/…``) on ``app``."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]),
              name="swagger-assets")
