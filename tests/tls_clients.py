#!/usr/bin/env python3
"""tls_clients.py - the clients of tests/test_tls.sh that s_client and curl
cannot be: many silent connections timed against a real handshake, and a
client that resets in the middle of a response.  Loopback only; every wait
bounded.  Exit status 0 when the behaviour holds, 1 (with the reason on
stdout) when it does not.

  tls_clients.py silent PORT COUNT DEADLINE CAFILE [SLACK]
  tls_clients.py reset PORT URLPATH CAFILE
"""
import resource
import selectors
import socket
import ssl
import statistics
import sys
import time


def client_ctx(cafile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    return ctx


def handshake(port, ctx):
    """Seconds for connect, handshake and one echoed line."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="a.test") as s:
            s.sendall(b"ping\n")
            if s.recv(16) != b"ping\n":
                raise RuntimeError("no echo")
            took = time.perf_counter() - t0
            s.unwrap()
    return took


def silent(port, count, deadline, cafile, slack):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    ctx = client_ctx(cafile)
    handshake(port, ctx)  # warm: the first one pays for loading things
    usual = statistics.median(handshake(port, ctx) for _ in range(5))
    socks, opened = [], {}
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        opened[s] = time.monotonic()
        socks.append(s)
    # The server accepts them and hands each to a worker: give the loop a
    # moment (a forking server forks a thousand children), then time real
    # handshakes while every silent one is held.
    time.sleep(0.3)
    held = statistics.median(handshake(port, ctx) for _ in range(3))
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    cut = []
    end = time.monotonic() + deadline * 2 + 5
    while len(cut) < count and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(64)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if data == b"":
                cut.append(time.monotonic() - opened[s])
                sel.unregister(s)
                s.close()
    for s in socks:
        if s.fileno() >= 0:
            s.close()
    print(f"  figures: usual handshake {usual*1000:.1f} ms, with {count} silent "
          f"connections held {held*1000:.1f} ms; {len(cut)} cut after "
          f"{min(cut, default=0):.2f}..{max(cut, default=0):.2f} s "
          f"(deadline {deadline} s)")
    ok = True
    if held > usual + 0.1:
        print(f"  failure: handshake delayed by {(held-usual)*1000:.0f} ms (> 100)")
        ok = False
    if len(cut) != count:
        print(f"  failure: {count - len(cut)} silent connections never cut")
        ok = False
    elif min(cut) < deadline * 0.9 or max(cut) > deadline * 1.1 + slack:
        print("  failure: cut outside the deadline's bounds")
        ok = False
    return ok


def reset(port, path, cafile):
    """Resets five times in the middle of a large response, then fetches
    it whole: the server must have survived every reset."""
    ctx = client_ctx(cafile)
    req = f"GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode()
    for _ in range(5):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="a.test")
        s.sendall(req)
        got = 0
        while got < 65536:
            chunk = s.recv(16384)
            if not chunk:
                print(f"  failure: the response ended after {got} bytes")
                return False
            got += len(chunk)
        # SO_LINGER 0: close sends RST, the server's next writes fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        time.sleep(0.05)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="a.test") as s:
        s.sendall(req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        body = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    if b" 200 " not in body.split(b"\r\n", 1)[0]:
        print("  failure: no 200 after the resets")
        return False
    return True


def main():
    cmd = sys.argv[1]
    if cmd == "silent":
        ok = silent(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                    sys.argv[5], float(sys.argv[6]) if len(sys.argv) > 6 else 0.5)
    elif cmd == "reset":
        try:
            ok = reset(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        except OSError as e:
            print(f"  failure: {e}")
            ok = False
    else:
        print(__doc__)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
