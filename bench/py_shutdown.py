"""py_shutdown.py - shutdown latency of CPython's socketserver.

    python3 bench/py_shutdown.py [ITERATIONS]

Each iteration starts a ThreadingTCPServer on 127.0.0.1:0 serving in a
thread with poll_interval 0.5, waits a random 20-520 ms (a random phase of
the poll interval), calls shutdown(), and measures the time from the call
to serve_forever() returning.  Prints
    RESULT shutdown n=N median_us=X p90_us=X max_us=X
"""
import random
import socketserver
import sys
import threading
import time


def one():
    server = socketserver.ThreadingTCPServer(
        ("127.0.0.1", 0), socketserver.BaseRequestHandler)
    returned = []

    def serve():
        server.serve_forever(poll_interval=0.5)
        returned.append(time.monotonic())

    t = threading.Thread(target=serve)
    t.start()
    time.sleep(random.uniform(0.02, 0.52))
    t0 = time.monotonic()
    server.shutdown()
    t.join()
    server.server_close()
    return returned[0] - t0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    lat = sorted(one() * 1e6 for _ in range(n))
    print("RESULT shutdown n=%d median_us=%.1f p90_us=%.1f max_us=%.1f" % (
        n, lat[n // 2], lat[min(n - 1, int(n * 0.9))], lat[-1]))


if __name__ == "__main__":
    main()
