#!/bin/bash
# packaging/tests/test-systemd-inside.sh: the half of test-systemd.sh that runs
# inside the booted Debian container, as root, from the probe unit
# tcpd-test.service (after multi-user.target), with systemd as PID 1 and no
# network but loopback. test-systemd.sh copies it to /opt/tcpd-test/ (where
# the test users can reach hello) with checks.sh, hello.c and the package, and boots the container twice:
#
#   boot 1 ("install"): apt install ./tcpd_*.deb; tcpd.service runs as the
#     unit says (notify readiness, user, capabilities, TUN, socket modes);
#     an unprivileged member of group tcpd uses tcpctl, tcpd-nc and a C
#     program built with pkg-config against a kernel peer on the kernel side
#     of the TUN; IPv6 both ways with tcpd-nc -6 (no link-local address on the
#     TUN, nothing dropped as not for tcpd); restart applies a changed config; stop resets connections,
#     removes the socket, exits 0; the journal has the daemon's log; the
#     online exposure score is <= 2.0. The package stays installed and
#     enabled.
#   boot 2 ("reboot"): tcpd.service came up at boot, before network.target,
#     with the user, config modes and device node that sysusers/tmpfiles
#     provide at boot; works with a stock 0666 /dev/net/tun too; apt purge
#     (while it runs) stops it and leaves the file system as boot 1 found it
#     before the install, except for the tcpd user and group.
#
# Output goes to the console (test-systemd.sh shows it) and to
# /opt/tcpd-test/result-PHASE.txt; the last line is "N passed, N failed".
# Every command that waits is bounded by `timeout`.
set -uo pipefail

HERE=/opt/tcpd-test
cd "$HERE" || exit 1
# shellcheck source=checks.sh
. ./checks.sh
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Which boot this is: the first run finds no record of an earlier one.
if [[ -e "$HERE/result-install.txt" ]]; then PHASE=reboot; else PHASE=install; fi
exec > >(tee "$HERE/result-$PHASE.txt") 2>&1
TEE_PID=$!
# The result file must be complete before the probe ends the container.
trap 'exec >&- 2>&-; wait "$TEE_PID"' EXIT
echo "# tcpd container test, boot '$PHASE' ($(date -u +%T))"

# tcpd's defaults from /etc/tcpd/tcpd.toml (tcpd.toml in the tree).
TUN=tcpd0
TCPD_ADDR=10.77.0.2
HOST_ADDR=10.77.0.1
TCPD_ADDR6=fd00:77::2
HOST_ADDR6=fd00:77::1
SOCK=/run/tcpd/tcpd.sock
# Its own device node, 0600 user tcpd (tcpd.tmpfiles; see tcpd.service).
TUN_NODE=/dev/net/tcpd-tun
CAP_NET_ADMIN_MASK=0000000000001000 # bit 12 (linux/capability.h)
TAB=$'\t'

as_alice() { runuser -u alice -- "$@"; }
prop() { systemctl show -P "$1" tcpd.service; }
# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
    local tries=$(($1 * 10))
    shift
    while ((tries-- > 0)); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}
kernel_listens() { [[ -n "$(ss -Hltn "sport = :$1")" ]]; }
kernel_established() { [[ -n "$(ss -Htn state established "( sport = :$1 )")" ]]; }
tun_exists() { ip link show dev "$TUN" >/dev/null 2>&1; }
show_unit() {
    systemctl show -p ActiveState,SubState,Result,ExecMainStatus,ExecMainCode,StatusText,MainPID tcpd.service |
        indent systemctl
}
# The file system as dpkg and the admin see it (paths, types, modes, owners,
# and the content of every file in /etc), minus what changes by itself.
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
        -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/apt \
        -o -path /var/lib/dpkg -o -path "$HERE" \) -prune -o -printf '%p %y %m %u %g\n' | sort
    # The account files change by the tcpd entries (kept on purge, Debian
    # policy), checked separately; ld.so.cache by libtcpd.so.0 coming and going.
    find /etc -xdev -type f ! -name 'passwd*' ! -name 'group*' ! -name 'shadow*' \
        ! -name 'gshadow*' ! -name ld.so.cache -exec md5sum {} + | sort -k2
}

