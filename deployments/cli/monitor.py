"""The ``photonflow monitor`` command: serve the live monitor page over output roots."""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket
import sys
import textwrap
from urllib.parse import quote


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "monitor",
        usage="photonflow monitor ROOT [ROOT ...] [--port 8765] [--host 127.0.0.1] [--token T] [--interval 2]",
        description=textwrap.dedent(
            """\
            Serve a web page that shows what the flows writing under the output roots are finding,
            while they run (as SAXSDOG's SAXSLEASH does): progress and rate; SAXS I(q) curves and
            integral parameters; serial-crystallography hit rate, peaks and the latest hit; Laue maps;
            tomography chunks, slices and report; links to the Prefect flow runs. It reads the runs'
            own files (run.json, live_rows.jsonl, tables, curves) and serves nothing outside the roots.
            Loopback only by default; with another --host every client needs the token (given with
            --token, or generated and printed)."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("roots", nargs="+", metavar="ROOT", help="output directories to watch (runs anywhere below)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument(
        "--token",
        help="access token (required from clients; default: none on loopback, generated "
        "and printed for any other --host)",
    )
    p.add_argument("--interval", type=float, default=2.0, metavar="S", help="page refresh interval in s (default 2)")
    p.set_defaults(func=cmd_monitor)


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_monitor(args: argparse.Namespace) -> int:
    import uvicorn

    from photonflow.deployments.cli.common import UsageError
    from photonflow.monitor.app import LOOPBACK_HOSTS, create_app
    from photonflow.monitor.runs import MonitorError

    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a TCP port")
    token = args.token
    if not _is_loopback(args.host) and not token:
        token = secrets.token_urlsafe(24)
    # the Host names a browser sends for this monitor without a token: loopback names and the bound address
    bound = args.host.strip("[]").lower()
    allowed = (*LOOPBACK_HOSTS, bound, f"[{bound}]") if ":" in bound else (*LOOPBACK_HOSTS, bound)
    try:
        app = create_app(args.roots, token=token, interval_s=args.interval, allowed_hosts=allowed)
    except MonitorError as exc:
        raise UsageError(exc.message) from None
    family = socket.AF_INET6 if ":" in bound else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bound, args.port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    sock.listen(128)
    port = sock.getsockname()[1]
    shown = f"[{bound}]" if family == socket.AF_INET6 else bound
    url = f"http://{shown}:{port}/" + (f"?token={quote(token, safe='')}" if token else "")
    print(f"photonflow monitor: {', '.join(app.store.roots)}\n  open {url}", flush=True)
    if token and not args.token:
        print(
            "  (a token was generated because the monitor is reachable from other machines; pass --token to "
            "choose one)",
            flush=True,
        )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print("photonflow monitor: stopped", file=sys.stderr)
    return 0
