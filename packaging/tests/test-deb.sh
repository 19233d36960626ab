#!/usr/bin/env bash
# packaging/tests/test-deb.sh: build, lint, install, exercise and purge the
# tcpd Debian package on this machine. Run as root from anywhere; .ci/run
# calls it. Ends with the line "N passed, N failed".
#
# What it asserts:
#   - systemd/tcpd.service's exposure score (systemd-analyze security
#     --offline=true) is <= 2.0;
#   - packaging/build-deb produces target/debian/tcpd_<ver>-1_<arch>.deb and
#     lintian reports no error for it;
#   - dpkg -i installs every expected file (listed below) and nothing
#     unexpected under the package's own directories, creates user and group
#     tcpd, makes /etc/tcpd 0750 and tcpd.toml 0640 root:tcpd, creates the
#     TUN node /dev/net/tcpd-tun 0600 tcpd:tcpd;
#   - the installed tcpd --version, tcpctl --help, tcpd-nc --help and
#     pkg-config --libs/--cflags/--modversion tcpd work; a C program builds
#     against the installed header and library via pkg-config and runs;
#   - systemd-analyze verify accepts the installed unit;
#   - the installed tcpd with the installed config, in a fresh network
#     namespace under a stand-in NOTIFY_SOCKET, sends READY=1 only once its
#     API socket listens (mode 0660, group tcpd) and its TUN is up with the
#     configured address; tcpctl and a C program using libtcpd reach it; it
#     exits on SIGTERM and removes its socket. Run twice: as root, and with
#     the identity tcpd.service gives it (user tcpd, ambient CAP_NET_ADMIN
#     only, no_new_privs) under the unit's system call and address family
#     filter (unit-seccomp.py);
#   - dpkg -r keeps /etc/tcpd/tcpd.toml; dpkg --purge removes every file of
#     the package and /etc/tcpd, and keeps the tcpd user and group.
#
# Environment:
#   TCPD_DEB=path      test this .deb instead of building one
#   TCPD_DEB_NO_BUILD=1  build-deb reuses the last release build
#   CI=true            missing root/netns support fails instead of skipping
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# pass, fail, check, finish, abort, package_under_test, indent
. "$ROOT/packaging/tests/checks.sh"

if [[ "$(id -u)" != 0 ]]; then
    if [[ "${CI:-}" == true ]]; then
        abort "test-deb.sh needs root (dpkg -i, network namespaces)"
    fi
    echo "test-deb.sh: skipped: needs root for dpkg -i and network namespaces"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
fi