# The probe runs once multi-user.target is reached. (The system stays
# "starting" until the probe's own start job ends, so `systemctl
# is-system-running --wait` would wait for the probe itself.)
check_boot() {
    local failed
    failed="$(systemctl list-units --failed --plain --no-legend --no-pager)"
    check "[$1] multi-user.target reached, no unit failed" \
        test "$(systemctl is-active multi-user.target)" = active -a -z "$failed"
    [[ -n "$failed" ]] && indent failed <<<"$failed"
}

# The unit's own parse warnings ("tcpd.service:42: Unknown key ...") and
# sandboxing failures end up in the journal; any of them is a defect.
unit_warnings() {
    journalctl -b --no-pager -o cat | grep -E 'tcpd\.service(:[0-9]+)?: ' |
        grep -vE 'Deactivated successfully|Consumed .* CPU time|Main process exited, code=exited, status=0'
}

# Unit state, process identity and capabilities, TUN, socket: what every
# start of tcpd.service must produce. $1 names the occasion.
check_running() {
    local when="$1" pid
    show_unit
    check "[$when] tcpd.service is active (running), ready" \
        test "$(prop ActiveState)/$(prop SubState)" = active/running
    # STATUS= sent with READY=1, shown by `systemctl status tcpd`.
    check "[$when] status text names the TUN, address and socket" \
        bash -c "systemctl show -P StatusText tcpd.service | grep -q '^$TUN $TCPD_ADDR/24, .*$SOCK'"
    pid="$(prop MainPID)"
    if [[ "$pid" -gt 0 && -r "/proc/$pid/status" ]]; then
        grep -E '^(Name|Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs|Seccomp):' "/proc/$pid/status" | indent "status"
        local uid gid
        uid="$(id -u tcpd)" gid="$(id -g tcpd)"
        check "[$when] daemon runs as user tcpd (real, effective, saved, fs)" \
            grep -qP "^Uid:\t$uid\t$uid\t$uid\t$uid\$" "/proc/$pid/status"
        check "[$when] daemon runs as group tcpd" \
            grep -qP "^Gid:\t$gid\t$gid\t$gid\t$gid\$" "/proc/$pid/status"
        check "[$when] bounding set is CAP_NET_ADMIN only" \
            grep -qx "CapBnd:${TAB}$CAP_NET_ADMIN_MASK" "/proc/$pid/status"
        # The daemon clears even CAP_NET_ADMIN once its TUN is configured.
        local set
        for set in CapEff CapPrm CapInh CapAmb; do
            check "[$when] $set holds nothing beyond CAP_NET_ADMIN" \
                grep -qxE "$set:${TAB}(0000000000000000|$CAP_NET_ADMIN_MASK)" "/proc/$pid/status"
        done
        check "[$when] no_new_privs set" grep -qx "NoNewPrivs:${TAB}1" "/proc/$pid/status"
        check "[$when] seccomp filter active" grep -qx "Seccomp:${TAB}2" "/proc/$pid/status"
    else
        fail "[$when] tcpd.service has a main process (MainPID '$pid')"
    fi
    check "[$when] TUN $TUN is up" bash -c "ip -o link show dev $TUN | grep -q '[<,]UP[,>]'"
    check "[$when] TUN $TUN has the host address $HOST_ADDR/24" \
        bash -c "ip -o -4 addr show dev $TUN | grep -q 'inet $HOST_ADDR/24 '"
    check "[$when] the kernel routes $TCPD_ADDR into $TUN" \
        bash -c "ip route get $TCPD_ADDR | grep -q 'dev $TUN'"
    check "[$when] /run/tcpd is 750 tcpd:tcpd" test "$(stat -c '%a %U:%G' /run/tcpd)" = "750 tcpd:tcpd"
    check "[$when] $SOCK is a socket, 660 tcpd:tcpd" \
        bash -c "[[ -S $SOCK && \"\$(stat -c '%a %U:%G' $SOCK)\" == '660 tcpd:tcpd' ]]"
    check "[$when] member of group tcpd: tcpctl status" \
        bash -c "timeout 10 runuser -u alice -- tcpctl status >'$HERE/status.txt' 2>&1 &&
                 grep -q '$TUN' '$HERE/status.txt' && grep -q '$TCPD_ADDR' '$HERE/status.txt'"
    indent tcpctl "$HERE/status.txt"
}

