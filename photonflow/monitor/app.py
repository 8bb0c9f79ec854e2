"""The monitor's web app (starlette): one page that polls a JSON data endpoint, plots as PNG.

Endpoints (all GET):

    /                              the page (static HTML + vanilla JS, no build step)
    /api/runs                      {"roots", "interval_s", "runs": [short run dicts, running first]}
    /api/runs/{id}                 one run: state, counts, history, Prefect link, per-kind findings
    /api/runs/{id}/plot/{name}     a PNG (names in photonflow.monitor.plots.PLOTS; saxs-curve takes
                                   ?sel=K&integration=NAME)
    /files/{id}/{path}             a file of the run (report.pdf, tables, …), only inside the output roots
    /healthz                       "ok"

Errors are JSON ``{"error": message}`` with a 4xx status (unknown run 404, a path leaving the run
403), never a stack trace. Security: with a ``token`` every request needs it (``?token=`` once,
which sets an HttpOnly cookie and redirects to the URL without it; or an ``Authorization: Bearer``
or ``X-Photonflow-Token`` header); without one only the Host names in ``allowed_hosts`` are accepted
(the loopback names and the address the monitor is bound to: against DNS rebinding). Files are served
with a sandboxing Content-Security-Policy (a PDF without it, else Chrome's PDF viewer cannot show it;
always with its forced type and ``nosniff``), and only known output types inline.
"""

from __future__ import annotations

import hmac
import html
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from photonflow.io import json_safe

from .runs import MonitorError, RunStore

__all__ = ["create_app", "COOKIE", "LOOPBACK_HOSTS"]

