#!/usr/bin/env bash
# check_fresh.sh - `make check-fresh`: does a brand-new Debian 12 machine
# build, test and run the project as the README says?  A maintainer check,
# not part of `make test`; it needs root, debootstrap and the network to
# Debian's package registry.
#
#   1. A pristine root: `debootstrap --variant=minbase bookworm` from the
#      mirror this machine's apt uses, then only
#      `git ca-certificates build-essential`.  That root is built once and
#      cached as $FRESH_CACHE/bookworm.tar (default /var/tmp/sks-fresh,
#      outside build/ so that `make clean` keeps it; delete it to rebuild);
#      every run unpacks a new copy of it into $FRESH_CACHE/root.
#   2. The /etc/hosts an installed machine has (debootstrap writes none),
#      and a clone of this repository's committed HEAD into
#      /root/libsockserver there (uncommitted changes are not tested).
#   3. Inside a chroot, as a new user would: `make demo`, `make test` (which
#      installs what the tests need), `CI=true bash .ci/run`, then
#      `make install` and the README's "A complete server" copied out
#      verbatim, built with the README's command and run without
#      LD_LIBRARY_PATH, and its `--static` link checked to need no
#      libsockserver.so.
#
# Before anything is installed, another user's make test must print the
# one apt-get line that is missing.
#
# Each step's time, result and skip count are reported at the end; logs go
# to $FRESH_LOGS (default build/fresh).  Exit status 0 only if every step
# passed and make test (alone, and in .ci/run) skipped nothing; .ci/run
# itself fails on any skip that tests/skips_allowed does not allow.
#
# The chroot gets /proc, /sys, /dev, /dev/pts and a fresh /dev/shm, in a
# private mount namespace, unmounted by the exit trap whatever happens; a
# process still running inside the root then (a daemon a package started)
# is killed by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${FRESH_CACHE:-/var/tmp/sks-fresh}
LOGS=$REPO/${FRESH_LOGS:-build/fresh}
ROOT=$CACHE/root
BASE=$CACHE/bookworm.tar
SRC=/root/libsockserver
PATH_IN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

[ "$(id -u)" = 0 ] || { echo "check-fresh: needs root (debootstrap, chroot, mount)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "check-fresh: run  apt-get install debootstrap" >&2; exit 1; }

# Mounts made here must never leak into the host's namespace, even if the
# trap cannot run (SIGKILL): a private mount namespace takes them away with
# this process.
if [ -z "${SKS_FRESH_NS:-}" ]; then
    SKS_FRESH_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi

# The mirror this machine's apt uses, so that the root is what a new
# machine here would get.
mirror() {
    local m
    m=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n 1)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
    echo "${m:-http://deb.debian.org/debian}"
}

MOUNTS=()
mount_root() {
    mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
    mount -t sysfs sysfs "$ROOT/sys" && MOUNTS+=("$ROOT/sys")
    mount --bind /dev "$ROOT/dev" && MOUNTS+=("$ROOT/dev")
    mount --bind /dev/pts "$ROOT/dev/pts" && MOUNTS+=("$ROOT/dev/pts")
    mount -t tmpfs -o mode=1777,nosuid,nodev shm "$ROOT/dev/shm" && MOUNTS+=("$ROOT/dev/shm")
}

# Processes whose root is the chroot: only ours can be there.
kill_inside() {
    local p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        [ "$r" = "$ROOT" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    return 0
}

umount_root() {
    local i
    kill_inside
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}"
    done
    MOUNTS=()
}
trap umount_root EXIT

# Refuses to delete a root that still has anything mounted in it.
wipe_root() {
    if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
        echo "check-fresh: something is still mounted under $ROOT; not deleting it" >&2
        exit 1
    fi
    rm -rf "$ROOT"
}

