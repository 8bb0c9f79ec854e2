"""The detector feeder listener over real ZeroMQ sockets on tcp://127.0.0.1.

Messages are handled in order, so a test that expects a rejection sends a valid "sentinel" message
after the bad one and waits for it: once the sentinel is accepted, the bad message has been judged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager

import pytest
import zmq

from photonflow.realtime.feeder import (
    FeederListener,
    FeederPublisher,
    _main,
    canonical_json,
    make_message,
    send_new_file,
    sign_message,
    verify_message,
)

ANY_PORT = "tcp://127.0.0.1:*"
SECRET = "s3cret"
# Test vector, also in docs/realtime.md (and reproducible with `openssl dgst -sha256 -hmac s3cret`).
VECTOR_PATH = "/data/frame_00001.tif"
VECTOR_CANONICAL = b'{"argument":"/data/frame_00001.tif","command":"new file"}'
VECTOR_SIGNATURE = "386bf948138d2cf61ef4f4da72bf1e41e3da79e55b436e159fe8ae5f05a8d956"


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(1, 4):
        (root / f"frame_{i:05d}.tif").write_bytes(b"II*\0")
    return root


@contextmanager
def pub_sub(root, secret=None, roots=None, **listener_kwargs):
    """SAXSDOG's topology: the feeder binds PUB, the listener connects SUB."""
    with FeederPublisher(ANY_PORT, secret=secret) as pub:
        with FeederListener(pub.endpoint, secret=secret, roots=roots or [root], **listener_kwargs) as listener:
            pub.wait_for_subscribers(1, timeout=5)
            yield pub, listener


def sentinel(pub, listener, root):
    """Send a valid message and wait for it; everything sent before has been handled then."""
    path = str(root / "frame_00003.tif")
    msg = make_message(path, pub.secret)
    pub.send_raw(msg)
    assert listener.get(timeout=5) == [os.path.realpath(path)]


def rejected_by(pub, listener, root, raw) -> str:
    before = listener.rejected
    pub.send_raw(raw)
    sentinel(pub, listener, root)
    assert listener.rejected == before + 1
    return listener.rejections[-1][0]


# ---- accepted ----------------------------------------------------------------------------------


def test_new_file_messages_are_accepted_in_order(root):
    paths = [str(root / f"frame_{i:05d}.tif") for i in (1, 2, 3)]
    with pub_sub(root) as (pub, listener):
        for p in paths:
            pub.send_new_file(p)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            got += listener.get(timeout=1)
    assert got == [os.path.realpath(p) for p in paths]
    assert (listener.accepted, listener.rejected, listener.rejections) == (3, 0, [])


def test_saxsdog_feeder_bytes_are_accepted_unchanged(root):
    """What SAXSDOG's Feeder.py sends: json.dumps with its default separators, one frame."""
    path = str(root / "frame_00001.tif")
    with pub_sub(root) as (pub, listener):
        pub.send_raw(json.dumps({"command": "new file", "argument": path}))
        assert listener.get(timeout=5) == [os.path.realpath(path)]
        pub.send_raw(json.dumps({"command": "New file", "argument": path}))  # as SAXSDOG's docs spell it
        assert listener.get(timeout=5) == [os.path.realpath(path)]


def test_get_hands_out_a_batch_and_respects_max_items(root):
    paths = [str(root / f"frame_{i:05d}.tif") for i in (1, 2, 3)]
    with pub_sub(root) as (pub, listener):
        for p in paths:
            pub.send_new_file(p)
        deadline = time.monotonic() + 5
        while listener.qsize() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listener.get(timeout=0, max_items=2) == [os.path.realpath(p) for p in paths[:2]]
        assert listener.get(timeout=0) == [os.path.realpath(paths[2])]
        t0 = time.monotonic()
        assert listener.get(timeout=0.2) == []
        assert 0.15 < time.monotonic() - t0 < 2


