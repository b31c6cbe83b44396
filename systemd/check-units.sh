#!/usr/bin/env bash
# Check the systemd units (CI runs this; so can you):
#   1. `systemd-analyze verify` prints nothing for either unit (any warning is a failure);
#   2. `systemd-analyze security --offline=true` rates the system unit at 1.5 or lower, both as
#      shipped and with the shared-machine drop-in (shared-machine.conf) applied.
#
# Usage: systemd/check-units.sh [QONIC_PROXY_EXECUTABLE]
#   QONIC_PROXY_EXECUTABLE: an installed `qonic-proxy` (e.g. .venv/bin/qonic-proxy);
#   default: `command -v qonic-proxy`.
#
# Why the executable: `verify` checks that ExecStart= names an existing executable, and the
# paths the units use (/opt/qonic-proxy/bin/qonic-proxy, ~/.local/bin/qonic-proxy) do not exist
# on a build machine. So both units are verified as temporary copies in which ONLY the
# ExecStart= path is replaced by that executable; every other line is checked exactly as
# shipped.
#
# Needs systemd-analyze from systemd >= 250 (for `security --offline`). When it is missing and
# we run as root with CI=true, it is installed with apt-get; otherwise the script says so and
# fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
system_unit="$here/qonic-proxy.service"
user_unit="$here/qonic-proxy-user.service"
shared_dropin="$here/shared-machine.conf"
max_exposure=1.5

fail() { echo "check-units: $*" >&2; exit 1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ "${CI:-}" == "true" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "check-units: systemd-analyze not found; installing systemd (CI)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
    else
        fail "systemd-analyze is not installed; install the 'systemd' package (apt-get install systemd) and run this again"
    fi
fi

version=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
if ! [[ "$version" =~ ^[0-9]+$ ]] || (( version < 250 )); then
    fail "systemd-analyze $version is too old: 'security --offline' needs systemd 250 or newer (Debian 12, Ubuntu 24.04)"
fi

exe=${1:-$(command -v qonic-proxy || true)}
[[ -n "$exe" ]] || fail "no qonic-proxy executable: install the package (pip install .) or pass its path as the first argument"
[[ -f "$exe" && -x "$exe" ]] || fail "$exe is not an executable file"
exe=$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")
# The path goes into a unit file and a sed replacement: keep it to characters safe in both.
[[ "$exe" =~ ^/[A-Za-z0-9._/+@-]+$ ]] || fail "$exe: use a path without spaces or special characters"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/system" "$work/user" "$work/runtime"

# Copy a unit, replacing the ExecStart= program path ($2, a literal prefix) with $exe; fail
# when the shipped ExecStart= line does not start with that path (the copy must differ from
# the original in that one place only).
rewrite() {
    local src=$1 prefix=$2 dst=$3
    [[ $(grep -c "^ExecStart=$prefix" "$src") == 1 ]] \
        || fail "$(basename "$src"): expected exactly one 'ExecStart=$prefix ...' line"
    awk -v prefix="ExecStart=$prefix" -v repl="ExecStart=$exe" '
        index($0, prefix) == 1 { $0 = repl substr($0, length(prefix) + 1) } { print }
    ' "$src" >"$dst"
    [[ $(diff "$src" "$dst" | grep -c '^[<>]') == 2 ]] \
        || fail "$(basename "$src"): rewriting ExecStart= changed more than one line"
}
rewrite "$system_unit" /opt/qonic-proxy/bin/qonic-proxy "$work/system/qonic-proxy.service"
rewrite "$user_unit" '%h/.local/bin/qonic-proxy' "$work/user/qonic-proxy-user.service"
# The system unit with the shared-machine drop-in: a drop-in's assignments come after the
# unit's own, which is what appending it to a copy of the unit gives (its [Service] header
# included). A folder of its own, because the unit's file name must stay qonic-proxy.service.
mkdir "$work/shared"
cat "$work/system/qonic-proxy.service" "$shared_dropin" >"$work/shared/qonic-proxy.service"

status=0
# Environment for systemd-analyze, chosen so nothing from the caller can hide a warning:
# - SYSTEMD_LOG_LEVEL=info: an inherited "err" would suppress exactly the warnings we look for;
# - SYSTEMD_COLORS=0 / SYSTEMD_PAGER=: plain text, no pager, in CI and terminals alike;
# - --man=no: man pages are usually not installed in CI images; whether a man: reference in
#   Documentation= resolves says nothing about the unit (ours have no Documentation=);
# - --user needs a runtime directory for its test-mode manager; CI shells have no
#   $XDG_RUNTIME_DIR, so it gets a private empty one.
analyze() {
    SYSTEMD_LOG_LEVEL=info SYSTEMD_COLORS=0 SYSTEMD_PAGER= XDG_RUNTIME_DIR="$work/runtime" \
        systemd-analyze "$@"
}

# verify LABEL DIR ARGS...: run `systemd-analyze ARGS...` in DIR; pass only on no output at all.
verify() {
    local label=$1 dir=$2 output rc=0
    shift 2
    output=$(cd "$dir" && analyze "$@" 2>&1) || rc=$?
    if [[ -n "$output" || $rc != 0 ]]; then
        echo "FAIL verify $label (exit $rc):"
        printf '%s\n' "$output" | sed 's/^/    /'
        status=1
    else
        echo "ok   verify $label: no output"
    fi
}

# --recursive-errors=no: a non-zero exit for warnings about the unit itself, on top of the
# "prints nothing" rule (which also covers warnings about its dependencies).
verify qonic-proxy.service "$work/system" \
    verify --man=no --recursive-errors=no ./qonic-proxy.service
verify qonic-proxy-user.service "$work/user" \
    --user verify --man=no --recursive-errors=no ./qonic-proxy-user.service

# security LABEL DIR: rate DIR/qonic-proxy.service. The exit status enforces the threshold
# (15 = 1.5; the unit is tenths), and the printed number is parsed and compared as well, so a
# changed output format fails loudly instead of passing silently.
security() {
    local label=$1 dir=$2 report score sec_rc=0
    report=$(cd "$dir" && analyze security --offline=true --threshold=15 --no-pager \
        ./qonic-proxy.service 2>&1) || sec_rc=$?
    score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [[ -z "$score" ]]; then
        echo "FAIL security $label: no exposure level in the output of systemd-analyze security:"
        printf '%s\n' "$report" | sed 's/^/    /'
        status=1
    elif [[ $sec_rc != 0 ]] || ! awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
        printf '%s\n' "$report" | grep '^✗' | sed 's/^/    /' || true
        echo "FAIL security $label: exposure $score, limit $max_exposure (exit $sec_rc)"
        status=1
    else
        echo "ok   security $label: exposure $score (limit $max_exposure)"
    fi
}

verify "qonic-proxy.service + shared-machine.conf" "$work/shared" \
    verify --man=no --recursive-errors=no ./qonic-proxy.service
security qonic-proxy.service "$work/system"
security "qonic-proxy.service + shared-machine.conf" "$work/shared"

exit "$status"