# in_root COMMAND: runs a shell command in the chroot with a new machine's
# environment (no LANG, no LD_LIBRARY_PATH, nothing of ours but CI when
# asked), from the clone's directory when it exists; with NETNS set, in a
# network namespace of its own that has only loopback.
in_root() {
    local wrap=()
    [ -z "${NETNS:-}" ] || wrap=(unshare --net sh -c 'ip link set lo up && exec "$@"' sh)
    "${wrap[@]}" chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=$PATH_IN TERM=dumb ${CI_ENV:-} \
        /bin/sh -c "cd $SRC 2>/dev/null || cd /; $1"
}

build_base() {
    local m
    m=$(mirror)
    echo "pristine root: debootstrap --variant=minbase bookworm from $m"
    wipe_root
    mkdir -p "$ROOT"
    debootstrap --variant=minbase bookworm "$ROOT" "$m"
    mount_root
    in_root 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q &&
             apt-get install -y -q --no-install-recommends git ca-certificates build-essential &&
             apt-get clean'
    umount_root
    tar -C "$ROOT" -cf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
}

# secs T0 T1: the seconds between two $EPOCHREALTIME readings.
secs() { awk "BEGIN { printf \"%.0f\", $2 - $1 }"; }

RESULTS=()
# step NAME COMMAND: runs COMMAND (a shell command) in the root, logs it to
# $LOGS/NAME.log, and records its time, result and skip count.
step() {
    local name=$1 t0 t1 rc skips
    echo "== $name: $2"
    t0=$EPOCHREALTIME
    set +e
    in_root "$2" >"$LOGS/$name.log" 2>&1
    rc=$?
    set -e
    t1=$EPOCHREALTIME
    skips=$(sed -n 's/^tests: [0-9]* passed, [0-9]* failed, \([0-9]*\) skipped$/\1/p' "$LOGS/$name.log" |
            paste -sd+ - | sed 's/^$/-/')
    tail -n 3 "$LOGS/$name.log" | sed 's/^/   /'
    RESULTS+=("$(printf '%-14s %7s s  %-8s skipped: %s' "$name" "$(secs "$t0" "$t1")" \
        "$([ $rc = 0 ] && echo pass || echo "FAIL($rc)")" "$skips")")
    return $rc
}

mkdir -p "$CACHE" "$LOGS"
T_BASE0=$EPOCHREALTIME
BASE_HOW=cached
[ -f "$BASE" ] || BASE_HOW=built
[ -f "$BASE" ] || build_base >"$LOGS/base.log" 2>&1 || { echo "check-fresh: building the root failed, see $LOGS/base.log" >&2; exit 1; }
T_BASE1=$EPOCHREALTIME
wipe_root
mkdir -p "$ROOT"
tar -C "$ROOT" -xf "$BASE"
# What every installed machine has and a debootstrap root lacks: the
# /etc/hosts that Debian's installer (or a cloud image, or a container
# runtime) writes.  Without it "localhost" does not resolve.
printf '%s\n' '127.0.0.1	localhost' "127.0.1.1	$(cat "$ROOT/etc/hostname")" '' \
    '# The following lines are desirable for IPv6 capable hosts' \
    '::1     localhost ip6-localhost ip6-loopback' 'ff02::1 ip6-allnodes' \
    'ff02::2 ip6-allrouters' >"$ROOT/etc/hosts"
git clone -q --no-local "$REPO" "$ROOT$SRC"
TESTED=$(git -C "$ROOT$SRC" log -1 --format='%h %s')
T_COPY=$EPOCHREALTIME
mount_root
echo "pristine root in $ROOT ($TESTED)"

