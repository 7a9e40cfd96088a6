#!/usr/bin/env python3
"""Open many idle PostgreSQL client connections and hold them.

Each connection completes the startup (trust authentication: StartupMessage, then read up to
ReadyForQuery) and then stays idle. Once all are ready the script prints "ready N" on stdout
(flushed) and holds them until it is killed (SIGTERM). Used by
bench/router/run.sh to measure a proxy's memory per idle session.

    python3 idle_clients.py --port 5432 --count 1000 [--host 127.0.0.1] [--user postgres]

Plain sockets and one selector, so 1,000 connections cost the client a few MB (psql in the
background would cost a process each). At most --parallel startups are in flight at once.
Exits 1 with a message naming the connection if a startup fails or --timeout passes.
"""

import argparse
import resource
import selectors
import socket
import struct
import sys
import time


def startup_message(user, database):
    body = struct.pack("!I", 196608)  # protocol 3.0
    for key, value in (("user", user), ("database", database)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


class Conn:
    """One client connection in its startup; `ready` once ReadyForQuery arrived."""

    def __init__(self, index, host, port, message):
        self.index = index
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex((host, port))
        self.out = message
        self.inbuf = b""
        self.ready = False

    def on_writable(self):
        sent = self.sock.send(self.out)
        self.out = self.out[sent:]

    def on_readable(self):
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError(f"connection {self.index}: closed by the server during startup")
        self.inbuf += data
        while len(self.inbuf) >= 5:
            kind = self.inbuf[0:1]
            (length,) = struct.unpack("!I", self.inbuf[1:5])
            if len(self.inbuf) < 1 + length:
                return
            payload = self.inbuf[5 : 1 + length]
            self.inbuf = self.inbuf[1 + length :]
            if kind == b"E":
                raise RuntimeError(f"connection {self.index}: server error {payload!r}")
            if kind == b"R" and struct.unpack("!I", payload[:4])[0] != 0:
                raise RuntimeError(
                    f"connection {self.index}: the server asks for a password; "
                    "use a server with trust authentication"
                )
            if kind == b"Z":
                self.ready = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--database", default="postgres")
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    message = startup_message(args.user, args.database)
    selector = selectors.DefaultSelector()
    deadline = time.monotonic() + args.timeout
    held, in_flight, started = [], 0, 0
    try:
        while len(held) < args.count:
            while in_flight < args.parallel and started < args.count:
                conn = Conn(started, args.host, args.port, message)
                selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
                started += 1
                in_flight += 1
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(held)} of {args.count} connections ready after {args.timeout} s"
                )
            for key, events in selector.select(timeout=1.0):
                conn = key.data
                if events & selectors.EVENT_WRITE and conn.out:
                    conn.on_writable()
                    if not conn.out:
                        selector.modify(conn.sock, selectors.EVENT_READ, conn)
                if events & selectors.EVENT_READ:
                    conn.on_readable()
                    if conn.ready:
                        selector.unregister(conn.sock)
                        held.append(conn)
                        in_flight -= 1
    except (RuntimeError, OSError) as e:
        print(f"idle_clients: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"ready {len(held)}", flush=True)
    while True:  # hold the connections until killed
        time.sleep(3600)


if __name__ == "__main__":
    main()
