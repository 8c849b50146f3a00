#!/usr/bin/env bash
# test_http.sh - the HTTP/1.1 file server example (examples/http_file_server)
# driven by real clients on loopback: curl, Python's http.client, and raw
# bytes from a Python socket for the hostile cases.  Prints cmocka-style
# lines ("[  PASSED  ] N test(s).", "[  FAILED  ] N test(s).") for
# tests/run_tests.sh; exits non-zero on any failure.  A test whose client
# program is missing is skipped, and says so.
#
#   BUILD=build tests/test_http.sh        (make test sets BUILD)
#
# Every wait is bounded: curl --max-time, socket timeouts in the Python
# helpers, and polling loops with a deadline for server start and exit.
SUITE=test_http
. "$(dirname "$0")/deploy_lib.sh"

SERVER=$EX/http_file_server
declare -A ADDR LOG

# ------------------------------------------------------------------------
# Helpers

# start_server NAME [ARGS...]: runs the server, waits (10 s at most) for
# "listening on ADDRESS"; sets PID[NAME], ADDR[NAME], LOG[NAME] (stderr).
start_server() {
    local name=$1
    shift
    start "$name" "$SERVER" "$@"
    LOG[$name]=$T/$name.err
    wait_for "$name" '^listening on ' "${OUT[$name]}" 10 || return 1
    ADDR[$name]=$(address_of "$name")
}

# stop_server NAME [SIGNAL]: signals it; it must exit 0 within 10 s.
stop_server() {
    kill "-${2:-TERM}" "${PID[$1]}"
    wait_exit "$1" 10 || { fail "server $1 did not exit within 10 s"; return 1; }
    [ "$STATUS" = 0 ] || { fail "server $1 exited with status $STATUS"; return 1; }
}

url() { echo "http://${ADDR[main]}$1"; }

# curl with bounds; -g so [::1] is not a glob.
CURL=(curl -sS -g --max-time 30)

# raw ADDRESS [TIMEOUT]: sends stdin as it is, prints every byte the
# server sends until it closes; fails (status 3) if it has not closed
# within TIMEOUT seconds (default 10), or if sending fails.  RAW_SNDBUF
# in the environment fixes the socket's send buffer size.
raw() { python3 "$T/raw.py" "$@"; }

# status_of FILE: the status code on the response's first line.
status_of() { head -n 1 "$1" | sed -n 's/^HTTP\/1\.1 \([0-9][0-9][0-9]\) .*/\1/p'; }

# header FILE NAME: the value of header NAME in the first response.
header() {
    sed -n '1,/^\r$/p' "$1" | tr -d '\r' |
        sed -n "s/^$2: //Ip" | head -n 1
}

# expect_raw STATUS PAYLOAD-FILE: sends the payload to the main server and
# checks the status, that the answer is a whole response (the server
# closed after it) and that nothing from outside the root came back.
expect_raw() {
    local want=$1 payload=$2 got
    raw "${ADDR[main]}" <"$payload" >"$T/resp" || { fail "no answer, or the server did not close"; return 1; }
    got=$(status_of "$T/resp")
    [ "$got" = "$want" ] || { fail "status '$got', want $want: $(head -c 200 "$T/resp")"; return 1; }
    if grep -q TOPSECRET "$T/resp"; then
        fail "a byte from outside the root was sent"
        return 1
    fi
}

# req FILE FORMAT [ARGS...]: printf's a request into FILE.
req() {
    local f=$1
    shift
    # shellcheck disable=SC2059
    printf "$@" >"$f"
}

# ------------------------------------------------------------------------
# Fixtures: the root and what lies outside it

make_fixtures() {
    R=$T/root
    mkdir -p "$R/sub" "$R/site" "$R/list/subdir" "$T/outside"
    printf 'TOPSECRET: never served\n' >"$T/outside/secret.txt"
    for i in $(seq 1 200); do echo "line $i: the quick brown fox"; done >"$R/text.txt"
    head -c 10485760 /dev/urandom >"$R/big.bin"
    : >"$R/empty.txt"
    python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 16)' >"$R/bytes.dat" 2>/dev/null ||
        head -c 4096 /dev/urandom >"$R/bytes.dat"
    head -c 1048576 /dev/urandom >"$R/one.bin"
    echo hello >"$R/hello.txt"
    echo '<p>page</p>' >"$R/page.html"
    printf '\x89PNG\r\n' >"$R/image.png"
    echo data >"$R/thing.xyz"
    echo '<h1>index</h1>' >"$R/site/index.html"
    echo inner >"$R/sub/inner.txt"
    echo one >"$R/list/a b&c.txt"
    echo two >"$R/list/z<tag>.txt"
    echo old >"$R/old.txt"
    touch -d '2001-02-03 04:05:06 UTC' "$R/old.txt"
    # Symlinks: two leave the root, one stays inside.
    ln -s ../outside/secret.txt "$R/leak.txt"
    ln -s "$T/outside" "$R/leakdir"
    ln -s hello.txt "$R/alias.txt"

    cat >"$T/raw.py" <<'EOF'
import os, socket, sys, time
addr = sys.argv[1]
timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
data = sys.stdin.buffer.read()
if addr.startswith("unix:"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(addr[5:])
else:
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
if os.environ.get("RAW_SNDBUF"):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(os.environ["RAW_SNDBUF"]))
s.sendall(data)
out = b""
closed = False
deadline = time.monotonic() + timeout
while not closed and time.monotonic() < deadline:
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        break
    except ConnectionResetError:
        closed = True
        break
    closed = not chunk
    out += chunk