# The README's own words: its example and its link command.
README_EXAMPLE=$(awk '/^## A complete server/ { on = 1; next }
                      on && /^```c$/ { code = 1; next }
                      code && /^```$/ { exit }
                      code { print }' README.md)
README_LINKS=$(grep -o '`cc app\.c [^`]*`' README.md | tr -d '`')
README_LINK=$(sed -n 1p <<<"$README_LINKS")
README_STATIC=$(sed -n 2p <<<"$README_LINKS")
README_LIB_STATIC=$(sed -n 3p <<<"$README_LINKS")
[ -n "$README_EXAMPLE" ] && [ -n "$README_LIB_STATIC" ] ||
    { echo "check-fresh: README's complete server or its link command not found" >&2; exit 1; }
mkdir -p "$ROOT/tmp/app"
printf '%s\n' "$README_EXAMPLE" >"$ROOT/tmp/app/app.c"

fails=0
step demo 'make demo' || fails=$((fails + 1))
# Another user, before anything is installed: make test must print the one
# apt-get line that is missing (and stop, since cmocka is the one thing it
# cannot do without).  The line names what of tests/packages' test group
# the root lacks, so only its form and cmocka are checked here.
step user "id tester >/dev/null 2>&1 || useradd -m tester; rm -rf /home/tester/src &&
    git clone -q $SRC /home/tester/src && chown -R tester: /home/tester/src &&
    su tester -c 'cd /home/tester/src && make test' >/tmp/user.out 2>&1; cat /tmp/user.out;
    grep -q '^missing: run  sudo apt-get install libcmocka-dev [a-z0-9 .+-]*\$' /tmp/user.out &&
    grep -q '^cmocka is missing' /tmp/user.out" || fails=$((fails + 1))
step test 'make test' || fails=$((fails + 1))
CI_ENV=CI=true step ci 'bash .ci/run' || fails=$((fails + 1))
step install 'make install && ldconfig -p | grep -q libsockserver.so.0' || fails=$((fails + 1))
# The example listens on 127.0.0.1:9000: in a network namespace of its own
# (loopback only) that port is free whatever runs on this machine.
NETNS=1 step example "cd /tmp/app && $README_LINK -o app && ! ldd ./app | grep -q 'not found' &&
    (./app & echo \$! >pid; i=0; while [ \$i -lt 100 ] && ! printf 'hello\n' | socat -t 2 - TCP:127.0.0.1:9000 >reply 2>/dev/null; do sleep 0.05; i=\$((i+1)); done;
     kill \$(cat pid); wait \$(cat pid); grep -qx hello reply) &&
    echo 'example: built, ran without LD_LIBRARY_PATH, echoed'" || fails=$((fails + 1))
# The README's two static links: the whole program (pkg-config --static),
# and libsockserver alone (-l:libsockserver.a); neither may need the .so.
step static "cd /tmp/app && $README_STATIC -o app-static &&
    ! readelf -d app-static | grep -q NEEDED && echo 'pkg-config --static: no NEEDED at all' &&
    $README_LIB_STATIC -o app-lib-static &&
    ! readelf -d app-lib-static | grep -q libsockserver && readelf -d app-lib-static | grep NEEDED &&
    echo '-l:libsockserver.a: no libsockserver.so NEEDED'" || fails=$((fails + 1))
umount_root

echo
echo "check-fresh: $TESTED"
printf '%-14s %7s s  %s\n' "pristine root" "$(secs "$T_BASE0" "$T_BASE1")" "$BASE ($BASE_HOW)"
printf '%-14s %7s s\n' "copy + clone" "$(secs "$T_BASE1" "$T_COPY")"
printf '%s\n' "${RESULTS[@]}"
# The skips of each run: make test's must be 0; .ci/run's runs (make test,
# asan, tsan, valgrind, in that order) have passed only if each skip was
# one that tests/skips_allowed allows.
skips_of() { sed -n 's/^tests: .*, \([0-9]*\) skipped$/\1/p' "$LOGS/$1.log" 2>/dev/null; }
test_skips=$(skips_of test)
echo "skipped: make test ${test_skips:-(no summary)}; .ci/run" \
    $(paste -d' ' <(printf '%s\n' 'test' 'asan' 'tsan' 'valgrind') <(skips_of ci) |
      awk 'NF == 2 { printf "%s%s %s", sep, $1, $2; sep = ", " }') "(tsan and valgrind: allowed, see tests/skips_allowed)"
[ "$fails" = 0 ] && [ "$test_skips" = 0 ] && [ "$(skips_of ci | head -n 1)" = 0 ]
