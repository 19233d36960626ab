#!/usr/bin/env bash
# packaging/tests/test-systemd.sh: tcpd.service under a real systemd. Boots a
# minimal Debian in systemd-nspawn (systemd as PID 1, no network but its own
# loopback), installs the freshly built tcpd package there and runs
# packaging/tests/test-systemd-inside.sh in it, over two boots: install,
# start, identity, TUN, clients, restart, stop, journal and exposure on the
# first; start at boot, the 0666-node fallback and purge on the second. Run
# as root from anywhere; scripts/test runs it after the package test. Ends
# with the line "N passed, N failed".
#
# The Debian root (debootstrap --variant=minbase, the host's release, from
# the host's Debian mirror) is built once and cached in
# $TCPD_TEST_CACHE/nspawn (default /var/cache/tcpd-test/nspawn), keyed by
# the package list and the preparation steps; each run boots a copy of it
# in a unique directory under /var/tmp, which the EXIT trap removes after
# killing the nspawn process (by PID) if it still runs. The container gets
# --private-network: nothing in it reaches any address but its own
# loopback and tcpd's TUN, both inside the container.
#
# Environment:
#   TCPD_DEB=path        test this .deb instead of running packaging/build-deb
#   TCPD_DEB_NO_BUILD=1  build-deb repackages the last release build
#   TCPD_TEST_CACHE=dir  where the Debian root is cached
#   TCPD_DEBIAN_MIRROR=url  mirror for debootstrap (default: from /etc/apt)
#   CI=true              no root, no debootstrap or a container that cannot
#                        boot fail the test instead of skipping it
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
# shellcheck source=checks.sh
. packaging/tests/checks.sh

# A missing prerequisite skips the test, except under CI=true.
cannot() {
    if [[ "${CI:-}" == true ]]; then
        abort "$*"
    fi
    echo "test-systemd.sh: skipped: $*"
    echo "$PASSED passed, $FAILED failed, 1 skipped"
    exit 0
}
elapsed() { echo "$((SECONDS / 60))m$((SECONDS % 60))s"; }

[[ "$(id -u)" == 0 ]] || cannot "needs root (debootstrap, systemd-nspawn)"

need_pkgs=()
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need_pkgs+=(systemd-container)
command -v dpkg-architecture >/dev/null 2>&1 || need_pkgs+=(dpkg-dev)
if ((${#need_pkgs[@]} > 0)); then
    echo "test-systemd.sh: apt-get install ${need_pkgs[*]}"
    { apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${need_pkgs[@]}" >/dev/null; } || cannot "apt-get install ${need_pkgs[*]} failed"
fi
[[ -c /dev/net/tun ]] || cannot "no /dev/net/tun on this machine"

# ------------------------------------------------------------ package --------
package_under_test
echo "test-systemd.sh: testing $DEB"

# --------------------------------------------------------- Debian root -------
SUITE="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[[ -n "$SUITE" ]] || cannot "no VERSION_CODENAME in /etc/os-release (not Debian?)"
ARCH="$(dpkg --print-architecture)"

# The first http(s) URI of a "deb" source for $SUITE, from one-line
# sources.list files and deb822 .sources files alike.
host_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        awk -v suite="$SUITE" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite && $i ~ /^https?:/) { print $i; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        awk -v suite="$SUITE" '
            function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "") { print uri; found = 1 } types = suites = uri = "" }
            /^[ \t]*$/ { flush(); if (found) exit; next }
            /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            /^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, " "); if (u[1] ~ /^https?:/) uri = u[1] }
            END { if (!found) flush() }' "$f"
    done | head -n 1
}
MIRROR="${TCPD_DEBIAN_MIRROR:-$(host_mirror)}"
[[ -n "$MIRROR" ]] || cannot "no Debian mirror for $SUITE in /etc/apt/sources.list*"