s.close()
sys.stdout.buffer.write(out)
sys.exit(0 if closed else 3)
EOF
}

# ------------------------------------------------------------------------
# Fetching files

test_get_text_file_is_byte_identical() {
    "${CURL[@]}" -o "$T/got" "$(url /text.txt)" || return 1
    cmp "$T/got" "$R/text.txt" || fail "text.txt differs"
}

test_get_binary_file_of_every_byte_is_byte_identical() {
    "${CURL[@]}" -o "$T/got" "$(url /bytes.dat)" || return 1
    cmp "$T/got" "$R/bytes.dat" || fail "bytes.dat differs"
}

test_get_empty_file_sends_content_length_zero() {
    "${CURL[@]}" -D "$T/hdr" -o "$T/got" "$(url /empty.txt)" || return 1
    cmp "$T/got" "$R/empty.txt" || { fail "empty.txt differs"; return 1; }
    [ "$(header "$T/hdr" Content-Length)" = 0 ] || fail "Content-Length is not 0"
}

test_get_10mib_binary_is_byte_identical() {
    "${CURL[@]}" -D "$T/hdr" -o "$T/got" "$(url /big.bin)" || return 1
    cmp "$T/got" "$R/big.bin" || { fail "big.bin differs"; return 1; }
    [ "$(header "$T/hdr" Content-Length)" = 10485760 ] || fail "wrong Content-Length"
}

test_parallel_clients_all_get_whole_files() {
    local pids=() i
    for i in $(seq 1 8); do
        "${CURL[@]}" -o "$T/par.$i" "$(url /one.bin)" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || { fail "a curl failed"; return 1; }; done
    for i in $(seq 1 8); do
        cmp "$T/par.$i" "$R/one.bin" || { fail "copy $i differs"; return 1; }
    done
}

test_head_returns_headers_only() {
    req "$T/p" 'HEAD /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'
    raw "${ADDR[main]}" <"$T/p" >"$T/resp" || return 1
    [ "$(status_of "$T/resp")" = 200 ] || { fail "status not 200"; return 1; }
    [ "$(header "$T/resp" Content-Length)" = 10485760 ] || { fail "wrong Content-Length"; return 1; }
    python3 - "$T/resp" <<'EOF' || fail "HEAD response carried body bytes"
import sys
d = open(sys.argv[1], "rb").read()
sys.exit(0 if d.endswith(b"\r\n\r\n") and d.count(b"\r\n\r\n") == 1 else 1)
EOF
}

