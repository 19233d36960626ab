# shellcheck shell=bash
# packaging/tests/checks.sh: the pass/fail bookkeeping of the package tests,
# sourced by test-deb.sh, test-systemd.sh and test-systemd-inside.sh (bash).
# Each check prints "ok   - WHAT" or "FAIL - WHAT"; finish prints
# "N passed, N failed" and exits non-zero when anything failed.

PASSED=0
FAILED=0
pass() {
    PASSED=$((PASSED + 1))
    echo "ok   - $*"
}
fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL - $*"
}
# check DESCRIPTION COMMAND...: passes when COMMAND exits 0.
check() {
    local what="$1"
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
finish() {
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
    exit $?
}
# Stops the run: prerequisites the test cannot work without.
abort() {
    fail "$*"
    finish
}
# package_under_test: sets DEB to the .deb to test: $TCPD_DEB, or what
# packaging/build-deb makes (which honours TCPD_DEB_NO_BUILD=1). Run from the
# workspace root; aborts when there is no package.
package_under_test() {
    if [[ -n "${TCPD_DEB:-}" ]]; then
        DEB="$TCPD_DEB"
    else
        echo "$(basename "$0"): packaging/build-deb"
        DEB="$(packaging/build-deb)" || abort "packaging/build-deb"
    fi
    [[ -f "$DEB" ]] || abort "package $DEB exists"
}
# indent PREFIX FILE...: shows command output under a check, marked as such.
indent() {
    local prefix="$1"
    shift
    sed "s/^/     $prefix: /" "$@"
}
