#!/bin/sh
# make demo: start the threading echo server on a free loopback port, talk
# to it with the example client, print the exchange, shut it down.
set -eu
bin=${1:-build/examples}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

"$bin/echo_threading_server" 127.0.0.1:0 >"$out" &
pid=$!
# Wait (at most 5 s) for the server's first line: "listening on ADDRESS".
i=0
until grep -q '^listening on ' "$out"; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "demo: server did not start" >&2
        kill "$pid" 2>/dev/null || true
        exit 1
    fi
    sleep 0.05
done
addr=$(sed -n 's/^listening on //p' "$out")
echo "server:  $(head -n 1 "$out")  (pid $pid)"
for msg in "hello, libsockserver" "lines come back byte for byte" "bye"; do
    echo "client > $msg"
    reply=$("$bin/echo_client" "$addr" "$msg")
    echo "server < $reply"
    [ "$reply" = "$msg" ] || { echo "demo: wrong echo" >&2; kill "$pid"; exit 1; }
done
kill -TERM "$pid"
wait "$pid"
echo "server stopped cleanly on SIGTERM (exit $?)"
