#!/bin/sh
# deps.sh - install Breakwater's build, test and benchmark dependencies.
# Idempotent and quiet when everything is already there; as root it also
# creates the unprivileged `breakwater` system user (DESIGN §3, §5 mail_owner).
# --bench also installs what only the benchmarks' figures need (matplotlib).
set -eu

PKGS="build-essential autoconf automake libtool pkg-config
      libevent-dev libssl-dev libldns-dev libdb5.3-dev check
      python3-pytest python3-aiosmtpd python3-dnslib swaks postfix pflogsumm"
case "${1:-}" in
    --bench) PKGS="$PKGS python3-matplotlib" ;;
    "") ;;
    *) echo "usage: deps.sh [--bench]" >&2; exit 2 ;;
esac

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing packages:$missing (run as root to install)" >&2
        exit 1
    fi
    echo "deps.sh: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Postfix asks debconf questions; answer them so the install never blocks.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The packaged Postfix instance is not ours: benchmarks run their own.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now postfix >/dev/null 2>&1 || true; fi
    postfix stop >/dev/null 2>&1 || true
fi

if [ "$(id -u)" -eq 0 ] && ! getent passwd breakwater >/dev/null; then
    useradd --system --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin breakwater
    echo "deps.sh: created system user breakwater"
fi
exit 0