test_content_type_follows_extension() {
    local f want got
    for f in page.html:text/html text.txt:text/plain image.png:image/png \
        thing.xyz:application/octet-stream; do
        want=${f#*:}
        got=$("${CURL[@]}" -o /dev/null -w '%{content_type}' "$(url "/${f%%:*}")") || return 1
        [ "$got" = "$want" ] || { fail "${f%%:*}: '$got', want '$want'"; return 1; }
    done
}

test_last_modified_and_if_modified_since() {
    local lm code
    "${CURL[@]}" -D "$T/hdr" -o /dev/null "$(url /old.txt)" || return 1
    lm=$(header "$T/hdr" Last-Modified)
    [ "$lm" = "Sat, 03 Feb 2001 04:05:06 GMT" ] || { fail "Last-Modified '$lm'"; return 1; }
    code=$("${CURL[@]}" -o "$T/got304" -w '%{http_code}' -H "If-Modified-Since: $lm" "$(url /old.txt)")
    [ "$code" = 304 ] && [ ! -s "$T/got304" ] || { fail "unchanged file: $code, want 304 without body"; return 1; }
    code=$("${CURL[@]}" -o "$T/got" -w '%{http_code}' \
        -H "If-Modified-Since: Fri, 02 Feb 2001 00:00:00 GMT" "$(url /old.txt)")
    [ "$code" = 200 ] && cmp -s "$T/got" "$R/old.txt" || fail "modified since: $code, want 200"
}

# ------------------------------------------------------------------------
# Directories

test_directory_serves_its_index_html() {
    "${CURL[@]}" -o "$T/got" "$(url /site/)" || return 1
    cmp "$T/got" "$R/site/index.html" || fail "not index.html"
}

test_directory_without_slash_redirects_301() {
    local code loc
    code=$("${CURL[@]}" -D "$T/hdr" -o /dev/null -w '%{http_code}' "$(url '/site?x=1')")
    loc=$(header "$T/hdr" Location)
    [ "$code" = 301 ] && [ "$loc" = "/site/?x=1" ] || fail "got $code Location '$loc'"
}

test_directory_listing_escapes_names() {
    "${CURL[@]}" -o "$T/got" "$(url /list/)" || return 1
    grep -q 'href="a%20b%26c.txt">a b&amp;c.txt<' "$T/got" || { fail "a b&c.txt not listed escaped"; return 1; }
    grep -q 'href="z%3Ctag%3E.txt">z&lt;tag&gt;.txt<' "$T/got" || { fail "z<tag>.txt not listed escaped"; return 1; }
    grep -q 'href="subdir/">subdir/<' "$T/got" || { fail "subdir/ not listed"; return 1; }
    # The listing's links work.
    "${CURL[@]}" -o "$T/got" "$(url '/list/a%20b%26c.txt')" || return 1
    cmp "$T/got" "$R/list/a b&c.txt" || fail "listed file not served"
}

test_missing_file_is_404() {
    local code
    code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$(url /nope.txt)")
    [ "$code" = 404 ] || fail "got $code"
}

test_symlink_inside_root_is_served() {
    "${CURL[@]}" -o "$T/got" "$(url /alias.txt)" || return 1
    cmp "$T/got" "$R/hello.txt" || fail "alias.txt differs"
}

# ------------------------------------------------------------------------
# Connections

test_keep_alive_serves_several_requests_on_one_connection() {
    local n
    n=$("${CURL[@]}" -v -o "$T/k1" -o "$T/k2" -o "$T/k3" -w '%{num_connects} ' \
        "$(url /text.txt)" "$(url /bytes.dat)" "$(url /empty.txt)" 2>"$T/verbose") || return 1
    cmp "$T/k1" "$R/text.txt" && cmp "$T/k2" "$R/bytes.dat" && cmp "$T/k3" "$R/empty.txt" ||
        { fail "a file differs"; return 1; }
    [ "$n" = "1 0 0 " ] || { fail "new connections per transfer: '$n', want '1 0 0 '"; return 1; }
    [ "$(grep -c '^\* Connected to' "$T/verbose")" = 1 ] || { fail "more than one connection"; return 1; }
    grep -q 'Re-using existing connection' "$T/verbose" || fail "curl did not re-use the connection"
}

test_connection_close_ends_the_connection() {
    local n
    n=$("${CURL[@]}" -D "$T/hdr" -o /dev/null -o /dev/null -w '%{num_connects} ' \
        -H 'Connection: close' "$(url /hello.txt)" "$(url /hello.txt)") || return 1
    [ "$n" = "1 1 " ] || { fail "new connections per transfer: '$n', want '1 1 '"; return 1; }
    [ "$(header "$T/hdr" Connection)" = close ] || fail "no 'Connection: close' in the response"
}

test_http10_closes_unless_keep_alive_asked() {
    local n
    req "$T/p" 'GET /hello.txt HTTP/1.0\r\n\r\n'
    expect_raw 200 "$T/p" || return 1
    [ "$(header "$T/resp" Connection)" = close ] || { fail "HTTP/1.0 not closed"; return 1; }
    n=$("${CURL[@]}" --http1.0 -H 'Connection: keep-alive' -o /dev/null -o /dev/null \
        -w '%{num_connects} ' "$(url /hello.txt)" "$(url /hello.txt)") || return 1
    [ "$n" = "1 0 " ] || fail "HTTP/1.0 keep-alive: new connections '$n', want '1 0 '"
}

test_pipelined_requests_are_answered_in_order() {
    req "$T/p" 'GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /page.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'
    raw "${ADDR[main]}" <"$T/p" >"$T/resp" || return 1
    python3 - "$T/resp" <<'EOF' || fail "pipelined responses wrong"
import sys
d = open(sys.argv[1], "rb").read()
a, rest = d.split(b"\r\n\r\n", 1)
assert a.startswith(b"HTTP/1.1 200") and rest.startswith(b"hello\n"), d
b, body = rest[6:].split(b"\r\n\r\n", 1)
assert b.startswith(b"HTTP/1.1 200") and body == b"<p>page</p>\n", d
EOF
}

test_python_http_client_fetches_over_one_connection() {
    python3 - "${ADDR[main]}" "$R" <<'EOF' || fail "http.client check failed"
import http.client, sys
addr, root = sys.argv[1], sys.argv[2]
host, port = addr.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port), timeout=10)
sock = None
for path, ctype in [("/text.txt", "text/plain"), ("/big.bin", "application/octet-stream"),
                    ("/empty.txt", "text/plain"), ("/page.html", "text/html")]:
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (path, r.status)
    assert body == open(root + path, "rb").read(), path
    assert r.getheader("Content-Type") == ctype, (path, r.getheader("Content-Type"))
    assert int(r.getheader("Content-Length")) == len(body), path
    assert not r.will_close, path
    sock = sock or c.sock
    assert c.sock is sock, "a new connection was made"
c.request("HEAD", "/big.bin")
r = c.getresponse()
assert r.status == 200 and r.read() == b"" and r.getheader("Content-Length") == "10485760"
c.request("GET", "/nope")
r = c.getresponse()
r.read()
assert r.status == 404
c.close()
EOF
}

# ------------------------------------------------------------------------
# Hostile input: each gets its status; the server goes on

test_malformed_request_lines_get_400() {
    local p
    for p in 'GARBAGE\r\n\r\n' 'GET /\r\n\r\n' 'GET  / HTTP/1.1\r\nHost: t\r\n\r\n' \
        'GET / HTTP/1.1 x\r\nHost: t\r\n\r\n' 'GET / HTTP/1.1x\r\nHost: t\r\n\r\n' \
        'GET / HTTP\r\n\r\n' '\x01\x02\xff\xfe / HTTP/1.1\r\n\r\n' \
        'G(T / HTTP/1.1\r\nHost: t\r\n\r\n' 'GET /\x7f HTTP/1.1\r\nHost: t\r\n\r\n' \
        'GET relative/path HTTP/1.1\r\nHost: t\r\n\r\n'; do
        req "$T/p" "$p"
        expect_raw 400 "$T/p" || { echo "  payload: $p"; return 1; }
    done
}

