#!/bin/sh
# demo.sh - quick start: install dependencies, build everything in build/,
# write a demo configuration and spool under build/demo/, start Breakwater on
# 127.0.0.1:2525 and say how to use and stop it. Run again to rebuild and restart.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh scripts/deps.sh
[ -x configure ] || autoreconf -fi >/dev/null
mkdir -p build
cd build
[ -f Makefile ] || ../configure -q CFLAGS="-O2 -g"
make -j2 -s
demo="$top/build/demo"
mkdir -p "$demo/etc"
chmod 755 "$demo"
if [ ! -f "$demo/etc/main.cf" ]; then
    cat > "$demo/etc/main.cf" <<CF
# Demo instance written by scripts/demo.sh
myhostname = breakwater.demo
queue_directory = $demo/spool
daemon_directory = $top/build/libexec/breakwater
log_file = $demo/breakwater.log
smtpd_listen = 127.0.0.1:2525
CF
fi
ctl="$top/build/mailctl/mailctl -c $demo/etc"
$ctl stop >/dev/null 2>&1 || true
$ctl start
echo "log:    $demo/breakwater.log"
echo "spool:  $demo/spool/queue/"
echo "try:    swaks --server 127.0.0.1:2525 --from you@example.com --to someone@example.net"
echo "status: $ctl status"
echo "stop:   $ctl stop"