# ================================================================ boot 1 =====
install_phase() {
    check_boot "boot"

    check "/dev/net/tun is the TUN device (char 10:200)" \
        test "$(stat -c '%F %t:%T' /dev/net/tun)" = "character special file a:c8"
    echo "     /dev/net/tun mode $(stat -c %a /dev/net/tun) (the host's; set to 600 for boot 1)"
    # DevicePolicy=closed needs a device cgroup the container's systemd can
    # use (cgroup v2 BPF, or a delegated v1 devices controller). Where it
    # has one, tcpd's start below also proves that DeviceAllow=/dev/net/tun
    # covers the node bound over it; where not, say so.
    local opened
    opened="$(timeout 30 systemd-run --wait --pipe --quiet -p DevicePolicy=closed \
        sh -c 'if exec 3<>/dev/net/tun; then echo opened; else echo denied; fi' 2>/dev/null)"
    case "$opened" in
        opened) echo "     note: this container does not enforce DevicePolicy= (no usable device cgroup): tcpd.service's DeviceAllow= is not exercised here" ;;
        denied) pass "DevicePolicy=closed is enforced here (denies /dev/net/tun), so tcpd.service's DeviceAllow= is exercised" ;;
        *) fail "systemd-run -p DevicePolicy=closed runs a probe ('$opened')" ;;
    esac

    # The strict case first: a 0600 root node, as on hosts without Debian's
    # udev rule. (nspawn's copy of the host's node: the host's stays as is.)
    chmod 0600 /dev/net/tun

    # Accounts: alice will join group tcpd, bob stays outside.
    useradd --no-create-home --shell /bin/sh alice
    useradd --no-create-home --shell /bin/sh bob
    snapshot >"$HERE/before.txt"
    cut -d: -f1 /etc/passwd >"$HERE/users-before.txt"
    cut -d: -f1 /etc/group >"$HERE/groups-before.txt"

    # ---------------------------------------------------------- install ------
    local deb
    deb="$(echo ./tcpd_*.deb)"
    if timeout 300 apt-get install -y --no-install-recommends "$deb" >"$HERE/apt-install.txt" 2>&1; then
        pass "apt install $deb (no network: dependencies from the root)"
    else
        indent apt "$HERE/apt-install.txt"
        abort "apt install $deb"
    fi
    grep -iE 'warn|error|fail' "$HERE/apt-install.txt" | indent apt
    check "tcpd.service is enabled" test "$(systemctl is-enabled tcpd.service)" = enabled
    check "apt install started tcpd.service" test "$(systemctl is-active tcpd.service)" = active
    check "user tcpd (group tcpd) exists" test "$(id -gn tcpd 2>/dev/null)" = tcpd
    check "/etc/tcpd is 750 root:tcpd" test "$(stat -c '%a %U:%G' /etc/tcpd)" = "750 root:tcpd"
    check "/etc/tcpd/tcpd.toml is 640 root:tcpd" \
        test "$(stat -c '%a %U:%G' /etc/tcpd/tcpd.toml)" = "640 root:tcpd"
    check "$TUN_NODE is 600 tcpd:tcpd, the TUN device" \
        test "$(stat -c '%a %U:%G %t:%T' "$TUN_NODE")" = "600 tcpd:tcpd a:c8"
    adduser --quiet alice tcpd

    # ------------------------------------------------- start, readiness ------
    timeout 60 systemctl stop tcpd.service
    local t0 t1
    t0=$(date +%s%N)
    check "systemctl start tcpd" timeout 60 systemctl start tcpd.service
    t1=$(date +%s%N)
    echo "     systemctl start took $(((t1 - t0) / 1000000)) ms"
    # Type=notify: `systemctl start` returns once READY=1 arrived, and tcpd
    # sends it only when the socket listens and the TUN is up, so everything
    # below must hold at once, without waiting.
    check_running start
    local warnings
    warnings="$(unit_warnings)"
    check "no warnings about tcpd.service in the journal" test -z "$warnings"
    [[ -n "$warnings" ]] && indent journal <<<"$warnings"
    # What the daemon itself said while starting under the unit's sandbox:
    # a refused system call or file access shows up here first.
    journalctl --no-pager -o cat _SYSTEMD_UNIT=tcpd.service _PID="$(prop MainPID)" >"$HERE/start-log.txt"
    indent tcpd "$HERE/start-log.txt"
    check "the daemon logged no warning or error while starting" \
        bash -c "! grep -qE ' (WARN|ERROR) ' '$HERE/start-log.txt'"

    local out
    out="$(timeout 10 runuser -u bob -- tcpctl status 2>&1)"
    check "a user outside group tcpd cannot use the socket (exit $?)" \
        grep -qi 'permission denied' <<<"$out"
    indent tcpctl <<<"$out"

    # --------------------------------------- clients against the kernel ------
    # tcpd-nc connects out through tcpd to a kernel listener on the kernel
    # side of the TUN, ...
    timeout 20 socat -u TCP-LISTEN:7001,bind=$HOST_ADDR,reuseaddr CREATE:"$HERE/from-tcpd.txt" &
    local listener=$!
    wait_for 5 kernel_listens 7001
    echo "hello from alice through tcpd" >"$HERE/to-kernel.txt"
    chmod 0644 "$HERE/to-kernel.txt"
    check "tcpd-nc (alice) sends to a kernel listener at $HOST_ADDR:7001" \
        bash -c "timeout 10 runuser -u alice -- tcpd-nc $HOST_ADDR 7001 <'$HERE/to-kernel.txt'"
    wait "$listener"
    check "the kernel listener received alice's line" cmp -s "$HERE/to-kernel.txt" "$HERE/from-tcpd.txt"
    # ... and listens inside tcpd for a kernel client.
    as_alice timeout 20 tcpd-nc -l 7002 >"$HERE/from-kernel.txt" &
    local nc=$!
    # Until alice's listener exists, tcpd refuses the connection: retry.
    wait_for 5 bash -c "echo 'hello from the kernel' | timeout 5 socat -u STDIN TCP:$TCPD_ADDR:7002 2>/dev/null"
    wait "$nc"
    check "tcpd-nc -l (alice) receives from a kernel client" \
        test "$(cat "$HERE/from-kernel.txt")" = "hello from the kernel"

    # IPv6 under the unit: the kernel side has its address, the TUN has no
    # link-local address (the daemon's rtnetlink request; the sysctl is
    # read-only here, ProtectKernelTunables=), and traffic flows both ways.
    ip -6 addr show dev "$TUN" | indent ip
    check "IPv6: $TUN has $HOST_ADDR6/64 under the unit" \
        bash -c "ip -6 addr show dev $TUN | grep -q 'inet6 $HOST_ADDR6/64'"
    check "IPv6: $TUN has no link-local address (nothing solicits routers into it)" \
        bash -c "! ip -6 addr show dev $TUN scope link | grep -q inet6"
    timeout 20 socat -u TCP6-LISTEN:7004,bind="[$HOST_ADDR6]",reuseaddr CREATE:"$HERE/from-tcpd6.txt" &
    listener=$!
    wait_for 5 kernel_listens 7004
    check "tcpd-nc -6 (alice) sends to a kernel listener at [$HOST_ADDR6]:7004" \
        bash -c "timeout 10 runuser -u alice -- tcpd-nc -6 $HOST_ADDR6 7004 <'$HERE/to-kernel.txt'"
    wait "$listener"
    check "the IPv6 kernel listener received alice's line" cmp -s "$HERE/to-kernel.txt" "$HERE/from-tcpd6.txt"
    as_alice timeout 20 tcpd-nc -l -6 7005 >"$HERE/from-kernel6.txt" &
    nc=$!
    wait_for 5 bash -c "echo 'hello over IPv6' | timeout 5 socat -u STDIN TCP6:[$TCPD_ADDR6]:7005 2>/dev/null"
    wait "$nc"
    check "tcpd-nc -l -6 (alice) receives from an IPv6 kernel client" \
        test "$(cat "$HERE/from-kernel6.txt")" = "hello over IPv6"
    out="$(timeout 10 tcpctl stats --json 2>&1)"
    check "no packet the kernel put into the TUN was dropped as not for tcpd" \
        grep -qE '"drop_not_for_us": *0([^0-9]|$)' <<<"$out"

    # A C program built against the installed library with pkg-config.
    # shellcheck disable=SC2046 # pkg-config prints several words on purpose
    if cc -o "$HERE/hello" "$HERE/hello.c" $(pkg-config --cflags --libs tcpd) -ldl >"$HERE/cc.txt" 2>&1; then
        pass "C program builds with \$(pkg-config --cflags --libs tcpd)"
        indent cc "$HERE/cc.txt"
        out="$(as_alice "$HERE/hello" 2>&1)"
        check "C program resolves tcpd_socket from libtcpd.so.0 ($out)" \
            test "$(readlink -f "$out")" = "$(readlink -f "$(pkg-config --variable=libdir tcpd)/libtcpd.so.0")"
        out="$(as_alice timeout 10 "$HERE/hello" listen 7000 2>&1)"
        check "C program (alice) listens through tcpd ($out)" test "$out" = "listening on 0.0.0.0:7000"
        timeout 20 socat TCP-LISTEN:7003,bind=$HOST_ADDR,reuseaddr PIPE &
        listener=$!
        wait_for 5 kernel_listens 7003
        out="$(as_alice timeout 10 "$HERE/hello" echo $HOST_ADDR 7003 "ping through libtcpd" 2>&1)"
        check "C program (alice) exchanges data with a kernel echo server ($out)" \
            test "$out" = "echoed 20 bytes"
        kill "$listener" 2>/dev/null
        wait "$listener" 2>/dev/null
    else
        indent cc "$HERE/cc.txt"
        fail "C program builds with \$(pkg-config --cflags --libs tcpd)"
    fi

    # ------------------------------------------------- exposure, online ------
    local line score
    line="$(timeout 60 systemd-analyze security --no-pager tcpd.service 2>&1 | grep 'Overall exposure level')"
    score="$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$line")"
    echo "     $line"
    check "systemd-analyze security tcpd (online) ${score:-unparsed} <= 2.0" \
        awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

    # ------------------------------------------------ journal, restart -------
    local uid
    uid="$(id -u tcpd)"
    # The unit's identity is in the journal's own fields, the daemon's
    # key=value fields in the message, its level in PRIORITY (the daemon's
    # "<6>" prefix), the time only in the journal's timestamp.
    check "journal: tcpd's 'tcpd ready' line, priority info, with its fields" \
        bash -c "journalctl --no-pager -o cat _SYSTEMD_UNIT=tcpd.service SYSLOG_IDENTIFIER=tcpd _UID=$uid PRIORITY=6 |
                 grep -E '^ *INFO [a-z_:]+: tcpd ready ' | grep 'tun=$TUN' | grep -q 'socket=$SOCK'"
    # Restart picks up a changed config: smaller MTU, JSON log lines.
    cp /etc/tcpd/tcpd.toml "$HERE/tcpd.toml.orig"
    sed -i -e 's/^# mtu = 1500$/mtu = 1400/' -e 's/^# log-format = "text"$/log-format = "json"/' /etc/tcpd/tcpd.toml
    check "config edited (mtu 1400, log-format json)" \
        bash -c 'grep -qx "mtu = 1400" /etc/tcpd/tcpd.toml && grep -qx "log-format = \"json\"" /etc/tcpd/tcpd.toml'
    local old_pid since
    old_pid="$(prop MainPID)"
    since="$(date '+%F %T')"
    sleep 1 # journalctl --since has a resolution of seconds
    check "systemctl restart tcpd" timeout 60 systemctl restart tcpd.service
    check "restart: a new main process" test "$(prop MainPID)" != "$old_pid"
    check_running restart
    check "restart: $TUN has the new MTU 1400" bash -c "ip -o link show dev $TUN | grep -q 'mtu 1400 '"
    journalctl --no-pager -o cat -u tcpd.service --since "$since" | tail -n 3 | indent journal
    check "journal: after restart, JSON log lines with the fields" \
        bash -c "journalctl --no-pager -o cat --since '$since' _SYSTEMD_UNIT=tcpd.service PRIORITY=6 |
                 grep '^{' | grep '\"message\":\"tcpd ready\"' | grep -q '\"mtu\":1400'"
    cp "$HERE/tcpd.toml.orig" /etc/tcpd/tcpd.toml
    timeout 60 systemctl restart tcpd.service

    # ----------------------------------------------------- stop resets -------
    # alice holds a connection to a kernel listener (her stdin a FIFO kept
    # open), then the service stops: the kernel side must see a reset.
    timeout 30 socat -d -d -u TCP-LISTEN:7004,bind=$HOST_ADDR,reuseaddr STDOUT \
        >"$HERE/held.out" 2>"$HERE/held.err" &
    listener=$!
    wait_for 5 kernel_listens 7004
    rm -f "$HERE/hold"
    mkfifo -m 0644 "$HERE/hold"
    as_alice timeout 30 tcpd-nc $HOST_ADDR 7004 <"$HERE/hold" >/dev/null 2>"$HERE/nc-held.err" &
    nc=$!
    exec 9>"$HERE/hold"
    check "held connection is established (kernel side)" wait_for 5 kernel_established 7004
    since="$(date '+%F %T')"
    check "systemctl stop tcpd" timeout 60 systemctl stop tcpd.service
    show_unit
    check "stop: inactive, result success" test "$(prop ActiveState)/$(prop Result)" = inactive/success
    check "stop: the daemon exited with status 0" \
        test "$(prop ExecMainCode)/$(prop ExecMainStatus)" = "1/0"
    check "stop: the kernel peer saw a reset" wait_for 5 grep -q 'Connection reset by peer' "$HERE/held.err"
    indent socat "$HERE/held.err"
    indent tcpd-nc "$HERE/nc-held.err"
    check "stop: no connection left on the kernel side" bash -c '! ss -Htn "( sport = :7004 )" | grep -q .'
    check "stop: socket and /run/tcpd removed" test ! -e /run/tcpd
    check "stop: TUN $TUN removed" bash -c '! ip link show dev tcpd0 >/dev/null 2>&1'
    exec 9>&-
    wait_for 5 bash -c "! kill -0 $nc 2>/dev/null"
    check "stop: alice's tcpd-nc ended" bash -c "! kill -0 $nc 2>/dev/null"
    kill "$listener" "$nc" 2>/dev/null
    wait "$listener" "$nc" 2>/dev/null
    journalctl --no-pager -o cat -u tcpd.service --since "$since" | indent journal
    check "journal: the daemon logged its shutdown" \
        bash -c "journalctl --no-pager -o cat -u tcpd.service --since '$since' | grep -q 'all connections reset'"

    # Leave it installed, enabled and stopped: boot 2 checks it starts at boot.
    check "still enabled for the next boot" test "$(systemctl is-enabled tcpd.service)" = enabled
}