test_malformed_headers_get_400() {
    local p
    for p in 'GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n' \
        'GET / HTTP/1.1\r\nHost : t\r\n\r\n' \
        'GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n' \
        'GET / HTTP/1.1\r\n\r\n' \
        'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n' \
        'GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n' \
        'GET /%%zz HTTP/1.1\r\nHost: t\r\n\r\n' 'GET /a%%0 HTTP/1.1\r\nHost: t\r\n\r\n' \
        'GET /a%%00b HTTP/1.1\r\nHost: t\r\n\r\n'; do
        req "$T/p" "$p"
        expect_raw 400 "$T/p" || { echo "  payload: $p"; return 1; }
    done
}

test_unknown_method_gets_501_with_allow() {
    req "$T/p" 'BREW /pot HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'
    expect_raw 501 "$T/p" || return 1
    [ "$(header "$T/resp" Allow)" = "GET, HEAD" ] || { fail "no Allow: GET, HEAD"; return 1; }
    # A body we never read: answered, then the connection is closed.
    req "$T/p" 'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde'
    expect_raw 501 "$T/p" || return 1
    [ "$(header "$T/resp" Connection)" = close ] || fail "not closed after a body"
}

test_unsupported_http_version_gets_505() {
    req "$T/p" 'GET / HTTP/2.0\r\nHost: t\r\n\r\n'
    expect_raw 505 "$T/p"
}

test_uri_over_8k_gets_414_and_8000_bytes_do_not() {
    local long n
    # 9000: the request line itself is over its limit; 8200: the line
    # fits, the target does not.
    for n in 9000 8200; do
        long=$(head -c "$n" /dev/zero | tr '\0' a)
        req "$T/p" 'GET /%s HTTP/1.1\r\nHost: t\r\n\r\n' "$long"
        expect_raw 414 "$T/p" || return 1
    done
    long=$(head -c 8000 /dev/zero | tr '\0' a)
    req "$T/p" 'GET /%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' "$long"
    expect_raw 404 "$T/p"
}