# What the container needs: systemd as init and D-Bus (systemctl,
# systemd-analyze security); tcpd's own dependencies (adduser; libc6 and
# libgcc-s1 are in minbase), so apt installs the .deb with no network;
# iproute2 (ip, ss), socat (the kernel peer), gcc, libc6-dev, pkg-config (the
# C client).
INCLUDE=systemd,systemd-sysv,dbus,adduser,iproute2,socat,gcc,libc6-dev,pkg-config
# Preparation of the cached root, part of the cache key. The container
# boots straight into the probe unit: no login prompt on the console, no
# first-boot questions, no host name of the build machine.
prepare_root() {
    local dir="$1"
    ln -sf /dev/null "$dir/etc/systemd/system/console-getty.service"
    ln -sf /dev/null "$dir/etc/systemd/system/systemd-firstboot.service"
    rm -f "$dir/etc/hostname"
    apt-get -o RootDir="$dir" clean 2>/dev/null || rm -f "$dir"/var/cache/apt/archives/*.deb
}
CACHE="${TCPD_TEST_CACHE:-/var/cache/tcpd-test}/nspawn"
KEY="$(printf '%s\n' "$SUITE" "$ARCH" minbase "$INCLUDE" "$(declare -f prepare_root)" |
    sha256sum | cut -c1-12)"
IMAGE="$CACHE/debian-$SUITE-$ARCH-$KEY"

mkdir -p "$CACHE"
exec 8>"$CACHE/lock"
# One builder at a time; other runs wait for its result (bounded).
flock -w 900 8 || abort "lock $CACHE/lock (another run builds the root for too long)"
if [[ -f "$IMAGE/.tcpd-test-root" ]]; then
    echo "test-systemd.sh: reusing the Debian root $IMAGE"
else
    partial="$CACHE/.partial-$KEY"
    rm -rf --one-file-system "$partial"
    echo "test-systemd.sh: debootstrap $SUITE ($INCLUDE) from $MIRROR into $IMAGE, about 2-5 minutes"
    start=$SECONDS
    if ! timeout 900 debootstrap --variant=minbase --include="$INCLUDE" --arch="$ARCH" \
        "$SUITE" "$partial" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" | indent debootstrap
        rm -rf --one-file-system "$partial"
        cannot "debootstrap $SUITE from $MIRROR failed (log: $CACHE/debootstrap.log)"
    fi
    prepare_root "$partial"
    touch "$partial/.tcpd-test-root"
    # Roots of older keys are dead weight (each several hundred MB).
    for old in "$CACHE"/debian-*; do
        [[ -d "$old" && "$old" != "$IMAGE" ]] && rm -rf --one-file-system "$old"
    done
    mv "$partial" "$IMAGE"
    echo "test-systemd.sh: Debian root built in $((SECONDS - start)) s"
fi
flock -u 8

# ------------------------------------------------------------ machine --------
MACHINE="tcpd-test-$$"
MDIR="$(mktemp -d /var/tmp/tcpd-nspawn.XXXXXX)"
NSPAWN_PID=""
HOST_TUN_MODE="$(stat -c %a /dev/net/tun)"
# Ends a running container: SIGTERM asks its systemd to power off, SIGKILL
# ends nspawn (and with it the container's namespaces and mounts).
stop_container() {
    [[ -n "$NSPAWN_PID" ]] || return 0
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        kill -TERM "$NSPAWN_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    wait "$NSPAWN_PID" 2>/dev/null
    NSPAWN_PID=""
}
cleanup() {
    stop_container
    rm -rf --one-file-system "$MDIR"
}
trap cleanup EXIT
trap 'exit 143' INT TERM

start=$SECONDS
cp -a --reflink=auto "$IMAGE" "$MDIR/root" || abort "copy the Debian root to $MDIR"
echo "test-systemd.sh: copied the root to $MDIR/root in $((SECONDS - start)) s"
M="$MDIR/root"
systemd-id128 new >"$M/etc/machine-id"
mkdir -m 0755 "$M/opt/tcpd-test"
cp "$DEB" packaging/tests/test-systemd-inside.sh packaging/tests/checks.sh \
    packaging/tests/hello.c "$M/opt/tcpd-test/"
# The probe: runs the inside script once the system is up, shows its output
# on the console (this script's output), and ends the container either way,
# with the script's exit status (FailureAction=exit passes it to nspawn).
cat >"$M/etc/systemd/system/tcpd-test.service" <<'EOF'
[Unit]
Description=tcpd container test (packaging/tests/test-systemd.sh)
After=multi-user.target
SuccessAction=exit
FailureAction=exit

[Service]
Type=oneshot
ExecStart=/opt/tcpd-test/test-systemd-inside.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
TimeoutStartSec=240
EOF
ln -s /etc/systemd/system/tcpd-test.service "$M/etc/systemd/system/multi-user.target.wants/"

# boot PHASE: boots the container until the probe ends it (at most 300 s);
# sets BOOT_RC to nspawn's exit status (the probe's, or 124 on a timeout).
boot() {
    local phase="$1" start=$SECONDS
    echo "test-systemd.sh: booting $MACHINE ($phase) at $(elapsed)"
    # The container's /dev/net/tun is nspawn's own copy of the host's node
    # (same device, same mode), not the host's: the test may chmod it.
    systemd-nspawn --quiet --directory="$M" --machine="$MACHINE" --boot \
        --private-network --register=no --keep-unit --console=read-only \
        -- systemd.show_status=false \
        > >(tr -d '\r' | tee "$MDIR/console-$phase.txt") 2>&1 &
    NSPAWN_PID=$!
    local deadline=$((SECONDS + 300))
    while kill -0 "$NSPAWN_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        fail "[$phase] the container ends within 300 s"
        stop_container
        BOOT_RC=124
    else
        wait "$NSPAWN_PID"
        BOOT_RC=$?
        NSPAWN_PID=""
    fi
    echo "test-systemd.sh: $phase boot took $((SECONDS - start)) s (nspawn exit status $BOOT_RC)"
}

# collect PHASE: adds the inside checks' counts to ours.
collect() {
    local phase="$1" result="$M/opt/tcpd-test/result-$1.txt" summary
    if [[ ! -s "$result" ]]; then
        # The probe never started: systemd-nspawn could not boot here.
        tail -n 20 "$MDIR/console-$phase.txt" | indent console
        cannot "systemd-nspawn did not boot the container (no output from its probe unit)"
    fi
    summary="$(tail -n 1 "$result")"
    if [[ "$summary" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        PASSED=$((PASSED + BASH_REMATCH[1]))
        FAILED=$((FAILED + BASH_REMATCH[2]))
    else
        fail "[$phase] the checks in the container ran to the end (last line: '$summary')"
    fi
    check "[$phase] the container exited with the probe's status 0" test "$BOOT_RC" = 0
}

boot install
collect install
boot reboot
collect reboot
check "the host's /dev/net/tun kept its mode $HOST_TUN_MODE" \
    test "$(stat -c %a /dev/net/tun)" = "$HOST_TUN_MODE"
check "no tcpd0 in the host's network namespace" bash -c '! ip link show dev tcpd0 >/dev/null 2>&1'
echo "test-systemd.sh: done at $(elapsed)"
finish