# ================================================================ boot 2 =====
reboot_phase() {
    check_boot "boot with tcpd enabled"
    check "tcpd.service started at boot" test "$(systemctl is-active tcpd.service)" = active
    # Before=network.target: tcpd0 and its address exist when services
    # ordered after the network start.
    local tcpd_at net_at
    tcpd_at="$(prop ActiveEnterTimestampMonotonic)"
    net_at="$(systemctl show -P ActiveEnterTimestampMonotonic network.target)"
    check "tcpd.service was ready before network.target ($tcpd_at < $net_at us)" \
        test "${tcpd_at:-0}" -gt 0 -a "${tcpd_at:-0}" -lt "${net_at:-0}"
    check "[boot] $TUN_NODE recreated by tmpfiles: 600 tcpd:tcpd" \
        test "$(stat -c '%a %U:%G %t:%T' "$TUN_NODE")" = "600 tcpd:tcpd a:c8"
    check_running boot
    local warnings
    warnings="$(unit_warnings)"
    check "[boot] no warnings about tcpd.service in the journal" test -z "$warnings"
    [[ -n "$warnings" ]] && indent journal <<<"$warnings"

    # Why tcpd has its own node: without it (a drop-in emptying BindPaths=),
    # user tcpd cannot open a 0600 /dev/net/tun and the service fails.
    local mode since
    mode="$(stat -c %a /dev/net/tun)"
    chmod 0600 /dev/net/tun
    mkdir -p /run/systemd/system/tcpd.service.d
    printf '[Service]\nBindPaths=\nRestart=no\n' >/run/systemd/system/tcpd.service.d/test-no-own-node.conf
    systemctl daemon-reload
    since="$(date '+%F %T')"
    sleep 1
    check "[0600 /dev/net/tun, own node not mounted] systemctl restart tcpd fails" \
        bash -c '! timeout 60 systemctl restart tcpd.service 2>/dev/null'
    journalctl --no-pager -o cat -u tcpd.service --since "$since" | grep -iE 'error|denied|failed' | indent journal
    check "[0600 /dev/net/tun, own node not mounted] the daemon reports EACCES, priority err" \
        bash -c "journalctl --no-pager -o cat --since '$since' -p err _SYSTEMD_UNIT=tcpd.service | grep -qi 'permission denied'"
    rm -r /run/systemd/system/tcpd.service.d
    systemctl daemon-reload
    systemctl reset-failed tcpd.service

    # Stock Debian: /dev/net/tun 0666 (udev), and no tcpd-tun node (say,
    # tmpfiles could not create it): the unit falls back to the real node.
    chmod 0666 /dev/net/tun
    mv "$TUN_NODE" "$HERE/tcpd-tun.aside"
    check "[0666 /dev/net/tun, no $TUN_NODE] systemctl restart tcpd" \
        timeout 60 systemctl restart tcpd.service
    check_running 0666
    mv "$HERE/tcpd-tun.aside" "$TUN_NODE"
    chmod "$mode" /dev/net/tun

    # ------------------------------------------------------------ purge ------
    if timeout 300 apt-get purge -y tcpd >"$HERE/apt-purge.txt" 2>&1; then
        pass "apt purge tcpd (while it runs)"
    else
        indent apt "$HERE/apt-purge.txt"
        fail "apt purge tcpd"
    fi
    check "purge stopped the daemon (no process named tcpd)" \
        bash -c '! grep -qx tcpd /proc/[0-9]*/comm 2>/dev/null'
    check "purge: systemd no longer knows tcpd.service" test "$(prop LoadState)" = not-found
    check "purge: TUN $TUN gone" bash -c '! ip link show dev tcpd0 >/dev/null 2>&1'
    check "purge: /run/tcpd gone" test ! -e /run/tcpd
    # Debian policy 10.6: maintainer scripts leave device files alone; the
    # node goes with the next boot's fresh /dev, as nothing recreates it.
    check "purge: $TUN_NODE left to the next boot (policy 10.6), its tmpfiles entry gone" \
        test -c "$TUN_NODE" -a ! -e /usr/lib/tmpfiles.d/tcpd.conf
    check "purge: /dev/net/tun untouched" test -c /dev/net/tun
    snapshot >"$HERE/after.txt"
    if diff -u "$HERE/before.txt" "$HERE/after.txt" >"$HERE/purge-diff.txt"; then
        pass "purge: the file system is as before the install ($(wc -l <"$HERE/after.txt") entries)"
    else
        indent diff "$HERE/purge-diff.txt" | head -n 40
        fail "purge: the file system is as before the install"
    fi
    check "purge: the only new account is tcpd (kept, Debian policy)" \
        test "$(cut -d: -f1 /etc/passwd | grep -vxF -f "$HERE/users-before.txt" | xargs)" = tcpd
    check "purge: the only new group is tcpd (kept)" \
        test "$(cut -d: -f1 /etc/group | grep -vxF -f "$HERE/groups-before.txt" | xargs)" = tcpd
    check "purge: libtcpd.so.0 gone from the loader cache" bash -c '! ldconfig -p | grep -q libtcpd'
}

case "$PHASE" in
    install) install_phase ;;
    reboot) reboot_phase ;;
esac
finish