COOKIE = "photonflow_monitor_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
STATIC = Path(__file__).resolve().parent / "static"
#: Served inline with this type; anything else is an attachment (application/octet-stream).
INLINE_TYPES = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".json": "application/json",
    ".jsonl": "text/plain",
    ".csv": "text/plain",
    ".lst": "text/plain",
    ".txt": "text/plain",
    ".chi": "text/plain",
    ".log": "text/plain",
}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
PAGE_CSP = (
    b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class _JSON(JSONResponse):
    def render(self, content) -> bytes:
        return json.dumps(json_safe(content), allow_nan=False, default=str, separators=(",", ":")).encode()


def _error(exc: MonitorError) -> Response:
    return _JSON(
        {"error": exc.message, "status": exc.status}, status_code=exc.status, headers={"cache-control": "no-store"}
    )


class _Gate:
    """ASGI middleware: token (when set) or loopback Host (when not), and the security headers."""

    def __init__(self, app, token: str | None, allowed_hosts=None):
        self.app = app
        self.token = token or None
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    def _ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                message = {**message, "headers": headers}
            await send(message)

        request = Request(scope)
        if self.allowed_hosts is not None:
            host = (request.headers.get("host") or "").lower()
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name not in self.allowed_hosts:
                response = _JSON(
                    {
                        "error": f"Host {host!r} refused: the monitor listens on loopback only (start it "
                        "with --host and a --token to reach it from elsewhere)"
                    },
                    status_code=421,
                )
                return await response(scope, receive, send_with_headers)
        if self.token:
            query = request.query_params.get("token")
            if query is not None:
                if not self._ok(query):
                    response = _JSON({"error": "wrong token"}, status_code=401)
                    return await response(scope, receive, send_with_headers)
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                url = request.url.path + ("?" + urlencode(rest) if rest else "")
                response = RedirectResponse(url, status_code=303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
                return await response(scope, receive, send_with_headers)
            auth = request.headers.get("authorization", "")
            given = (
                (auth[7:].strip() if auth.lower().startswith("bearer ") else None)
                or request.headers.get("x-photonflow-token")
                or request.cookies.get(COOKIE)
            )
            if not self._ok(given):
                response = _JSON(
                    {
                        "error": "this monitor needs its token: open the URL it printed (…/?token=…), or "
                        "send 'Authorization: Bearer TOKEN'"
                    },
                    status_code=401,
                )
                return await response(scope, receive, send_with_headers)
        return await self.app(scope, receive, send_with_headers)


def create_app(
    roots,
    token: str | None = None,
    interval_s: float = 2.0,
    allowed_hosts=LOOPBACK_HOSTS,
    store: RunStore | None = None,
):
    """The ASGI app over output ``roots``. ``token``: required from every client when given;
    ``allowed_hosts``: Host names accepted when there is no token (None: any; the CLI adds the address
    it is bound to, e.g. another loopback address such as 127.0.0.2); ``interval_s``: the
    page's polling interval."""
    store = store or RunStore(roots, rescan_s=max(1.0, min(float(interval_s), 10.0)))
    plot_cache: OrderedDict = OrderedDict()
    cache_lock = threading.Lock()
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{INTERVAL}}", html.escape(f"{float(interval_s):g}")).replace(
        "{{ROOTS}}", html.escape(", ".join(store.roots))
    )

    def index(request: Request):
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={"content-security-policy": PAGE_CSP.decode(), "cache-control": "no-store"},
        )

    def static(request: Request):
        name = request.path_params["name"]
        types = {"monitor.js": "text/javascript; charset=utf-8", "monitor.css": "text/css; charset=utf-8"}
        if name not in types:
            return _error(MonitorError(f"no static file {name!r}", 404))
        return Response((STATIC / name).read_bytes(), media_type=types[name], headers={"cache-control": "no-cache"})

    def runs(request: Request):
        return _JSON(
            {"roots": store.roots, "interval_s": float(interval_s), "runs": store.runs()},
            headers={"cache-control": "no-store"},
        )

    def run(request: Request):
        try:
            return _JSON(store.run(request.path_params["run_id"]), headers={"cache-control": "no-store"})
        except MonitorError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - a run's files in a shape nobody expected: a message, not a 500
            return _error(MonitorError(f"this run cannot be read now: {type(exc).__name__}: {exc}", 409))

    def plot(request: Request):
        from .plots import media_type, render

        run_id, name = request.path_params["run_id"], request.path_params["name"]
        params = {"sel": request.query_params.get("sel"), "integration": request.query_params.get("integration")}
        try:
            info = store.run(run_id)
            key = (run_id, name, params["sel"], params["integration"], info["signature"])
            with cache_lock:
                png = plot_cache.get(key)
                if png is not None:
                    plot_cache.move_to_end(key)
            if png is None:
                png = render(store, run_id, name, params, info=info)
                with cache_lock:
                    plot_cache[key] = png
                    while len(plot_cache) > 128:
                        plot_cache.popitem(last=False)
        except MonitorError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - outputs being rewritten under us: a message, not a 500
            return _error(MonitorError(f"plot {name!r} cannot be drawn now: {type(exc).__name__}: {exc}", 409))
        # the page asks with ?v=<data signature>: the same URL is the same picture for a while
        return Response(png, media_type=media_type(png), headers={"cache-control": "private, max-age=60"})

    def files(request: Request):
        try:
            real = store.resolve_file(request.path_params["run_id"], request.path_params["path"])
        except MonitorError as exc:
            return _error(exc)
        ext = os.path.splitext(real)[1].lower()
        headers = {"content-security-policy": "sandbox; default-src 'none'", "cache-control": "no-cache"}
        if ext == ".pdf":  # a sandboxing CSP stops Chrome's built-in PDF viewer: the forced type and nosniff only
            headers = {"cache-control": "no-cache", "x-frame-options": "SAMEORIGIN"}
        if ext in INLINE_TYPES:
            return FileResponse(real, media_type=INLINE_TYPES[ext], headers=headers, content_disposition_type="inline")
        return FileResponse(
            real, media_type="application/octet-stream", headers=headers, filename=os.path.basename(real)
        )

    def health(request: Request):
        return PlainTextResponse("ok")

    async def not_found(request: Request, exc):
        status = getattr(exc, "status_code", 404)
        return _JSON(
            {
                "error": f"{request.url.path}: not found" if status == 404 else str(getattr(exc, "detail", exc)),
                "status": status,
            },
            status_code=status,
        )

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/api/runs", runs),
        Route("/api/runs/{run_id}", run),
        Route("/api/runs/{run_id}/plot/{name}", plot),
        Route("/files/{run_id}/{path:path}", files),
        Route("/healthz", health),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.store = store
    gate = _Gate(app, token, None if token else allowed_hosts)
    gate.store = store
    return gate
