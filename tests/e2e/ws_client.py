"""A raw HTTP/WebSocket client for tests that must send what a well-behaved
library will not (unmasked frames, bad UTF-8, slow headers), and JWT minting.
Shared by the WebSocket hook and gateway tests."""
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import time

from engine_util import HOST

IO_TIMEOUT = 5.0


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(payload, secret, alg="HS256"):
    """A JWT signed with HMAC (HS256/HS512), or unsigned for alg "none"."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signing = ("%s.%s" % (header, body)).encode()
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}.get(alg)
    sig = b64url(hmac.new(secret.encode(), signing, digest).digest()) if digest else ""
    return "%s.%s.%s" % (header, body, sig)


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade_request(path="/ws", version="13", key=KEY, origin=None, extra=""):
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\n" % (path, HOST, key, version))
    if origin:
        req += "Origin: %s\r\n" % origin
    return (req + extra + "\r\n").encode()


class Raw:
    """A blocking socket with a receive buffer."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("nothing in time")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("closed by the server")
        self.buf += chunk

    def read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout=None):
        """(status, {header: value}, body) of one HTTP response."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = self.read_exact(int(headers["content-length"]), deadline)
        return status, headers, body

    def wait_eof(self, timeout=IO_TIMEOUT):
        """True when the server closes (EOF or reset) within timeout; data
        arriving meanwhile is kept."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def handshake(self, path="/ws", **kw):
        self.send(upgrade_request(path, **kw))
        status, headers, _ = self.read_response()
        assert status == 101, (status, headers)
        assert headers["sec-websocket-accept"] == ACCEPT
        assert headers["upgrade"].lower() == "websocket"
        return headers

    # frames
    def read_frame(self, timeout=None):
        """(fin, opcode, payload) of the next frame; server frames are never masked."""
        deadline = time.monotonic() + (timeout or self.timeout)
        b0, b1 = self.read_exact(2, deadline)
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self.read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack(">Q", self.read_exact(8, deadline))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self.read_exact(n, deadline)

    def read_until(self, opcode, timeout=None):
        """Frames until one with opcode (others are collected); (payload, others)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        others = []
        while True:
            fin, op, payload = self.read_frame(max(0.01, deadline - time.monotonic()))
            if op == opcode:
                return payload, others
            others.append((op, payload))

    def read_close(self, timeout=None):
        payload, others = self.read_until(0x8, timeout)
        code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
        return code, payload[2:].decode("utf-8", "replace"), others

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, key=None):
    """One client frame; key: its masking key (None: a random one)."""
    if isinstance(payload, str):
        payload = payload.encode()
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = key or os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