@pytest.mark.parametrize("listener_binds", [True, False])
def test_push_pull(root, listener_binds):
    path = str(root / "frame_00002.tif")
    if listener_binds:
        with FeederListener(ANY_PORT, "pull", bind=True, roots=[root]) as listener:
            with FeederPublisher(listener.endpoint, "push", bind=False) as push:
                push.send_new_file(path)
                assert listener.get(timeout=5) == [os.path.realpath(path)]
    else:
        with FeederPublisher(ANY_PORT, "push", bind=True) as push:
            with FeederListener(push.endpoint, "pull", roots=[root]) as listener:
                push.send_new_file(path)  # blocks until the PULL side has connected
                assert listener.get(timeout=5) == [os.path.realpath(path)]


def test_listener_binds_sub_and_feeder_connects(root):
    path = str(root / "frame_00001.tif")
    with FeederListener(ANY_PORT, "sub", bind=True, roots=[root]) as listener:
        with FeederPublisher(listener.endpoint, "pub", bind=False) as pub:
            pub.wait_for_subscribers(1, timeout=5)
            pub.send_new_file(path)
            assert listener.get(timeout=5) == [os.path.realpath(path)]


def test_send_new_file_one_shot_waits_for_the_subscriber(root):
    with socket_port() as port:
        address = f"tcp://127.0.0.1:{port}"
    paths = [root / "frame_00001.tif", root / "frame_00002.tif"]
    # The listener connects first (ZeroMQ retries until the feeder binds), as at a beamline.
    with FeederListener(address, secret=SECRET, roots=[root]) as listener:
        send_new_file(address, paths, secret=SECRET, timeout=5)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += listener.get(timeout=1)
    assert got == [os.path.realpath(p) for p in paths]


@contextmanager
def socket_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


def test_wait_for_subscribers_times_out_without_a_listener():
    with FeederPublisher(ANY_PORT) as pub:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="0 of 1 subscriber"):
            pub.wait_for_subscribers(1, timeout=0.3)
        assert time.monotonic() - t0 < 2


def test_push_without_a_peer_times_out():
    with FeederPublisher(ANY_PORT, "push", send_timeout=0.2, linger_ms=0) as push:
        with pytest.raises(TimeoutError):
            push.send_new_file("/data/x.tif")


# ---- signatures --------------------------------------------------------------------------------


def test_signature_scheme_test_vector():
    message = {"command": "new file", "argument": VECTOR_PATH}
    assert canonical_json(message) == VECTOR_CANONICAL
    signed = sign_message(message, SECRET)
    assert signed["signature"] == VECTOR_SIGNATURE
    assert verify_message(signed, SECRET) and verify_message(signed, SECRET.encode())
    assert not verify_message(signed, "other")
    assert json.loads(make_message(VECTOR_PATH, SECRET))["signature"] == VECTOR_SIGNATURE
    if shutil.which("openssl"):  # the shell recipe of docs/realtime.md
        out = subprocess.run(
            ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-r"],
            input=VECTOR_CANONICAL,
            capture_output=True,
            check=True,
        ).stdout.decode()
        assert out.split()[0] == VECTOR_SIGNATURE


def test_signed_message_is_accepted(root):
    path = str(root / "frame_00001.tif")
    with pub_sub(root, secret=SECRET) as (pub, listener):
        pub.send_new_file(path)
        assert listener.get(timeout=5) == [os.path.realpath(path)]
        # key order and whitespace on the wire do not matter: the canonical form is signed
        signed = sign_message({"argument": path, "command": "new file"}, SECRET)
        pub.send_raw(json.dumps(signed, indent=2))
        assert listener.get(timeout=5) == [os.path.realpath(path)]
    assert listener.rejected == 0


