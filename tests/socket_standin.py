"""A loopback stand-in for Slack's Socket Mode WebSocket: hands the bot envelopes, records its acks.

Just enough of RFC 6455 for slack_sdk's built-in client (which speaks plain ws:// to ports other than 443).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class SocketModeStandIn:
    def __init__(self) -> None:
        self.acks: list[dict] = []
        self.connected = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._listener.getsockname()[1]}/link"

    def close(self) -> None:
        for sock in (self._conn, self._listener):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def send_envelope(self, envelope: dict) -> None:
        self._send(0x1, json.dumps(envelope).encode())

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self._conn = conn
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(1024)
        key = next(line.split(":", 1)[1].strip() for line in request.decode().split("\r\n")
                   if line.lower().startswith("sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        self.send_envelope({"type": "hello", "num_connections": 1, "debug_info": {"host": "standin"}})
        self.connected.set()
        try:
            self._read(conn)
        except OSError:
            return

    def _recv(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _read(self, conn: socket.socket) -> None:
        while True:
            first, second = self._recv(conn, 2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._recv(conn, 2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._recv(conn, 8))[0]
            mask = self._recv(conn, 4) if second & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._recv(conn, length)))
            if opcode == 0x1:
                self.acks.append(json.loads(payload))
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                return

    def _send(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([len(payload)])
        elif len(payload) < 65536:
            header += bytes([126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([127]) + struct.pack(">Q", len(payload))
        with self._send_lock:
            assert self._conn is not None
            self._conn.sendall(header + payload)


def slash_command_envelope(text: str, response_url: str, channel_id: str = "C0GENERAL") -> dict:
    return {
        "envelope_id": os.urandom(8).hex(),
        "type": "slash_commands",
        "accepts_response_payload": True,
        "payload": {"token": "x", "team_id": "T0SANDBOX", "team_domain": "sandbox", "channel_id": channel_id,
                    "channel_name": "general", "user_id": "U0ALICE", "user_name": "alice", "command": "/finetune",
                    "text": text, "api_app_id": "A0FINETUNE", "response_url": response_url,
                    "trigger_id": "1.trigger"},
    }
