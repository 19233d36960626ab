#!/usr/bin/python3
"""Run a command under the seccomp policy a systemd unit file declares.

    unit-seccomp.py UNIT_FILE -- COMMAND [ARGS...]

PID 1 on the test machine is not systemd, so tcpd.service cannot be started
for real. This stand-in applies the parts of the unit's sandbox that decide
which system calls the daemon may make, the likeliest to break it:

  - SystemCallFilter=: the allow list and the `~` deny lists, in file order,
    with groups (@system-service, ...) expanded by `systemd-analyze
    syscall-filter`, the very table systemd uses; @default is always allowed,
    as systemd does. Calls outside the list fail with SystemCallErrorNumber=
    (EPERM when unset).
  - RestrictAddressFamilies=: socket(2) and socketpair(2) only for the listed
    families; others fail with EAFNOSUPPORT, as under systemd.
  - SystemCallArchitectures=native: libseccomp's default (other ABIs kill).

Then it execs COMMAND. The caller must already have set no_new_privs (for
example `setpriv --no-new-privs`) or be root. Needs python3-seccomp
(Debian's /usr/bin/python3). Prints the policy's size on stderr.
"""

import errno
import os
import re
import socket
import subprocess
import sys

import seccomp


def unit_settings(path):
    """The [Service] section's assignments, in order, as (key, value) pairs."""
    settings = []
    section = None
    with open(path, encoding="utf-8") as unit:
        for raw in unit:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            if section == "Service" and "=" in line:
                key, value = line.split("=", 1)
                settings.append((key.strip(), value.strip()))
    return settings


def syscall_groups():
    """Group name -> its entries (syscall names and nested @groups)."""
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    groups = {}
    current = None
    for raw in listing.splitlines():
        if raw.startswith("@"):
            current = raw.split()[0]
            groups[current] = []
        elif current and raw.startswith("    ") and not raw.strip().startswith("#"):
            groups[current].append(raw.strip())
    return groups


def expand(names, groups, seen=None):
    """Syscall names of `names`, groups expanded recursively."""
    seen = set() if seen is None else seen
    calls = set()
    for name in names:
        if name.startswith("@"):
            if name in seen:
                continue
            seen.add(name)
            if name not in groups:
                raise SystemExit(f"unit-seccomp: unknown syscall group {name}")
            calls |= expand(groups[name], groups, seen)
        else:
            calls.add(name)
    return calls


def allowed_syscalls(settings, groups):
    """The allow list SystemCallFilter= lines build, in file order."""
    allowed = None
    for key, value in settings:
        if key != "SystemCallFilter" or not value:
            continue
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        calls = expand(names, groups)
        if deny:
            if allowed is None:
                raise SystemExit("unit-seccomp: deny-list-only filters are not emulated")
            allowed -= calls
        elif allowed is None:
            allowed = calls | expand(["@default"], groups)
        else:
            allowed |= calls
    if allowed is None:
        raise SystemExit("unit-seccomp: the unit sets no SystemCallFilter=")
    return allowed


def error_number(settings):
    for key, value in settings:
        if key == "SystemCallErrorNumber":
            return getattr(errno, value)
    return errno.EPERM


def address_families(settings):
    """Allowed families as numbers, or None when unrestricted."""
    families = None
    for key, value in settings:
        if key == "RestrictAddressFamilies":
            families = {getattr(socket, name) for name in value.split()}
    return families


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        raise SystemExit(__doc__)
    unit, command = argv[1], argv[3:]
    settings = unit_settings(unit)
    groups = syscall_groups()
    allowed = allowed_syscalls(settings, groups)
    families = address_families(settings)

    policy = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error_number(settings)))
    added = 0
    for name in sorted(allowed):
        if families is not None and name in ("socket", "socketpair"):
            continue
        try:
            policy.add_rule(seccomp.ALLOW, name)
            added += 1
        except (RuntimeError, ValueError, OSError):
            # A name this kernel/libseccomp does not know on this ABI.
            pass
    if families is not None:
        for name in ("socket", "socketpair"):
            if name not in allowed:
                continue
            for family in sorted(families):
                policy.add_rule(seccomp.ALLOW, name, seccomp.Arg(0, seccomp.EQ, family))
            # Any other family: EAFNOSUPPORT, as RestrictAddressFamilies= does.
            for family in range(0, 64):
                if family not in families:
                    policy.add_rule(
                        seccomp.ERRNO(errno.EAFNOSUPPORT),
                        name,
                        seccomp.Arg(0, seccomp.EQ, family),
                    )
    print(
        f"unit-seccomp: {added} system calls allowed, families "
        f"{[socket.AddressFamily(f).name for f in sorted(families)] if families else 'any'}",
        file=sys.stderr,
    )
    policy.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
