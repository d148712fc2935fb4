"""``/docs`` (Swagger UI) and ``/redoc`` served from installed files (the ``fastapi-offline``
package ships the Swagger UI and ReDoc bundles): no CDN, no web fonts, so the pages work on
a network without internet and under a Content-Security-Policy of ``'self'``."""

from __future__ import annotations

import importlib.resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"

# No inline script: the page loads its initialiser from ASSETS, so script-src 'self' holds.
# ReDoc and Swagger UI inject <style> elements (style-src 'unsafe-inline'); ReDoc runs its
# search in a blob: worker.
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
            "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOC_PATHS = ("/docs", "/redoc", ASSETS)

_SWAGGER_INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: %(openapi)r,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]
  });
});
"""


def _static_dir():
    return importlib.resources.files("fastapi_offline") / "static"


def install(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets (build the app with docs_url=None, redoc_url=None)."""
    title = app.title
    openapi = app.openapi_url or "/openapi.json"

    @app.get(f"{ASSETS}/swagger-init.js", include_in_schema=False)
    async def swagger_init():
        return PlainTextResponse(_SWAGGER_INIT % {"openapi": openapi},
                                 media_type="text/javascript")

    # After the route above, so the mount does not shadow it.
    app.mount(ASSETS, StaticFiles(directory=str(_static_dir())), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return HTMLResponse(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="{ASSETS}/favicon.png">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{ASSETS}/swagger-init.js"></script>
</body></html>""")

    @app.get("/redoc", include_in_schema=False)
    async def redoc():
        return HTMLResponse(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - ReDoc</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="{ASSETS}/favicon.png">
<style>body {{ margin: 0; padding: 0; }}</style></head>
<body><redoc spec-url="{openapi}"></redoc>
<script src="{ASSETS}/redoc.standalone.js"></script>
</body></html>""")


def security_headers(path: str = "") -> list[tuple[bytes, bytes]]:
    """nosniff, no framing, no referrer, a Content-Security-Policy (the docs pages get one
    that lets their own scripts and styles run): on every answer, the server's own too
    (api/server.py, api/errors.py)."""
    csp = DOCS_CSP if path.startswith(DOC_PATHS) else API_CSP
    return [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"), (b"content-security-policy", csp.encode()),
            (b"cross-origin-opener-policy", b"same-origin")]


class SecurityHeaders:
    """:func:`security_headers` on every response of the app, and no Server banner."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope.get("path", ""))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"server"]
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
