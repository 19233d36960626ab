#!/bin/sh
# Renders tcpd.pc for an uninstalled build, so programs can be compiled
# against the build tree with pkg-config:
#
#   client-lib/c/pkgconfig.sh target/debug
#   PKG_CONFIG_PATH=target/debug/pkgconfig cc prog.c $(pkg-config --cflags --libs tcpd)
#
# Writes PROFILE_DIR/pkgconfig/tcpd.pc (libdir = PROFILE_DIR, includedir =
# the committed client-lib/c/include, and an rpath to PROFILE_DIR in Libs so
# the program finds libtcpd.so.0 there without LD_LIBRARY_PATH) and the
# libtcpd.so.0 symlink the SONAME asks for at run time. Run after
# `cargo build -p tcpd-c` (scripts/run --build does both).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 PROFILE_DIR (e.g. target/debug)" >&2; exit 2; }
libdir=$(cd "$1" && pwd)
[ -e "$libdir/libtcpd.so" ] || { echo "$libdir/libtcpd.so missing: cargo build -p tcpd-c first" >&2; exit 1; }
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/../../Cargo.toml" | head -n1)
mkdir -p "$libdir/pkgconfig"
tmp="$libdir/pkgconfig/tcpd.pc.$$"
sed -e "s|@PREFIX@|$libdir|" -e "s|@LIBDIR@|$libdir|" \
    -e "s|@INCLUDEDIR@|$here/include|" -e "s|@VERSION@|${version:-0.0.0}|" \
    -e 's|^Libs: .*|& -Wl,-rpath,${libdir}|' \
    "$here/tcpd.pc.in" > "$tmp"
mv -f "$tmp" "$libdir/pkgconfig/tcpd.pc"
ln -sfn libtcpd.so "$libdir/libtcpd.so.0"
echo "$libdir/pkgconfig/tcpd.pc"
