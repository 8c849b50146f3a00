"""py_echo.py - CPython's socketserver echo servers, for comparison.

    python3 bench/py_echo.py KIND ADDRESS

KIND: tcp threading forking udp threading-udp threading-unix forking-unix
      unix-dgram.  ADDRESS: 127.0.0.1:0 or unix:/path.  Same start-up
contract as the C servers: prints "listening on ADDRESS", serves until
SIGTERM or SIGINT, closes (waiting for requests, as Python does).

Like for like with the C servers: StreamRequestHandler with its default
buffers, echoing line by line; DatagramRequestHandler echoing the packet.
One deliberate change: request_queue_size is SOMAXCONN (Python 3.15's
default; 3.11-3.14 use 5), so the comparison measures the servers, not a
listen backlog that overflows under 16 concurrent connects.
"""
import os
import signal
import socket
import socketserver
import sys


class StreamEcho(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)


class DatagramEcho(socketserver.DatagramRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.read())


class ForkingUnixStreamServer(socketserver.ForkingMixIn,
                              socketserver.UnixStreamServer):
    """Python 3.12 has this class; 3.11 does not."""


KINDS = {
    "tcp": (socketserver.TCPServer, StreamEcho),
    "threading": (socketserver.ThreadingTCPServer, StreamEcho),
    "forking": (socketserver.ForkingTCPServer, StreamEcho),
    "udp": (socketserver.UDPServer, DatagramEcho),
    "threading-udp": (socketserver.ThreadingUDPServer, DatagramEcho),
    "threading-unix": (socketserver.ThreadingUnixStreamServer, StreamEcho),
    "forking-unix": (ForkingUnixStreamServer, StreamEcho),
    "unix-dgram": (socketserver.UnixDatagramServer, DatagramEcho),
}


def parse(address):
    if address.startswith("unix:"):
        return address[5:]
    host, _, port = address.rpartition(":")
    return (host, int(port))


def fmt(address):
    if isinstance(address, str):
        return "unix:" + address
    return "%s:%d" % address[:2]


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in KINDS:
        sys.exit("usage: py_echo.py %s ADDRESS" % "|".join(KINDS))
    base, handler = KINDS[sys.argv[1]]
    cls = type(base.__name__, (base,), {
        "allow_reuse_address": True,
        "request_queue_size": socket.SOMAXCONN,
    })
    server = cls(parse(sys.argv[2]), handler)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("listening on " + fmt(server.server_address), flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        if isinstance(server.server_address, str):
            try:
                os.unlink(server.server_address)
            except OSError:
                pass


if __name__ == "__main__":
    main()