def test_unsigned_and_wrongly_signed_messages_are_rejected_and_logged(root, caplog):
    caplog.set_level(logging.INFO, logger="photonflow.feeder")
    path = str(root / "frame_00001.tif")
    unsigned = make_message(path)
    other_secret = make_message(path, "not-the-secret")
    tampered = sign_message({"command": "new file", "argument": path}, SECRET)
    tampered["argument"] = str(root / "frame_00002.tif")
    garbage = {"command": "new file", "argument": path, "signature": "zz" * 32}
    not_a_string = {"command": "new file", "argument": path, "signature": 12345}
    with pub_sub(root, secret=SECRET) as (pub, listener):
        assert "unsigned" in rejected_by(pub, listener, root, unsigned)
        for bad in (other_secret, json.dumps(tampered), json.dumps(garbage), json.dumps(not_a_string)):
            assert rejected_by(pub, listener, root, bad) == "wrong signature"
    assert listener.accepted == 5 and listener.rejected == 5
    warnings = [r for r in caplog.records if r.name == "photonflow.feeder" and r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert "unsigned message" in warnings[0].getMessage()
    assert all("wrong signature" in r.getMessage() for r in warnings[1:])


def test_empty_secret_is_a_configuration_error(root):
    with pytest.raises(ValueError, match="secret"):
        FeederListener(ANY_PORT, secret="", roots=[root])


# ---- paths -------------------------------------------------------------------------------------


def test_paths_outside_the_roots_are_rejected(root, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="photonflow.feeder")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.tif").write_bytes(b"x")
    (root / "link.tif").symlink_to(outside / "secret.tif")  # a symlink inside the root, pointing out
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    sibling = tmp_path / "data2"  # shares the root's name as a prefix: /…/data vs /…/data2
    sibling.mkdir()
    (sibling / "f.tif").write_bytes(b"x")
    bad = [
        "/etc/passwd",
        str(outside / "secret.tif"),
        f"{root}/../outside/secret.tif",
        f"{root}/../../../../../../../etc/passwd",
        str(root / "link.tif"),
        str(root / "linkdir" / "secret.tif"),
        str(sibling / "f.tif"),
        str(root),  # the root itself is not a file in it
        "relative/frame.tif",  # no base_dir configured
    ]
    with pub_sub(root) as (pub, listener):
        reasons = [rejected_by(pub, listener, root, make_message(p)) for p in bad]
    assert all("outside the data roots" in r for r in reasons[:-1]), reasons
    assert "relative path" in reasons[-1]
    assert listener.rejected == len(bad)
    assert len([r for r in caplog.records if "outside the data roots" in r.getMessage()]) == len(bad) - 1


def test_symlink_within_the_root_is_accepted_as_its_target(root):
    (root / "sub").mkdir()
    (root / "sub" / "latest.tif").symlink_to(root / "frame_00002.tif")
    with pub_sub(root) as (pub, listener):
        pub.send_new_file(root / "sub" / "latest.tif")
        assert listener.get(timeout=5) == [os.path.realpath(root / "frame_00002.tif")]
        pub.send_new_file(f"{root}/sub/../frame_00001.tif")
        assert listener.get(timeout=5) == [os.path.realpath(root / "frame_00001.tif")]


def test_relative_paths_are_joined_to_base_dir(root):
    """SAXSDOG's server joins the argument to its server directory; base_dir does the same."""
    with pub_sub(root, base_dir=root.parent) as (pub, listener):
        pub.send_raw(json.dumps({"command": "new file", "argument": "data/frame_00001.tif"}))
        assert listener.get(timeout=5) == [os.path.realpath(root / "frame_00001.tif")]
        reason = rejected_by(pub, listener, root, json.dumps({"command": "new file", "argument": "../etc/passwd"}))
        assert "outside the data roots" in reason


def test_several_roots(root, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    with pub_sub(root, roots=[root, other]) as (pub, listener):
        pub.send_new_file(other / "a.tif")
        assert listener.get(timeout=5) == [os.path.realpath(other / "a.tif")]
        pub.send_new_file(root / "frame_00001.tif")
        assert listener.get(timeout=5) == [os.path.realpath(root / "frame_00001.tif")]


# ---- malformed ---------------------------------------------------------------------------------


def test_malformed_messages_are_rejected(root, caplog):
    caplog.set_level(logging.INFO, logger="photonflow.feeder")
    path = str(root / "frame_00001.tif")
    cases = [
        (b"{not json", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'["new file", "/data/x.tif"]', "not an object"),
        (json.dumps({"argument": path}), "missing command"),
        (json.dumps({"command": "abort queue", "argument": path}), "unknown command"),
        (json.dumps({"command": 7, "argument": path}), "unknown command"),
        (json.dumps({"command": "new file"}), "missing argument"),
        (json.dumps({"command": "new file", "argument": ""}), "missing argument"),
        (json.dumps({"command": "new file", "argument": ["/a"]}), "missing argument"),
        (json.dumps({"command": "new file", "argument": path + "\x00.tif"}), "NUL"),
    ]
    with pub_sub(root) as (pub, listener):
        for raw, reason in cases:
            assert reason in rejected_by(pub, listener, root, raw), raw
    assert listener.rejected == len(cases)
    assert listener.rejections[0][1] == "{not json"  # the excerpt of the raw message
    unknown = [r for r in caplog.records if "unknown command" in r.getMessage()]
    assert len(unknown) == 2 and all(r.levelno == logging.INFO for r in unknown)


def test_multipart_message_uses_its_last_frame(root):
    path = str(root / "frame_00001.tif")
    with pub_sub(root) as (pub, listener):
        pub._socket().send_multipart([b"topic", make_message(path)])
        assert listener.get(timeout=5) == [os.path.realpath(path)]


def test_rejections_list_is_bounded(root):
    with pub_sub(root, max_rejections=3) as (pub, listener):
        for i in range(6):
            pub.send_raw(f"bad {i}")
        sentinel(pub, listener, root)
    assert listener.rejected == 6
    assert [excerpt for _, excerpt in listener.rejections] == ["bad 3", "bad 4", "bad 5"]


# ---- lifecycle ---------------------------------------------------------------------------------


def test_listener_stops_promptly_and_wakes_a_blocked_get(root):
    listener = FeederListener(ANY_PORT, bind=True, roots=[root]).start()
    assert listener.running
    result = []
    waiter = threading.Thread(target=lambda: result.append(listener.get(timeout=None)))
    waiter.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    listener.stop()
    waiter.join(2)
    elapsed = time.monotonic() - t0
    assert not waiter.is_alive() and result == [[]]
    assert elapsed < 1.0, elapsed
    assert not listener.running
    assert listener.get(timeout=None) == []  # never blocks once stopped
    listener.stop()  # twice is fine


def test_stop_keeps_accepted_paths_and_releases_the_address(root):
    path = str(root / "frame_00001.tif")
    with FeederListener(ANY_PORT, "pull", bind=True, roots=[root]) as listener:
        endpoint = listener.endpoint
        with FeederPublisher(endpoint, "push", bind=False) as push:
            push.send_new_file(path)
            deadline = time.monotonic() + 5
            while listener.qsize() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
    assert listener.get(timeout=0) == [os.path.realpath(path)]
    # LINGER 0 and a terminated context: the same address binds again at once
    with FeederListener(endpoint, "pull", bind=True, roots=[root]) as again:
        assert again.endpoint == endpoint


def test_bind_error_is_raised_by_start(root):
    with FeederListener(ANY_PORT, "pull", bind=True, roots=[root]) as first:
        with pytest.raises(zmq.ZMQError):
            FeederListener(first.endpoint, "pull", bind=True, roots=[root]).start()


def test_configuration_errors(root):
    with pytest.raises(ValueError, match="socket_type"):
        FeederListener(ANY_PORT, "pub", roots=[root])
    with pytest.raises(ValueError, match="root"):
        FeederListener(ANY_PORT, roots=[])
    with pytest.raises(ValueError, match="socket_type"):
        FeederPublisher(ANY_PORT, "sub")


# ---- command line ------------------------------------------------------------------------------


def test_command_line_send_raw_and_paths(root, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    path = str(root / "frame_00001.tif")
    signed = json.dumps(sign_message({"command": "new file", "argument": path}, SECRET))
    with FeederListener(ANY_PORT, "pull", bind=True, secret=SECRET, roots=[root]) as listener:
        args = ["send", listener.endpoint, "--socket", "push", "--connect", "--timeout", "5"]
        assert _main([*args, "--raw", signed]) == 0
        assert _main([*args, "--secret-file", str(secret_file), str(root / "frame_00002.tif")]) == 0
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += listener.get(timeout=1)
    assert got == [os.path.realpath(path), os.path.realpath(root / "frame_00002.tif")]
