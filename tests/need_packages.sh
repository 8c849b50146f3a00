#!/bin/sh
# need_packages.sh [--strict] GROUP...: makes sure the Debian packages of
# each GROUP in tests/packages (or of every group: "all") are installed.
#
# As root with apt-get: installs what is missing (apt-get update first only
# if the install fails, as on a machine that never ran it).  As another
# user: prints the one `apt-get install` line that would install what is
# missing, and succeeds, so the tests that need it are skipped with that
# reason.  --strict (for CI): fails unless everything ends up installed.
# Without dpkg (not Debian), there is nothing it can check: it says nothing.
strict=0
[ "${1:-}" = --strict ] && { strict=1; shift; }
list=$(dirname "$0")/packages
command -v dpkg-query >/dev/null 2>&1 || exit 0

installed() {
    dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'
}

missing=""
for group in "$@"; do
    for pkg in $(awk -v g="$group" '!/^#/ && NF >= 2 && (g == "all" || $2 == g) { print $1 }' "$list"); do
        case " $missing " in *" $pkg "*) continue ;; esac
        installed "$pkg" || missing="$missing $pkg"
    done
done
[ -n "$missing" ] || exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    # shellcheck disable=SC2086 # one word per package
    if ! { apt-get install -y -q --no-install-recommends $missing ||
           { apt-get update -q && apt-get install -y -q --no-install-recommends $missing; }; } >"$log" 2>&1; then
        tail -n 20 "$log"
        echo "could not install:$missing"
        rm -f "$log"
        [ "$strict" = 0 ]
        exit
    fi
    rm -f "$log"
    exit 0
fi
echo "missing: run  sudo apt-get install$missing"
[ "$strict" = 0 ]
