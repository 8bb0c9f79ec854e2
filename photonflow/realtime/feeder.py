"""Detector feeder messages over ZeroMQ, compatible with SAXSDOG's FEEDER.

SAXSDOG's FEEDER (``SAXS/Feeder.py`` in SAXS-Dog by M. Burian and C. Meisenbichler) *binds* a
``zmq.PUB`` socket (``tcp://*:PORT``) and publishes one single-frame JSON message per complete file::

    {"command": "new file", "argument": "/path/to/file.tif"}

and the SAXSDOG server *connects* a ``zmq.SUB`` socket to it, subscribed to everything. A
`FeederListener` with its defaults (``socket_type="sub"``, ``bind=False``) is that subscriber, so an
existing FEEDER works unchanged. PUSH/PULL is supported as well (``socket_type="pull"``), and either
side may bind.

Every message is checked before its path is handed on, and anything doubtful is rejected, counted and
logged (logger ``photonflow.feeder``):

* it must be UTF-8 JSON text holding an object;
* with a shared ``secret``, it must carry a valid signature (below) — checked before anything else in
  it is looked at;
* ``command`` must be ``"new file"`` (compared case-insensitively, as SAXSDOG's documentation writes
  it both ways); other commands are ignored with a log line (and counted as rejected);
* ``argument`` must be a non-empty string; a relative path is joined to ``base_dir`` (SAXSDOG's server
  directory), and rejected when no ``base_dir`` is configured;
* the path, resolved with :func:`os.path.realpath` (``..`` and symbolic links followed), must lie inside
  one of the resolved data ``roots``. The *resolved* path is what `FeederListener.get` returns.

Signature scheme (only when a secret is configured)::

    signature = lowercase hex of HMAC-SHA256(key = secret as UTF-8 bytes,
                                              msg = canonical JSON of the message without "signature")
    canonical JSON = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                     encoded as UTF-8

and the message carries it in the field ``"signature"``. For the usual message the canonical form is
``{"argument":"/data/frame_00001.tif","command":"new file"}`` (keys sorted, no spaces), which
``jq -cS`` and a hand-written string produce as well. A signature proves that the sender knows the
secret; it does not stop a captured message from being replayed (a replayed "new file" only announces
the same file again) and does not encrypt anything.

Slow joiners: a PUB socket drops every message sent before a subscriber's subscription has arrived.
`FeederPublisher` therefore uses an XPUB socket (wire-compatible with PUB) and
`FeederPublisher.wait_for_subscribers` blocks until the subscriptions have been received; sending
after that is never lost to the slow-joiner problem. A PUSH socket queues instead of dropping.

Command line (for operators and for testing a beamline's setup)::

    python -m photonflow.realtime.feeder listen tcp://detector-pc:5555 --root /data
    python -m photonflow.realtime.feeder send tcp://*:5555 /data/frame_00001.tif --secret-file ~/.feeder-secret
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import time
from typing import Iterable, Sequence

import zmq

__all__ = [
    "NEW_FILE",
    "SIGNATURE_FIELD",
    "FeederListener",
    "FeederPublisher",
    "canonical_json",
    "make_message",
    "read_secret",
    "send_new_file",
    "sign_message",
    "verify_message",
]

logger = logging.getLogger("photonflow.feeder")

NEW_FILE = "new file"
SIGNATURE_FIELD = "signature"
#: Messages larger than this are refused by ZeroMQ itself (the connection is dropped); a "new file"
#: message is a few hundred bytes.
MAX_MESSAGE_BYTES = 64 * 1024
_EXCERPT_CHARS = 200
_SOCKET_TYPES_IN = {"sub": zmq.SUB, "pull": zmq.PULL}
_SOCKET_TYPES_OUT = {"pub": zmq.XPUB, "push": zmq.PUSH}


# --------------------------------------------------------------------------------------------------
# Messages and signatures


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the feeder secret must not be empty")
    return key


def read_secret(path: str | os.PathLike) -> str:
    """The shared secret stored in a file (surrounding whitespace and the final newline removed)."""
    with open(path, encoding="utf-8") as fh:
        secret = fh.read().strip()
    if not secret:
        raise ValueError(f"{path}: the secret file is empty")
    return secret


def canonical_json(message: dict) -> bytes:
    """The bytes that are signed: `message` without its ``"signature"`` field, as compact JSON with
    sorted keys, non-ASCII characters kept as they are, encoded as UTF-8."""
    body = {k: v for k, v in message.items() if k != SIGNATURE_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def _signature(message: dict, secret: str | bytes) -> str:
    return hmac.new(_key(secret), canonical_json(message), hashlib.sha256).hexdigest()


def sign_message(message: dict, secret: str | bytes) -> dict:
    """A copy of `message` with its ``"signature"`` field set."""
    signed = {k: v for k, v in message.items() if k != SIGNATURE_FIELD}
    signed[SIGNATURE_FIELD] = _signature(signed, secret)
    return signed


def verify_message(message: dict, secret: str | bytes) -> bool:
    """Whether `message` carries a valid signature for `secret` (constant-time comparison)."""
    given = message.get(SIGNATURE_FIELD)
    if not isinstance(given, str):
        return False
    expected = _signature(message, secret).encode("ascii")
    return hmac.compare_digest(given.strip().lower().encode("utf-8", "surrogatepass"), expected)


def make_message(path: str | os.PathLike, secret: str | bytes | None = None) -> bytes:
    """The wire bytes of a SAXSDOG "new file" message for `path`, signed when `secret` is given."""
    message = {"command": NEW_FILE, "argument": os.fsdecode(os.fspath(path))}
    if secret is not None:
        message = sign_message(message, secret)
    return json.dumps(message).encode("ascii")


# --------------------------------------------------------------------------------------------------
# Listener


class _Rejected(Exception):
    def __init__(self, reason: str, level: int = logging.WARNING):
        super().__init__(reason)
        self.reason = reason
        self.level = level


def _excerpt(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "…"


class FeederListener:
    """Receives SAXSDOG "new file" messages in a background thread; `get` hands out accepted paths.

    ``FeederListener("tcp://detector-pc:5555", roots=["/data"])`` subscribes (SUB, connect) to a
    FEEDER that binds a PUB socket, as SAXSDOG's server does. ``socket_type="pull"`` receives from
    PUSH sockets instead; ``bind=True`` binds `address` (``tcp://*:5555``, ``tcp://127.0.0.1:*`` for
    a free port — see `endpoint` — or ``ipc:///path``) instead of connecting to it.

    Counters: `accepted`, `rejected`, and `rejections`, a list of ``(reason, message excerpt)`` (the
    most recent `max_rejections`). Use as a context manager or call `start` and `stop`.
    """

    def __init__(
        self,
        address: str,
        socket_type: str = "sub",
        bind: bool = False,
        secret: str | bytes | None = None,
        *,
        roots: Iterable[str | os.PathLike],
        base_dir: str | os.PathLike | None = None,
        max_rejections: int = 1000,
        receive_hwm: int = 100_000,
        poll_interval: float = 0.05,
    ):
        if socket_type not in _SOCKET_TYPES_IN:
            raise ValueError(f"socket_type must be one of {sorted(_SOCKET_TYPES_IN)}, not {socket_type!r}")
        roots = [os.path.realpath(os.fspath(r)) for r in roots]
        if not roots:
            raise ValueError("FeederListener needs at least one data root (roots=[...])")
        self.address = address
        self.socket_type = socket_type
        self.bind = bind
        self._key = _key(secret) if secret is not None else None
        self.roots: list[str] = roots
        self.base_dir = os.path.abspath(os.fspath(base_dir)) if base_dir is not None else None
        self.max_rejections = max_rejections
        self.receive_hwm = receive_hwm
        self.poll_interval = poll_interval

        self.accepted = 0
        self.rejected = 0
        self.rejections: list[tuple[str, str]] = []
        self.endpoint: str | None = None

        self._cond = threading.Condition()
        self._queue: collections.deque[str] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "FeederListener":
        """Open the socket (in the receiving thread) and start receiving; raises what bind/connect
        raised, e.g. ``zmq.ZMQError`` for an address in use."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("FeederListener is already running")
        self._stop.clear()
        ready = threading.Event()
        errors: list[BaseException] = []
        with self._cond:
            self._running = True
        self._thread = threading.Thread(
            target=self._run, args=(ready, errors), name=f"photonflow-feeder {self.address}", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"feeder listener on {self.address} did not start within {timeout} s")
        if errors:
            self._thread.join()
            self._thread = None
            raise errors[0]
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving and close the socket (LINGER 0). Paths already accepted stay available to
        `get`. Safe to call twice."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # pragma: no cover - the poll loop wakes every poll_interval
                logger.warning("feeder listener on %s did not stop within %s s", self.address, timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._running

    def __enter__(self) -> "FeederListener":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- consumer side -----------------------------------------------------------------------------

    def get(self, timeout: float | None = None, max_items: int | None = None) -> list[str]:
        """The accepted paths (resolved), oldest first: waits up to `timeout` seconds (forever with
        None, but never once the listener has stopped) for at least one, then returns all that are
        waiting (at most `max_items`). An empty list means none arrived in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if not self._running:
                    return []
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(remaining)
            n = len(self._queue) if max_items is None else min(max_items, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def qsize(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- receiving thread --------------------------------------------------------------------------

    def _run(self, ready: threading.Event, errors: list) -> None:
        ctx = zmq.Context()
        sock = None
        try:
            try:
                sock = ctx.socket(_SOCKET_TYPES_IN[self.socket_type])
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
                sock.setsockopt(zmq.RCVHWM, self.receive_hwm)
                if self.socket_type == "sub":
                    sock.setsockopt(zmq.SUBSCRIBE, b"")
                if self.bind:
                    sock.bind(self.address)
                    self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
                else:
                    sock.connect(self.address)
                    self.endpoint = self.address
            except BaseException as exc:
                errors.append(exc)
                return
            finally:
                ready.set()
            logger.info(
                "feeder listener %s %s %s",
                self.socket_type.upper(),
                "bound to" if self.bind else "connected to",
                self.endpoint,
            )
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            timeout_ms = max(1, int(self.poll_interval * 1000))
            while not self._stop.is_set():
                if not poller.poll(timeout_ms):
                    continue
                while not self._stop.is_set():
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames[-1])
        except Exception:  # pragma: no cover - a bug, not bad input: bad input never raises here
            logger.exception("feeder listener on %s failed", self.address)
        finally:
            if sock is not None:
                sock.close(linger=0)
            ctx.term()
            with self._cond:
                self._running = False
                self._cond.notify_all()

    def _handle(self, raw: bytes) -> None:
        try:
            path = self._check(raw)
        except _Rejected as rej:
            excerpt = _excerpt(raw)
            with self._cond:
                self.rejected += 1
                self.rejections.append((rej.reason, excerpt))
                if len(self.rejections) > self.max_rejections:
                    del self.rejections[: len(self.rejections) - self.max_rejections]
            logger.log(rej.level, "feeder message rejected: %s; message: %r", rej.reason, excerpt)
            return
        with self._cond:
            self.accepted += 1
            self._queue.append(path)
            self._cond.notify_all()

    def _check(self, raw: bytes) -> str:
        """The resolved path a message announces, or `_Rejected` with the reason."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Rejected("malformed message: not UTF-8 text") from None
        try:
            message = json.loads(text)
        except ValueError as exc:
            raise _Rejected(f"malformed JSON: {exc}") from None
        if not isinstance(message, dict):
            raise _Rejected(f"malformed message: a JSON {type(message).__name__}, not an object")
        if self._key is not None:
            if SIGNATURE_FIELD not in message:
                raise _Rejected("unsigned message (a secret is configured)")
            if not verify_message(message, self._key):
                raise _Rejected("wrong signature")
        command = message.get("command")
        if command is None:
            raise _Rejected("missing command")
        if not isinstance(command, str) or command.strip().lower() != NEW_FILE:
            raise _Rejected(f"unknown command {command!r} ignored", level=logging.INFO)
        argument = message.get("argument")
        if not isinstance(argument, str) or not argument:
            raise _Rejected("missing argument: the path must be a non-empty string")
        if "\x00" in argument:
            raise _Rejected("invalid path: contains a NUL character")
        if not os.path.isabs(argument):
            if self.base_dir is None:
                raise _Rejected(f"relative path {argument!r} and no base_dir configured")
            argument = os.path.join(self.base_dir, argument)
        resolved = os.path.realpath(argument)
        for root in self.roots:
            prefix = root if root.endswith(os.sep) else root + os.sep
            if resolved != root and resolved.startswith(prefix):
                return resolved
        raise _Rejected(f"path {argument!r} resolves to {resolved!r}, outside the data roots {self.roots}")


# --------------------------------------------------------------------------------------------------
# Publisher (SAXSDOG's FEEDER side)


class FeederPublisher:
    """Sends "new file" messages, as SAXSDOG's FEEDER does (PUB, bound, by default).

    ``socket_type="pub"`` opens an XPUB socket, which talks to SUB sockets exactly like PUB but also
    reports their subscriptions, so `wait_for_subscribers` can wait until a listener is really
    listening (messages sent before that are dropped by ZeroMQ: the "slow joiner" problem).
    ``socket_type="push"`` talks to PULL sockets; `send` then blocks up to `send_timeout` until a
    peer is there. Use from one thread only (ZeroMQ sockets are not thread-safe).
    """

    def __init__(
        self,
        address: str,
        socket_type: str = "pub",
        bind: bool = True,
        secret: str | bytes | None = None,
        *,
        linger_ms: int = 1000,
        send_timeout: float = 5.0,
    ):
        if socket_type not in _SOCKET_TYPES_OUT:
            raise ValueError(f"socket_type must be one of {sorted(_SOCKET_TYPES_OUT)}, not {socket_type!r}")
        self.address = address
        self.socket_type = socket_type
        self.bind = bind
        self.secret = secret
        if secret is not None:
            _key(secret)
        self.linger_ms = linger_ms
        self.send_timeout = send_timeout
        self.subscribers = 0
        self.endpoint: str | None = None
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None

    def start(self) -> "FeederPublisher":
        if self._sock is not None:
            return self
        ctx = zmq.Context()
        sock = ctx.socket(_SOCKET_TYPES_OUT[self.socket_type])
        try:
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            sock.setsockopt(zmq.SNDTIMEO, int(self.send_timeout * 1000))
            if self.socket_type == "pub":
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every subscription, not only new topics
            if self.bind:
                sock.bind(self.address)
                self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                sock.connect(self.address)
                self.endpoint = self.address
        except BaseException:
            sock.close(linger=0)
            ctx.term()
            raise
        self._ctx, self._sock = ctx, sock
        return self

    def close(self) -> None:
        """Close the socket; queued messages get up to `linger_ms` to leave."""
        if self._sock is not None:
            self._sock.close()
            self._ctx.term()
            self._sock = self._ctx = None

    def __enter__(self) -> "FeederPublisher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self.start()
        return self._sock

    def _read_subscriptions(self, timeout_ms: int) -> None:
        sock = self._socket()
        if sock.poll(timeout_ms, zmq.POLLIN):
            while True:
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if frame[:1] == b"\x01":
                    self.subscribers += 1
                elif frame[:1] == b"\x00":
                    self.subscribers = max(0, self.subscribers - 1)

    def wait_for_subscribers(self, count: int = 1, timeout: float = 5.0) -> int:
        """Block until `count` subscriptions have arrived (PUB only); returns how many there are.
        Raises TimeoutError when they do not come within `timeout` seconds."""
        if self.socket_type != "pub":
            raise ValueError("wait_for_subscribers needs socket_type='pub' (PUSH does not drop messages)")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            self._read_subscriptions(max(0, int(min(remaining, 0.05) * 1000)))
            if self.subscribers >= count:
                return self.subscribers
            if remaining <= 0:
                raise TimeoutError(f"{self.subscribers} of {count} subscriber(s) on {self.endpoint} after {timeout} s")

    def send_raw(self, data: bytes | str) -> None:
        """Send `data` as it is (one frame). Raises TimeoutError if a PUSH socket has no peer."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        sock = self._socket()
        if self.socket_type == "pub":
            self._read_subscriptions(0)
        try:
            sock.send(data)
        except zmq.Again:
            raise TimeoutError(f"no peer took the message on {self.endpoint} within {self.send_timeout} s") from None

    def send_new_file(self, path: str | os.PathLike) -> bytes:
        """Send the "new file" message for `path` (signed when a secret is set); returns its bytes."""
        data = make_message(path, self.secret)
        self.send_raw(data)
        return data


def send_new_file(
    address: str,
    path: str | os.PathLike | Sequence[str | os.PathLike],
    secret: str | bytes | None = None,
    socket_type: str = "pub",
    bind: bool = True,
    *,
    subscribers: int = 1,
    timeout: float = 5.0,
) -> None:
    """Announce one file (or a list of files) once, then close: open a publisher on `address`,
    wait for `subscribers` subscriptions (PUB only; 0 to not wait), send, and let the messages
    leave before closing. Raises TimeoutError when nobody listens."""
    paths = [path] if isinstance(path, (str, bytes, os.PathLike)) else list(path)
    with FeederPublisher(
        address, socket_type, bind, secret, linger_ms=int(timeout * 1000), send_timeout=timeout
    ) as pub:
        if socket_type == "pub" and subscribers > 0:
            pub.wait_for_subscribers(subscribers, timeout)
        for p in paths:
            pub.send_new_file(p)


# --------------------------------------------------------------------------------------------------
# Command line: python -m photonflow.realtime.feeder {listen,send}


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m photonflow.realtime.feeder",
        description="Send or receive SAXSDOG-compatible detector feeder messages over ZeroMQ.",
    )
    sub = parser.add_subparsers(dest="action", required=True)

    listen = sub.add_parser("listen", help="print the accepted paths, one a line; rejections go to stderr")
    listen.add_argument("address", help="e.g. tcp://detector-pc:5555 (connect) or tcp://*:5555 with --bind")
    listen.add_argument("--root", action="append", required=True, help="a data root (repeatable)")
    listen.add_argument("--base-dir", help="directory that relative paths are joined to")
    listen.add_argument("--socket", choices=sorted(_SOCKET_TYPES_IN), default="sub")
    listen.add_argument("--bind", action="store_true", help="bind the address instead of connecting")
    listen.add_argument("--secret-file", help="file holding the shared secret")
    listen.add_argument("--count", type=int, default=0, help="exit after this many accepted paths")

    send = sub.add_parser("send", help="announce files (or send one raw message with --raw)")
    send.add_argument("address", help="e.g. tcp://*:5555 (bind) or tcp://host:5555 with --connect")
    send.add_argument("paths", nargs="*")
    send.add_argument("--raw", help="send this text as it is (e.g. a message signed elsewhere)")
    send.add_argument("--socket", choices=sorted(_SOCKET_TYPES_OUT), default="pub")
    send.add_argument("--connect", action="store_true", help="connect to the address instead of binding")
    send.add_argument("--secret-file", help="file holding the shared secret")
    send.add_argument("--subscribers", type=int, default=1, help="PUB: wait for this many (0: don't)")
    send.add_argument("--timeout", type=float, default=10.0)

    # paths may come after options too (argparse stops filling a positional list at the first option)
    args, extra = parser.parse_known_args(argv)
    if extra and (args.action != "send" or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.action == "send":
        args.paths = [*args.paths, *extra]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    secret = read_secret(args.secret_file) if args.secret_file else None
    if args.action == "listen":
        with FeederListener(
            args.address, args.socket, args.bind, secret, roots=args.root, base_dir=args.base_dir
        ) as listener:
            n = 0
            try:
                while not args.count or n < args.count:
                    for p in listener.get(timeout=0.5):
                        print(p, flush=True)
                        n += 1
            except KeyboardInterrupt:
                pass
        return 0
    if not args.paths and args.raw is None:
        parser.error("send: give paths or --raw")
    with FeederPublisher(
        args.address,
        args.socket,
        not args.connect,
        secret,
        linger_ms=int(args.timeout * 1000),
        send_timeout=args.timeout,
    ) as pub:
        if args.socket == "pub" and args.subscribers > 0:
            pub.wait_for_subscribers(args.subscribers, args.timeout)
        if args.raw is not None:
            pub.send_raw(args.raw)
        for p in args.paths:
            pub.send_new_file(p)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