test_header_section_over_64k_gets_431() {
    python3 -c '
import sys
h = "".join("X-Fill-%d: %s\r\n" % (i, "v" * 1000) for i in range(70))
sys.stdout.write("GET / HTTP/1.1\r\nHost: t\r\n" + h + "\r\n")' >"$T/p"
    expect_raw 431 "$T/p" || return 1
    python3 -c '
import sys
sys.stdout.write("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + "v" * 70000 + "\r\n\r\n")' >"$T/p"
    expect_raw 431 "$T/p" || return 1
    # A client still sending when the server answers (900 KB through a
    # small send buffer): the lingering close reads on, so the client's
    # send completes and it reads the 431; a plain close would reset the
    # connection under the send.
    python3 -c '
import sys
sys.stdout.write("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + "v" * 900000 + "\r\n\r\n")' >"$T/p"
    RAW_SNDBUF=32768 expect_raw 431 "$T/p"
}

test_over_100_header_lines_get_431_and_100_do_not() {
    python3 -c '
import sys
h = "".join("X-%d: v\r\n" % i for i in range(100))
sys.stdout.write("GET /hello.txt HTTP/1.1\r\nHost: t\r\n" + h + "\r\n")' >"$T/p"
    expect_raw 431 "$T/p" || return 1
    python3 -c '
import sys
h = "".join("X-%d: v\r\n" % i for i in range(98))
sys.stdout.write("GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + h + "\r\n")' >"$T/p"
    expect_raw 200 "$T/p"
}

# expect_each STATUS PAYLOAD...: expect_raw for each printf payload.
expect_each() {
    local want=$1 p
    shift
    for p in "$@"; do
        req "$T/p" "$p"
        expect_raw "$want" "$T/p" || { echo "  payload: $p"; return 1; }
    done
}

# RFC 9112 6.3: two different lengths leave the framing unknown.
test_two_different_content_lengths_get_400() {
    expect_each 400 \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nabcdef' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5,\r\n\r\nabcde' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 00001\r\n\r\nx' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\nx' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\nx' || return 1
    # The same length said twice is one length (RFC 9110 8.6).
    expect_each 200 \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 05\r\n\r\nabcde'
}

# RFC 9112 6.3 rule 4: chunked not last, the length cannot be known.
test_transfer_coding_not_ending_in_chunked_gets_400() {
    expect_each 400 \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n\r\n' || return 1
    expect_each 200 'GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'
}

# RFC 9112 6.1 and 6.3: Transfer-Encoding in HTTP/1.0, or beside a
# Content-Length, is faulty framing: answer, then close (expect_raw fails
# if the server keeps the connection open).
test_faulty_framing_is_answered_then_closed() {
    expect_each 200 \
        'GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n' || return 1
    [ "$(header "$T/resp" Connection)" = close ] || fail "no Connection: close"
}

# RFC 9112 9.6: after a request with "close", no further request on the
# connection is processed.
test_no_request_is_served_after_connection_close() {
    req "$T/p" 'GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /page.html HTTP/1.1\r\nHost: t\r\n\r\n'
    expect_raw 200 "$T/p" || return 1
    [ "$(grep -c '^HTTP/1.1 ' "$T/resp")" = 1 ] || fail "a second response: $(cat "$T/resp")"
}

# RFC 9112 2.2: whitespace between the request line and the first field.
test_whitespace_before_the_first_header_gets_400() {
    expect_each 400 'GET /hello.txt HTTP/1.1\r\n Host: t\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\n\tHost: t\r\n\r\n'
}

# RFC 9112 3.2.2: a server MUST accept the absolute form, and take the
# authority from it, not from Host.
test_absolute_form_target_is_served() {
    expect_each 200 'GET http://example.com/hello.txt HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n' \
        'GET HTTP://example.com:80/hello.txt?q HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' || return 1
    grep -q '^hello$' "$T/resp" || fail "not hello.txt: $(cat "$T/resp")"
}

# RFC 9110 6.6.1: an origin server with a clock sends Date in every
# 2xx, 3xx and 4xx response.
test_every_response_has_a_date() {
    local p
    for p in 'GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n=200' \
        'GET /site HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n=301' \
        'GET /old.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\nConnection: close\r\n\r\n=304' \
        'GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n=404' \
        'GET / HTTP/1.1\r\n\r\n=400'; do
        expect_each "${p##*=}" "${p%=*}" || return 1
        header "$T/resp" Date | grep -Eq '^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} GMT$' ||
            { fail "${p##*=}: no IMF-fixdate Date: $(head -c 300 "$T/resp")"; return 1; }
    done
}

# RFC 9112 3.2: exactly one Host in HTTP/1.1; HTTP/1.0 may leave it out.
test_missing_or_repeated_host_gets_400() {
    expect_each 400 'GET /hello.txt HTTP/1.1\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nConnection: close\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n' \
        'GET /hello.txt HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n' || return 1
    expect_each 200 'GET /hello.txt HTTP/1.0\r\n\r\n'
}

# RFC 9112 3.2: a Host field value that is not uri-host [":" port].
test_invalid_host_field_value_gets_400() {
    local h ok=()
    for h in 'a b' 'a/b' 'a@b' 'a?b' '[::1' '[zz::1]' '[::1]x' 'h:80x' 'h:1:2' \
        'h%%4' 'h%%zz' '\xc3\xa9.example' '"h"'; do
        expect_each 400 "GET /hello.txt HTTP/1.1\r\nHost: $h\r\n\r\n" || return 1
    done
    # Valid ones, the empty value included (a target with no authority).
    for h in '' 'example.com' 'example.com:8080' '127.0.0.1:80' '[::1]' \
        '[::1]:8080' 'ex%%41mple.com' "a-b_c~d!\$&'()*+,;=e" 'h:'; do
        ok+=("GET /hello.txt HTTP/1.1\r\nHost: $h\r\nConnection: close\r\n\r\n")
    done
    expect_each 200 "${ok[@]}"
}

# RFC 9112 2.2 (bare CR) and RFC 9110 5.5 (CR, LF, NUL in a value).
test_bare_cr_or_nul_in_a_field_value_gets_400() {
    expect_each 400 'GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-A: a\r\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\0\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-A: \x01\r\n\r\n' \
        'GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n' || return 1
    # HTAB and 8-bit bytes (obs-text) are field content.
    expect_each 200 'GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-A: a\tb\xe9\r\nConnection: close\r\n\r\n'
}

# ims_status DATE [MORE-HEADERS]: the status for GET /old.txt with it.
ims_status() {
    req "$T/p" 'GET /old.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: %s\r\n%bConnection: close\r\n\r\n' "$1" "${2:-}"
    raw "${ADDR[main]}" <"$T/p" >"$T/resp" || { echo "no answer"; return; }
    status_of "$T/resp"
}

# RFC 9110 5.6.7: IMF-fixdate, RFC 850 and asctime MUST all be accepted.
# old.txt was modified at Sat, 03 Feb 2001 04:05:06 GMT.
test_if_modified_since_accepts_all_three_date_forms() {
    local d want got
    for d in 'Sat, 03 Feb 2001 04:05:06 GMT=304' 'Fri, 02 Feb 2001 00:00:00 GMT=200' \
        'Saturday, 03-Feb-01 04:05:06 GMT=304' 'Friday, 02-Feb-01 00:00:00 GMT=200' \
        'Sat Feb  3 04:05:06 2001=304' 'Fri Feb  2 00:00:00 2001=200' \
        'Sat Feb 10 00:00:00 2001=304' \
        'Sunday, 06-Nov-94 08:49:37 GMT=200' 'Sunday, 03-Feb-69 00:00:00 GMT=304' \
        'yesterday=200' 'Sat, 03 Feb 2001 04:05:06 GMT junk=200'; do
        want=${d##*=}
        got=$(ims_status "${d%=*}")
        [ "$got" = "$want" ] || { fail "If-Modified-Since: ${d%=*}: $got, want $want"; return 1; }
    done
    # If-None-Match takes precedence (RFC 9110 13.1.3): "*" matches any
    # file, an entity tag never does (none is sent).
    got=$(ims_status 'Fri, 02 Feb 2001 00:00:00 GMT' 'If-None-Match: *\r\n')
    [ "$got" = 304 ] || { fail "If-None-Match: *: $got, want 304"; return 1; }
    got=$(ims_status 'Sat, 03 Feb 2001 04:05:06 GMT' 'If-None-Match: "x"\r\n')
    [ "$got" = 200 ] || fail "If-None-Match: \"x\" with a matching date: $got, want 200"
}

# RFC 9110 13.1.1, 13.1.4 and 13.2.2: If-Match, then If-Unmodified-Since,
# evaluated first; a false one is 412.  A generated listing has no date,
# so only "*" applies to it.
test_if_match_and_if_unmodified_since_give_412() {
    local c want got
    for c in 'If-Match: "x"=412' 'If-Match: *=200' 'If-Match: *\r\nIf-Match: "x"=412' \
        'If-Unmodified-Since: Fri, 02 Feb 2001 00:00:00 GMT=412' \
        'If-Unmodified-Since: Sat Feb  3 04:05:06 2001=200' \
        'If-Match: *\r\nIf-Unmodified-Since: Fri, 02 Feb 2001 00:00:00 GMT=200' \
        'If-Unmodified-Since: never=200' \
        'If-Match: "x"\r\nIf-None-Match: *=412'; do
        want=${c##*=}
        req "$T/p" 'GET /old.txt HTTP/1.1\r\nHost: t\r\n%b\r\nConnection: close\r\n\r\n' "${c%=*}"
        expect_raw "$want" "$T/p" || { echo "  fields: ${c%=*}"; return 1; }
    done
    req "$T/p" 'GET /list/ HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\nConnection: close\r\n\r\n'
    expect_raw 304 "$T/p" || return 1
    req "$T/p" 'GET /list/ HTTP/1.1\r\nHost: t\r\nIf-Unmodified-Since: Fri, 02 Feb 2001 00:00:00 GMT\r\nConnection: close\r\n\r\n'
    expect_raw 200 "$T/p"
}

test_path_traversal_never_leaves_the_root() {
    local p want
    for p in '/../outside/secret.txt:403' '/%2e%2e/outside/secret.txt:403' \
        '/sub/%2E%2E/%2e%2e/outside/secret.txt:403' '/..%2foutside%2fsecret.txt:403' \
        '/sub/..:403' 'http://t/../outside/secret.txt:403' \
        '/leak.txt:403' '/leakdir/secret.txt:403' '/leakdir/:403' \
        '//etc/passwd:404' '/etc/passwd:404' '/%2fetc%2fpasswd:404' \
        '/..%5c..%5coutside%5csecret.txt:404'; do
        want=${p##*:}
        req "$T/p" 'GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' "${p%:*}"
        expect_raw "$want" "$T/p" || { echo "  path: ${p%:*}"; return 1; }
    done
    # curl too, with its own dot-segment clean-up turned off.
    "${CURL[@]}" --path-as-is -o "$T/got" "$(url /../outside/secret.txt)"
    ! grep -q TOPSECRET "$T/got" || fail "curl got the secret"
}

test_server_goes_on_after_hostile_input() {
    kill -0 "${PID[main]}" || { fail "server died"; return 1; }
    "${CURL[@]}" -o "$T/got" "$(url /text.txt)" || return 1
    cmp "$T/got" "$R/text.txt" || fail "text.txt differs"
}

# ------------------------------------------------------------------------
# Timeouts, the log, shutdown, other transports (servers of their own)

test_stalled_client_is_cut_after_the_timeout() {
    start_server slow --timeout 1 "127.0.0.1:0" "$R" || return 1
    # Mid-header: a 408, then the close; mid-request-line or silent: the
    # close alone.  Either within the 1 s timeout, plus scheduling slack.
    python3 - "${ADDR[slow]}" <<'EOF' || { fail "stalled client check failed"; stop_server slow; return 1; }
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
for payload, want in [(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n", b"HTTP/1.1 408 "),
                      (b"GET /hello", b""), (b"", b"")]:
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(payload)
    t0 = time.monotonic()
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    took = time.monotonic() - t0
    s.close()
    assert out.startswith(want) and (want or out == b""), (payload, out)
    assert 0.5 <= took <= 5.0, (payload, took)
EOF
    stop_server slow
}

# After an error the lingering close reads what the client still sends with
# a short timeout of its own (sks_handler_set_timeout), not the handler's:
# a silent client is let go after LINGER_SECONDS (2 s) even with a 30 s
# handler timeout.  Seen from the client: once the server has closed, a
# byte sent draws a reset, and the next send fails; while it still
# lingers, both bytes are read.
test_lingering_close_keeps_its_own_short_timeout() {
    start_server linger --timeout 30 "127.0.0.1:0" "$R" || return 1
    python3 - "${ADDR[linger]}" <<'EOF' || { fail "lingering close check failed"; stop_server linger; return 1; }
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(b"NOT A REQUEST LINE\r\n\r\n")
out = b"".join(iter(lambda: s.recv(4096), b""))  # up to the FIN
assert out.startswith(b"HTTP/1.1 400 "), out
time.sleep(3.5)
s.sendall(b"x")
time.sleep(0.3)
try:
    s.sendall(b"y")
    closed = False
except (BrokenPipeError, ConnectionResetError):
    closed = True
s.close()
assert closed, "the server was still lingering 3.5 s on"
EOF
    stop_server linger
}

test_access_log_has_one_common_log_format_line_per_request() {
    start_server logged "127.0.0.1:0" "$R" || return 1
    local a=${ADDR[logged]}
    "${CURL[@]}" -o /dev/null -o /dev/null "http://$a/hello.txt" "http://$a/nope" || return 1
    "${CURL[@]}" -I -o /dev/null "http://$a/hello.txt" || return 1
    req "$T/p" 'GET /q"uote HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'
    raw "$a" <"$T/p" >/dev/null
    stop_server logged || return 1
    local log=${LOG[logged]} clf='^127\.0\.0\.1 - - \[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}\] "'
    [ "$(wc -l <"$log")" = 4 ] || { fail "$(wc -l <"$log") log lines, want 4: $(cat "$log")"; return 1; }
    grep -Eq "$clf"'GET /hello.txt HTTP/1.1" 200 6$' "$log" &&
        grep -Eq "$clf"'GET /nope HTTP/1.1" 404 [0-9]+$' "$log" &&
        grep -Eq "$clf"'HEAD /hello.txt HTTP/1.1" 200 -$' "$log" &&
        grep -Eq "$clf"'GET /q\\x22uote HTTP/1.1" 404 [0-9]+$' "$log" ||
        fail "log lines wrong: $(cat "$log")"
}

test_sigterm_with_an_idle_keep_alive_client_exits_0_at_once() {
    idle_keep_alive_stop --threading && idle_keep_alive_stop --pool &&
        idle_keep_alive_stop --fiber
}

# idle_keep_alive_stop MODEL: the default 10 s timeout would hold an idle
# keep-alive thread; the graceful stop must end it at once.
idle_keep_alive_stop() {
    start_server idle "$1" "127.0.0.1:0" "$R" || return 1
    rm -f "$T/idle.out"
    python3 - "${ADDR[idle]}" >"$T/idle.out" <<'EOF' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=20)
s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
out = b""
while not out.endswith(b"hello\n"):
    out += s.recv(4096)
print("ready", flush=True)
print("eof" if s.recv(4096) == b"" else "data", flush=True)
EOF
    local client=$! i
    for ((i = 0; i < 200; i++)); do
        grep -q ready "$T/idle.out" && break
        sleep 0.05
    done
    grep -q ready "$T/idle.out" || { fail "client not served"; kill "$client"; stop_server idle; return 1; }
    kill -TERM "${PID[idle]}"
    wait_exit idle 10
    wait "$client"
    [ "$STATUS" = 0 ] || { fail "$1: exit status $STATUS"; return 1; }
    awk "BEGIN { exit !($WAITED < 3) }" || { fail "$1: took ${WAITED}s to stop"; return 1; }
    grep -q eof "$T/idle.out" || fail "$1: the idle connection was not closed"
}

test_sigint_lets_a_response_in_flight_finish() {
    start_server busy "127.0.0.1:0" "$R" || return 1
    # A slow reader: 2.5 s for 10 MiB.
    "${CURL[@]}" --limit-rate 4M -o "$T/slow" "http://${ADDR[busy]}/big.bin" &
    local client=$! i
    # Interrupt once the body is flowing.
    for ((i = 0; i < 500; i++)); do
        [ -s "$T/slow" ] && break
        sleep 0.01
    done
    kill -INT "${PID[busy]}"
    wait_exit busy 20
    wait "$client" || { fail "the download failed"; return 1; }
    [ "$STATUS" = 0 ] || { fail "exit status $STATUS"; return 1; }
    cmp "$T/slow" "$R/big.bin" || fail "the download was cut"
}

test_unix_socket_address_with_curl() {
    start_server unix "unix:$T/http.sock" "$R" || return 1
    "${CURL[@]}" --unix-socket "$T/http.sock" -o "$T/got" http://localhost/text.txt || { stop_server unix; return 1; }
    cmp "$T/got" "$R/text.txt" || { fail "text.txt differs"; stop_server unix; return 1; }
    stop_server unix
}

test_ipv6_loopback_with_curl() {
    if ! python3 -c 'import socket; socket.create_server(("::1", 0), family=socket.AF_INET6)' 2>/dev/null; then
        echo "  no IPv6 loopback here"
        return 77
    fi
    start_server v6 "[::1]:0" "$R" || return 1
    "${CURL[@]}" -o "$T/got" "http://${ADDR[v6]}/bytes.dat" || { stop_server v6; return 1; }
    cmp "$T/got" "$R/bytes.dat" || { fail "bytes.dat differs"; stop_server v6; return 1; }
    stop_server v6
}

# model_serves_keep_alive_and_stops MODEL: two files over one connection,
# then a clean stop.
model_serves_keep_alive_and_stops() {
    start_server model "$1" "127.0.0.1:0" "$R" || return 1
    local a=${ADDR[model]} n
    n=$("${CURL[@]}" -o "$T/p1" -o "$T/p2" -w '%{num_connects} ' \
        "http://$a/big.bin" "http://$a/text.txt") || { stop_server model; return 1; }
    cmp "$T/p1" "$R/big.bin" && cmp "$T/p2" "$R/text.txt" || { fail "$1: a file differs"; stop_server model; return 1; }
    [ "$n" = "1 0 " ] || { fail "$1: new connections '$n', want '1 0 '"; stop_server model; return 1; }
    stop_server model
}

test_pool_model_serves_keep_alive_and_stops() {
    model_serves_keep_alive_and_stops --pool
}

# The fiber model opens its files off the loop (sks_run_blocking).
test_fiber_model_serves_keep_alive_and_stops() {
    model_serves_keep_alive_and_stops --fiber
}

test_bad_command_lines_are_refused() {
    "$SERVER" >/dev/null 2>&1
    [ $? = 2 ] || { fail "no arguments: not exit 2"; return 1; }
    "$SERVER" --bogus 127.0.0.1:0 >/dev/null 2>&1
    [ $? = 2 ] || { fail "unknown option: not exit 2"; return 1; }
    "$SERVER" 127.0.0.1:0 "$T/no-such-dir" >/dev/null 2>&1
    [ $? = 1 ] || fail "missing DIR: not exit 1"
}

# ------------------------------------------------------------------------
# Runner

TESTS=(
    test_get_text_file_is_byte_identical
    test_get_binary_file_of_every_byte_is_byte_identical
    test_get_empty_file_sends_content_length_zero
    test_get_10mib_binary_is_byte_identical
    test_parallel_clients_all_get_whole_files
    test_head_returns_headers_only
    test_content_type_follows_extension
    test_last_modified_and_if_modified_since
    test_directory_serves_its_index_html
    test_directory_without_slash_redirects_301
    test_directory_listing_escapes_names
    test_missing_file_is_404
    test_symlink_inside_root_is_served
    test_keep_alive_serves_several_requests_on_one_connection
    test_connection_close_ends_the_connection
    test_http10_closes_unless_keep_alive_asked
    test_pipelined_requests_are_answered_in_order
    test_python_http_client_fetches_over_one_connection
    test_malformed_request_lines_get_400
    test_malformed_headers_get_400
    test_unknown_method_gets_501_with_allow
    test_unsupported_http_version_gets_505
    test_uri_over_8k_gets_414_and_8000_bytes_do_not
    test_header_section_over_64k_gets_431
    test_over_100_header_lines_get_431_and_100_do_not
    test_two_different_content_lengths_get_400
    test_transfer_coding_not_ending_in_chunked_gets_400
    test_missing_or_repeated_host_gets_400
    test_invalid_host_field_value_gets_400
    test_bare_cr_or_nul_in_a_field_value_gets_400
    test_if_modified_since_accepts_all_three_date_forms
    test_if_match_and_if_unmodified_since_give_412
    test_faulty_framing_is_answered_then_closed
    test_no_request_is_served_after_connection_close
    test_whitespace_before_the_first_header_gets_400
    test_absolute_form_target_is_served
    test_every_response_has_a_date
    test_path_traversal_never_leaves_the_root
    test_server_goes_on_after_hostile_input
    test_stalled_client_is_cut_after_the_timeout
    test_lingering_close_keeps_its_own_short_timeout
    test_access_log_has_one_common_log_format_line_per_request
    test_sigterm_with_an_idle_keep_alive_client_exits_0_at_once
    test_sigint_lets_a_response_in_flight_finish
    test_unix_socket_address_with_curl
    test_ipv6_loopback_with_curl
    test_pool_model_serves_keep_alive_and_stops
    test_fiber_model_serves_keep_alive_and_stops
    test_bad_command_lines_are_refused
)

# What each test needs besides the server: curl, python3 or both.
needs() {
    case $1 in
    test_bad_command_lines_are_refused) echo "" ;;
    test_head_returns_headers_only | test_pipelined_requests_are_answered_in_order | \
        test_python_http_client_fetches_over_one_connection | test_malformed_* | \
        test_unknown_method_* | test_unsupported_http_* | test_uri_over_* | \
        test_header_section_* | test_over_100_* | test_stalled_* | \
        test_lingering_* | \
        test_two_different_* | test_transfer_coding_* | test_missing_or_* | \
        test_invalid_host_* | test_bare_cr_* | test_if_modified_since_* | \
        test_if_match_* | test_faulty_framing_* | test_no_request_is_* | \
        test_whitespace_before_* | test_absolute_form_* | test_every_response_* | \
        test_sigterm_*) echo python3 ;;
    test_http10_* | test_path_traversal_* | test_access_log_* | test_ipv6_*) echo "curl python3" ;;
    *) echo curl ;;
    esac
}

# http_test TEST: runs TEST, or skips it (77) when a program it needs is
# missing; HTTP_TEST_TIMES=1 prints how long it took.
http_test() {
    local prog t0=$EPOCHREALTIME rc
    # Each is also the name of its Debian package.
    for prog in $(needs "$1"); do need "$prog" "$prog" || return; done
    "$1"
    rc=$?
    [ -n "${HTTP_TEST_TIMES:-}" ] && echo "  took $(awk "BEGIN { printf \"%.2f\", $EPOCHREALTIME - $t0 }") s"
    return "$rc"
}

# The main server too must stop cleanly, and have logged every request.
test_main_server_exits_0_on_sigterm() {
    stop_server main
}

echo "[==========] test_http: Running $((${#TESTS[@]} + 1)) test(s)."
if [ ! -x "$SERVER" ]; then
    echo "[  FAILED  ] $SERVER is not built"
    echo "[  FAILED  ] ${#TESTS[@]} test(s)."
    exit 1
fi

make_fixtures
if ! start_server main "127.0.0.1:0" "$R"; then
    echo "[  FAILED  ] ${#TESTS[@]} test(s)."
    exit 1
fi

for t in "${TESTS[@]}"; do
    # HTTP_TEST_FILTER=substring runs only the matching tests.
    case $t in *"${HTTP_TEST_FILTER:-}"*) ;; *) continue ;; esac
    run_test "$t" http_test "$t"
done
run_test test_main_server_exits_0_on_sigterm
summary