# ---------------------------------------------------------------- tools ------
need_pkgs=()
command -v lintian >/dev/null 2>&1 || need_pkgs+=(lintian)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
command -v dpkg-architecture >/dev/null 2>&1 || need_pkgs+=(dpkg-dev)
command -v objcopy >/dev/null 2>&1 || need_pkgs+=(binutils)
command -v man >/dev/null 2>&1 || need_pkgs+=(man-db)
command -v setpriv >/dev/null 2>&1 || need_pkgs+=(util-linux)
/usr/bin/python3 -c 'import seccomp' >/dev/null 2>&1 || need_pkgs+=(python3-seccomp)
if ((${#need_pkgs[@]} > 0)); then
    echo "test-deb.sh: apt-get install ${need_pkgs[*]}"
    apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null ||
        abort "apt-get install ${need_pkgs[*]}"
fi

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
MULTIARCH="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
WORK="$(mktemp -d /tmp/tcpd-test-deb.XXXXXX)"
NETNS="tcpd-pkg-$$"
DAEMON_PID=""
LISTENER_PID=""
INSTALLED=0
# Leaves the machine as found: no daemon, namespace, scratch files, or (after
# an early stop) installed package.
cleanup() {
    [[ -n "$DAEMON_PID" ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    [[ -n "$LISTENER_PID" ]] && kill "$LISTENER_PID" 2>/dev/null && wait "$LISTENER_PID" 2>/dev/null
    ip netns del "$NETNS" 2>/dev/null
    ((INSTALLED)) && dpkg --purge tcpd >/dev/null 2>&1
    # The package's TUN node outlives the package until a reboot (see
    # postrm); a test machine is not rebooted between runs.
    [[ -c /dev/net/tcpd-tun ]] && rm -f /dev/net/tcpd-tun
    rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------ unit exposure --------
score_line="$(systemd-analyze security --offline=true --no-pager systemd/tcpd.service 2>&1 |
    grep 'Overall exposure level')"
score="$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$score_line")"
echo "     $score_line"
if [[ -n "$score" ]] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    pass "tcpd.service exposure $score <= 2.0"
else
    fail "tcpd.service exposure '${score:-unparsed}' <= 2.0"
fi
check "tcpd.service does not set PrivateNetwork= or PrivateUsers=" \
    bash -c '! grep -Eq "^(PrivateNetwork|PrivateUsers)=" systemd/tcpd.service'

# ------------------------------------------------------------- build ---------
package_under_test
pass "built $(basename "$DEB")"
ARCH="$(dpkg-architecture -qDEB_HOST_ARCH)"
check "package file is named tcpd_${VERSION}-1_${ARCH}.deb" \
    test "$(basename "$DEB")" = "tcpd_${VERSION}-1_${ARCH}.deb"

# ------------------------------------------------------------ lintian --------
lintian --fail-on error --tag-display-limit 0 "$DEB" >"$WORK/lintian.txt" 2>&1
lintian_rc=$?
sed 's/^/     lintian: /' "$WORK/lintian.txt"
check "lintian reports no error" test "$lintian_rc" = 0

# -------------------------------------------------------------- install ------
# Start from a clean slate: a previous run or a developer's install.
dpkg --purge tcpd >/dev/null 2>&1
INSTALLED=1
if ! dpkg -i "$DEB" >"$WORK/dpkg-i.txt" 2>&1; then
    sed 's/^/     dpkg: /' "$WORK/dpkg-i.txt"
    abort "dpkg -i $(basename "$DEB")"
fi
pass "dpkg -i (no systemd as PID 1: enable only, no start)"

LIB="/usr/lib/$MULTIARCH"
expected_files=(
    /usr/sbin/tcpd
    /usr/bin/tcpctl
    /usr/bin/tcpd-nc
    /usr/bin/tcpd-run
    "$LIB/tcpd/libtcpd-preload.so"
    "$LIB/libtcpd.so.0"
    "$LIB/libtcpd.so"
    "$LIB/pkgconfig/tcpd.pc"
    /usr/include/tcpd.h
    /usr/lib/systemd/system/tcpd.service
    /usr/lib/sysusers.d/tcpd.conf
    /usr/lib/tmpfiles.d/tcpd.conf
    /etc/tcpd/tcpd.toml
    /usr/share/man/man8/tcpd.8.gz
    /usr/share/man/man1/tcpctl.1.gz
    /usr/share/man/man1/tcpd-nc.1.gz
    /usr/share/man/man1/tcpd-run.1.gz
    /usr/share/man/man3/tcpd.3.gz
    /usr/share/bash-completion/completions/tcpctl
    /usr/share/zsh/vendor-completions/_tcpctl
    /usr/share/fish/vendor_completions.d/tcpctl.fish
    /usr/share/doc/tcpd/copyright
    /usr/share/doc/tcpd/changelog.Debian.gz
    /usr/share/doc/tcpd/README.systemd
    /usr/share/lintian/overrides/tcpd
)
dpkg -L tcpd | sort >"$WORK/dpkg-L.txt"
for f in "${expected_files[@]}"; do
    if grep -qxF "$f" "$WORK/dpkg-L.txt" && { [[ -f "$f" ]] || [[ -L "$f" ]]; }; then
        pass "installed $f"
    else
        fail "installed $f"
    fi
done
# Every regular file or link the package owns is one we expect.
unexpected=()
while IFS= read -r f; do
    [[ -d "$f" && ! -L "$f" ]] && continue
    printf '%s\n' "${expected_files[@]}" | grep -qxF "$f" || unexpected+=("$f")
done <"$WORK/dpkg-L.txt"
if ((${#unexpected[@]} == 0)); then
    pass "no unexpected files in the package"
else
    fail "no unexpected files in the package: ${unexpected[*]}"
fi
check "libtcpd.so is a link to libtcpd.so.0" test "$(readlink "$LIB/libtcpd.so")" = libtcpd.so.0
check "libtcpd.so.0 has SONAME libtcpd.so.0" \
    bash -c "objdump -p '$LIB/libtcpd.so.0' | grep -Eq 'SONAME +libtcpd\.so\.0\$'"
check "dynamic loader cache knows libtcpd.so.0" bash -c "ldconfig -p | grep -q 'libtcpd.so.0 '"
check "/etc/tcpd/tcpd.toml is a conffile" \
    bash -c "dpkg-query -W -f='\${Conffiles}' tcpd | grep -q '/etc/tcpd/tcpd.toml'"
check "unit is enabled (deb-systemd-helper)" \
    test -L /etc/systemd/system/multi-user.target.wants/tcpd.service
check "group tcpd exists" bash -c "getent group tcpd >/dev/null"
check "user tcpd exists in group tcpd" \
    bash -c '[[ "$(id -gn tcpd 2>/dev/null)" == tcpd ]]'
check "/etc/tcpd is 750 root:tcpd" test "$(stat -c '%a %U:%G' /etc/tcpd)" = "750 root:tcpd"
check "/etc/tcpd/tcpd.toml is 640 root:tcpd" \
    test "$(stat -c '%a %U:%G' /etc/tcpd/tcpd.toml)" = "640 root:tcpd"
# tmpfiles.d/tcpd.conf: the daemon's own node of the TUN device (10:200).
check "/dev/net/tcpd-tun is the TUN device, 600 tcpd:tcpd" \
    test "$(stat -c '%F %t:%T %a %U:%G' /dev/net/tcpd-tun 2>&1)" = "character special file a:c8 600 tcpd:tcpd"
# postinst's fallback for hosts without systemd: with systemd-sysusers and
# systemd-tmpfiles hidden from PATH, re-running "postinst configure" after
# deleting the account must recreate it with adduser and fix the config's
# mode by hand.
mkdir -p "$WORK/bin"
for f in /usr/local/bin/* /usr/sbin/* /usr/bin/*; do
    case "${f##*/}" in systemd-sysusers | systemd-tmpfiles) continue ;; esac
    ln -sf "$f" "$WORK/bin/${f##*/}"
done
userdel tcpd >/dev/null 2>&1
groupdel tcpd >/dev/null 2>&1
chmod 0644 /etc/tcpd/tcpd.toml
chgrp root /etc/tcpd/tcpd.toml
if PATH="$WORK/bin" /var/lib/dpkg/info/tcpd.postinst configure >"$WORK/postinst.txt" 2>&1; then
    pass "postinst configure without systemd-sysusers/systemd-tmpfiles"
else
    sed 's/^/     postinst: /' "$WORK/postinst.txt"
    fail "postinst configure without systemd-sysusers/systemd-tmpfiles"
fi
check "adduser fallback: user tcpd in group tcpd, no login shell" \
    bash -c '[[ "$(id -gn tcpd 2>/dev/null)" == tcpd && "$(getent passwd tcpd | cut -d: -f7)" == /usr/sbin/nologin ]]'
check "fallback: /etc/tcpd/tcpd.toml is 640 root:tcpd again" \
    test "$(stat -c '%a %U:%G' /etc/tcpd/tcpd.toml)" = "640 root:tcpd"

# Reinstall over itself (the upgrade path of the maintainer scripts): an
# admin's edit of the conffile survives, its mode is applied again.
echo "# local edit by test-deb.sh" >>/etc/tcpd/tcpd.toml
if dpkg -i "$DEB" >"$WORK/dpkg-re.txt" 2>&1; then
    pass "dpkg -i over the installed package (upgrade path)"
else
    sed 's/^/     dpkg: /' "$WORK/dpkg-re.txt"
    fail "dpkg -i over the installed package (upgrade path)"
fi
check "upgrade keeps the admin's edit of tcpd.toml" \
    grep -qx "# local edit by test-deb.sh" /etc/tcpd/tcpd.toml
check "upgrade: /etc/tcpd/tcpd.toml still 640 root:tcpd" \
    test "$(stat -c '%a %U:%G' /etc/tcpd/tcpd.toml)" = "640 root:tcpd"
check "upgrade: unit still enabled" \
    test -L /etc/systemd/system/multi-user.target.wants/tcpd.service
# An admin's "systemctl disable tcpd" (which removes the enable link and
# leaves deb-systemd-helper's state alone) survives an upgrade too.
rm /etc/systemd/system/multi-user.target.wants/tcpd.service
dpkg -i "$DEB" >"$WORK/dpkg-re2.txt" 2>&1
check "upgrade keeps a disabled unit disabled" \
    test ! -e /etc/systemd/system/multi-user.target.wants/tcpd.service
ln -s /usr/lib/systemd/system/tcpd.service /etc/systemd/system/multi-user.target.wants/tcpd.service

check "systemd-analyze verify accepts the installed unit" \
    bash -c "systemd-analyze verify /usr/lib/systemd/system/tcpd.service >'$WORK/verify.txt' 2>&1"
sed 's/^/     verify: /' "$WORK/verify.txt"
check "installed tcpd.service scores the same" \
    bash -c "systemd-analyze security --offline=true --no-pager /usr/lib/systemd/system/tcpd.service 2>&1 | grep -q 'exposure level for tcpd.service: $score'"

# ------------------------------------------------------ installed tools -------
out="$(/usr/sbin/tcpd --version 2>&1)"
check "tcpd --version prints $VERSION ($out)" grep -q "$VERSION" <<<"$out"
check "tcpctl --help" bash -c '/usr/bin/tcpctl --help >/dev/null'
check "tcpd-nc --help" bash -c '/usr/bin/tcpd-nc --help >/dev/null'
check "tcpd-run --help" bash -c '/usr/bin/tcpd-run --help >/dev/null'
out="$(/usr/bin/tcpd-run --socket / -- /sbin/ldconfig 2>&1)"
check "tcpd-run refuses a statically linked program (/sbin/ldconfig)" grep -q "statically linked" <<<"$out"
check "bash completion mentions tcpctl" grep -q tcpctl /usr/share/bash-completion/completions/tcpctl
# Documentation drift: every long option of the installed tcpd is described
# in tcpd(8) and, except --config, is a key of the example tcpd.toml; every
# option of tcpd-nc is in tcpd-nc(1), every tcpctl command in tcpctl(1).
zcat /usr/share/man/man8/tcpd.8.gz | sed 's/\\-/-/g' >"$WORK/tcpd.8.txt"
for flag in $(/usr/sbin/tcpd --help | grep -oE '^ +(-[a-zA-Z], )?--[a-z][a-z-]*' | grep -oE -- '--[a-z-]+'); do
    case "$flag" in --help | --version) continue ;; esac
    check "tcpd(8) documents $flag" grep -qF -- "$flag" "$WORK/tcpd.8.txt"
    [[ "$flag" == --config ]] && continue
    check "tcpd.toml documents key ${flag#--}" grep -qE "^#? ?${flag#--} = " /etc/tcpd/tcpd.toml
done
zcat /usr/share/man/man1/tcpd-nc.1.gz | sed 's/\\-/-/g' >"$WORK/tcpd-nc.1.txt"
for flag in $(/usr/bin/tcpd-nc --help | grep -oE '^ +(-[a-zA-Z], )?--[a-z][a-z-]*' | grep -oE -- '--[a-z-]+'); do
    check "tcpd-nc(1) documents $flag" grep -qF -- "$flag" "$WORK/tcpd-nc.1.txt"
done
zcat /usr/share/man/man1/tcpd-run.1.gz | sed 's/\\-/-/g' >"$WORK/tcpd-run.1.txt"
for flag in $(/usr/bin/tcpd-run --help | grep -oE '^ +(-[a-zA-Z], )?--[a-z][a-z-]*' | grep -oE -- '--[a-z-]+'); do
    check "tcpd-run(1) documents $flag" grep -qF -- "$flag" "$WORK/tcpd-run.1.txt"
done
zcat /usr/share/man/man1/tcpctl.1.gz >"$WORK/tcpctl.1.txt"
for command in $(/usr/bin/tcpctl --help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && $1 != "help" { print $1 }'); do
    check "tcpctl(1) documents '$command'" grep -qE "^\.B(R|I)? $command( |\$)" "$WORK/tcpctl.1.txt"
done
check "man tcpd(8) renders" bash -c 'man -l /usr/share/man/man8/tcpd.8.gz >/dev/null 2>&1'
check "man tcpctl(1) renders" bash -c 'man -l /usr/share/man/man1/tcpctl.1.gz >/dev/null 2>&1'

libs="$(pkg-config --libs tcpd 2>&1 | xargs)"
check "pkg-config --libs tcpd = -ltcpd ($libs)" test "$libs" = "-ltcpd"
modversion="$(pkg-config --modversion tcpd 2>&1)"
check "pkg-config --modversion tcpd = $VERSION ($modversion)" test "$modversion" = "$VERSION"
check "pkg-config --cflags tcpd" bash -c "pkg-config --cflags tcpd >/dev/null"
check "tcpd.pc points at the multiarch libdir" \
    test "$(pkg-config --variable=libdir tcpd)" = "$LIB"

# A C program built only from installed files (packaging/tests/hello.c):
# header via pkg-config, linked against libtcpd.so, loaded at run time from
# the multiarch directory.
HELLO=""
if cc -o "$WORK/hello" packaging/tests/hello.c $(pkg-config --cflags --libs tcpd) -ldl 2>"$WORK/cc.txt"; then
    pass "C program compiles and links with pkg-config tcpd"
    HELLO="$WORK/hello"
    loaded="$("$HELLO" 2>&1)"
    check "C program runs, tcpd_socket from $LIB/libtcpd.so.0 ($loaded)" \
        test "$(readlink -f "$loaded")" = "$(readlink -f "$LIB/libtcpd.so.0")"
else
    sed 's/^/     cc: /' "$WORK/cc.txt"
    fail "C program compiles and links with pkg-config tcpd"
fi

# ------------------------------------------- Type=notify readiness ------------
# The installed daemon with the installed config, as tcpd.service runs it,
# in a throw-away network namespace (never the machine's own), with the API
# socket in a scratch directory and NOTIFY_SOCKET pointing at a datagram
# listener that records what arrives. A filesystem socket path, because
# abstract unix sockets are per network namespace.
cat >"$WORK/notify.py" <<'EOF'
# Stand-in for systemd's notify socket: prints each datagram's lines, exits 0
# on READY=1, 1 on timeout. On READY=1 it also records whether the API socket
# (argv[3]) already existed.
import os, socket, sys
path, timeout, api = sys.argv[1], float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
s.settimeout(timeout)
print("listening", flush=True)
try:
    while True:
        lines = s.recv(4096).decode(errors="replace").splitlines()
        for line in lines:
            print("got", line, flush=True)
        if "READY=1" in lines:
            print("api-socket-at-ready", os.path.exists(api), flush=True)
            sys.exit(0)
except socket.timeout:
    print("timeout", flush=True)
    sys.exit(1)
EOF
chmod 0755 "$WORK"

# readiness_run LABEL SOCKET_OWNER COMMAND...: runs COMMAND in the fresh
# namespace $NETNS; COMMAND must exec /usr/sbin/tcpd with the installed
# config, --socket $WORK/LABEL/run/tcpd.sock and NOTIFY_SOCKET set to
# $WORK/LABEL/notify.sock. Waits for READY=1, checks the socket (owner
# SOCKET_OWNER), the TUN and two clients, then stops the daemon (SIGTERM).
readiness_run() {
    local label="$1" owner="$2"
    shift 2
    local dir="$WORK/$label"
    mkdir -p "$dir/run"
    chmod 0755 "$dir"
    # The socket's directory belongs to the daemon's user, as /run/tcpd does
    # under systemd (RuntimeDirectory=); tcpd removes the socket at exit.
    chown "${owner%%:*}:${owner#*:}" "$dir/run"
    local API_SOCK="$dir/run/tcpd.sock" NOTIFY_SOCKET="$dir/notify.sock"
    if ! ip netns add "$NETNS" 2>"$dir/netns.txt"; then
        sed 's/^/     /' "$dir/netns.txt"
        if [[ "${CI:-}" == true ]]; then
            fail "[$label] ip netns add (needed for the readiness test)"
        else
            echo "skip - [$label] readiness test: cannot create a network namespace"
        fi
        return
    fi
    ip -n "$NETNS" link set lo up
    python3 "$WORK/notify.py" "$NOTIFY_SOCKET" 20 "$API_SOCK" >"$dir/notify.txt" 2>&1 &
    LISTENER_PID=$!
    for _ in $(seq 50); do grep -qs listening "$dir/notify.txt" && break; sleep 0.1; done
    ip netns exec "$NETNS" "$@" >"$dir/tcpd.log" 2>&1 &
    DAEMON_PID=$!
    # Until READY=1 arrives (the listener exits 0), the daemon dies, or 20 s.
    for _ in $(seq 200); do
        kill -0 "$LISTENER_PID" 2>/dev/null || break
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$LISTENER_PID" 2>/dev/null
    wait "$LISTENER_PID"
    local listener_rc=$?
    LISTENER_PID=""
    sed 's/^/     notify: /' "$dir/notify.txt"
    if [[ "$listener_rc" == 0 ]]; then
        pass "[$label] READY=1 arrives on NOTIFY_SOCKET"
        check "[$label] API socket existed when READY=1 arrived" \
            grep -qx "api-socket-at-ready True" "$dir/notify.txt"
        check "[$label] API socket is a socket, mode 660, $owner" \
            bash -c "[[ -S '$API_SOCK' && \"\$(stat -c '%a %U:%G' '$API_SOCK')\" == '660 $owner' ]]"
        check "[$label] TUN tcpd0 is up in the namespace" \
            bash -c "ip -n '$NETNS' -o link show dev tcpd0 | grep -q '[<,]UP[,>]'"
        check "[$label] TUN tcpd0 has host address 10.77.0.1/24" \
            bash -c "ip -n '$NETNS' -o -4 addr show dev tcpd0 | grep -q 'inet 10.77.0.1/24'"
        if TCPD_SOCKET="$API_SOCK" timeout 10 /usr/bin/tcpctl status >"$dir/status.txt" 2>&1; then
            pass "[$label] tcpctl status reaches the daemon"
        else
            fail "[$label] tcpctl status reaches the daemon"
        fi
        sed 's/^/     tcpctl: /' "$dir/status.txt"
        if [[ -n "$HELLO" ]]; then
            out="$(TCPD_SOCKET="$API_SOCK" timeout 10 "$HELLO" listen 7000 2>&1)"
            check "[$label] C program listens through libtcpd ($out)" \
                test "$out" = "listening on 0.0.0.0:7000"
        fi
        # An unmodified program through the installed tcpd-run, preload
        # library and libtcpd.so.0: python3's listener shows in tcpctl ls.
        out="$(timeout 10 /usr/bin/tcpd-run --socket "$API_SOCK" -- python3 -c '
import socket, subprocess
s = socket.socket()
s.bind(("0.0.0.0", 7001))
s.listen()
print(subprocess.run(["/usr/bin/tcpctl", "ls"], capture_output=True, text=True).stdout)
' 2>&1)"
        check "[$label] tcpd-run python3 listens on tcpd" \
            grep -qE "LISTEN .*0\.0\.0\.0:7001 .*python3" <<<"$out"
    else
        fail "[$label] READY=1 arrives on NOTIFY_SOCKET"
    fi
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$DAEMON_PID" 2>/dev/null; then
            fail "[$label] tcpd exits within 5 s of SIGTERM"
            kill -KILL "$DAEMON_PID"
        else
            pass "[$label] tcpd exits within 5 s of SIGTERM"
        fi
        wait "$DAEMON_PID" 2>/dev/null
        check "[$label] tcpd removes its socket at exit" test ! -e "$API_SOCK"
    else
        fail "[$label] tcpd still running after READY=1"
    fi
    DAEMON_PID=""
    sed 's/^/     tcpd: /' "$dir/tcpd.log" | tail -n 20
    ip netns del "$NETNS"
}

# 1. As root, the daemon's own privilege drop and all.
readiness_run root root:tcpd \
    env NOTIFY_SOCKET="$WORK/root/notify.sock" \
    /usr/sbin/tcpd --config /etc/tcpd/tcpd.toml --socket "$WORK/root/run/tcpd.sock"

# 2. Inside the part of tcpd.service's sandbox that can be rebuilt without
#    systemd as PID 1: user and group tcpd, only CAP_NET_ADMIN (ambient,
#    bounding), no_new_privs, the config read through group tcpd, and the
#    unit's own SystemCallFilter=/RestrictAddressFamilies= as a seccomp
#    filter (unit-seccomp.py, from the installed unit file).
#    As tcpd.service does (BindPaths=), a private mount namespace gets the
#    package's own node /dev/net/tcpd-tun (0600 user tcpd) bound over
#    /dev/net/tun, which is 0600 root on some hosts; the machine's
#    /dev/net/tun stays untouched.
cp packaging/tests/unit-seccomp.py "$WORK/unit-seccomp.py"
chmod 0755 "$WORK/unit-seccomp.py"
readiness_run unit tcpd:tcpd \
    unshare --mount --propagation private sh -c '
        mount --bind /dev/net/tcpd-tun /dev/net/tun &&
        exec setpriv --reuid tcpd --regid tcpd --init-groups --no-new-privs \
            --inh-caps -all,+net_admin --ambient-caps -all,+net_admin \
            --bounding-set -all,+net_admin \
            /usr/bin/python3 "$1/unit-seccomp.py" /usr/lib/systemd/system/tcpd.service -- \
            env NOTIFY_SOCKET="$0/notify.sock" \
            /usr/sbin/tcpd --config /etc/tcpd/tcpd.toml --socket "$0/run/tcpd.sock"' \
    "$WORK/unit" "$WORK"

# ------------------------------------------------------- remove, purge --------
if dpkg -r tcpd >"$WORK/dpkg-r.txt" 2>&1; then
    pass "dpkg -r tcpd"
else
    sed 's/^/     dpkg: /' "$WORK/dpkg-r.txt"
    fail "dpkg -r tcpd"
fi
check "remove keeps /etc/tcpd/tcpd.toml" test -f /etc/tcpd/tcpd.toml
check "remove deletes /usr/sbin/tcpd" test ! -e /usr/sbin/tcpd
# No maintainer script removes device files (Debian policy 10.6): the node
# stays until the next boot; the machine is left as found by cleanup below.
check "remove leaves /dev/net/tcpd-tun to the next boot (policy 10.6)" test -c /dev/net/tcpd-tun
check "remove deletes tcpd's tmpfiles entry (nothing recreates the node)" \
    test ! -e /usr/lib/tmpfiles.d/tcpd.conf
# A file the admin left next to the config must not keep /etc/tcpd alive.
touch /etc/tcpd/tcpd.toml.dpkg-old
if dpkg --purge tcpd >"$WORK/dpkg-P.txt" 2>&1; then
    pass "dpkg --purge tcpd"
else
    sed 's/^/     dpkg: /' "$WORK/dpkg-P.txt"
    fail "dpkg --purge tcpd"
fi
check "package is gone from dpkg's database" bash -c '! dpkg -s tcpd >/dev/null 2>&1'
INSTALLED=0
left=()
while IFS= read -r f; do
    [[ -d "$f" && ! -L "$f" ]] && continue
    if [[ -e "$f" || -L "$f" ]]; then left+=("$f"); fi
done <"$WORK/dpkg-L.txt"
if ((${#left[@]} == 0)); then
    pass "purge leaves none of the package's $(wc -l <"$WORK/dpkg-L.txt") paths behind"
else
    fail "purge leaves files behind: ${left[*]}"
fi
check "purge removes /etc/tcpd" test ! -e /etc/tcpd
check "purge removes the enable link" test ! -e /etc/systemd/system/multi-user.target.wants/tcpd.service
check "purge removes deb-systemd-helper's state for tcpd.service" \
    bash -c '! find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name "*tcpd*" 2>/dev/null | grep -q .'
check "purge keeps user tcpd (system accounts stay)" bash -c "getent passwd tcpd >/dev/null"

finish
