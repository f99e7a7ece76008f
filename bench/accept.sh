#!/bin/bash
# accept.sh - accept-rate benchmark: Breakwater against Postfix, same run.
#
# For each message size (4 KiB and 51,200 bytes) it starts a fresh Breakwater
# instance and a fresh Postfix instance (private config dirs and queues under
# /tmp/bw-bench-*, loopback ports; see benchlib.py), drives each with
# Postfix's smtp-source (default 20,000 messages over 50 parallel sessions,
# one message per connection), times it, checks that every message is in the
# queue, and prints the rates and their ratio.  See README.md.
#
# Environment:
#   BENCH_QUICK=1        2,000 messages instead of 20,000
#   BENCH_MESSAGES=N     message count (overrides BENCH_QUICK)
#   BENCH_SESSIONS=N     parallel sessions (default 50)
#   BENCH_SIZES="a b"    payload sizes in bytes (default "4096 51200")
#   BENCH_RUNS=N         repeat each measurement N times, report the median
#   BENCH_ONLY=breakwater|postfix   measure only one side
#   BENCH_BW_PARAMS="k=v ..."       extra Breakwater main.cf settings
#                        (e.g. spool_sync_method=fsync)
#   BENCH_POSTFIX_MODES="relay hold"  Postfix configurations to measure, each
#                        against the same Breakwater figure; the first is the
#                        headline (relay: qmgr+smtp defer the mail at a closed
#                        relayhost, as Breakwater's qmgr+delivery do; hold:
#                        intake only; defer: defer_transports)
#   BENCH_TIMEOUT=S      limit for one smtp-source run (default 900 s)
#   BENCH_KEEP=1         keep the work dir of a failed run for inspection
#   BENCH_SINK=0         skip the client-ceiling run against smtp-sink
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
LIB="$PY $HERE/benchlib.py"
SMTP_SOURCE=/usr/sbin/smtp-source

if [ -n "${BENCH_MESSAGES:-}" ]; then COUNT=$BENCH_MESSAGES
elif [ "${BENCH_QUICK:-0}" = 1 ]; then COUNT=2000
else COUNT=20000; fi
SESSIONS=${BENCH_SESSIONS:-50}
SIZES=${BENCH_SIZES:-"4096 51200"}
RUNS=${BENCH_RUNS:-1}
# Postfix modes (benchlib.py): relay = like Breakwater, the delivery agent
# finds the route closed and defers; hold = intake only.  The first one is
# the one on the "accept" line.
PF_MODES=${BENCH_POSTFIX_MODES:-${BENCH_POSTFIX_MODE:-relay hold}}
ONLY=${BENCH_ONLY:-}
TIMEOUT=${BENCH_TIMEOUT:-900}
read -r -a BW_PARAMS <<< "${BENCH_BW_PARAMS:-}"

WORKDIRS=()
SINK_PID=
cleanup() {
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
    for w in "${WORKDIRS[@]}"; do
        [ -d "$w" ] && $LIB cleanup "$w"
    done
}
trap cleanup EXIT
trap 'echo "accept.sh: interrupted" >&2; exit 130' INT TERM

die() { echo "accept.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (private Postfix instance, breakwater mail_owner)"
[ -x "$SMTP_SOURCE" ] || die "$SMTP_SOURCE missing (apt-get install postfix)"

label() {   # payload size -> label used in the summary
    case $1 in
        4096) echo 4KiB ;;
        51200) echo 50KiB ;;
        *) echo "${1}B" ;;
    esac
}

want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

# run_one KIND SIZE [POSTFIX_MODE]: sets RATE (msg/s, or "FAILED"), QUEUED,
# DURABILITY, ELAPSED, DOWNSTREAM (what the delivery side did meanwhile)
run_one() {
    local kind=$1 size=$2 mode=${3:-} w port t0 t1 rc err queued other log
    RATE=FAILED QUEUED="?" DURABILITY="?" ELAPSED="?" DOWNSTREAM=
    [ -n "$mode" ] && export BENCH_POSTFIX_MODE=$mode
    w=$($LIB workdir) || die "cannot make a work dir"
    WORKDIRS+=("$w")
    if [ "$kind" = bw ]; then
        port=$($LIB bw-start "$w" "${BW_PARAMS[@]}") || { echo "accept.sh: breakwater did not start" >&2; return 1; }
    else
        port=$($LIB pf-start "$w") || { echo "accept.sh: postfix did not start" >&2; return 1; }
    fi
    DURABILITY=$($LIB "$kind-durability" "$w")
    sync                       # start from a clean page cache / journal
    err="$w/smtp-source.err"
    t0=$(date +%s.%N)
    timeout -k 10 "$TIMEOUT" "$SMTP_SOURCE" -s "$SESSIONS" -m "$COUNT" -l "$size" \
        -f from@example.com -t to@example.net "127.0.0.1:$port" 2>"$err"
    rc=$?
    t1=$(date +%s.%N)
    ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    read -r queued other < <($LIB "$kind-count" "$w")
    QUEUED="$queued/$COUNT"
    if [ "$rc" -eq 0 ]; then
        RATE=$(awk -v n="$COUNT" -v t="$ELAPSED" 'BEGIN { printf "%.0f", n / t }')
    else
        echo "accept.sh: $kind: smtp-source exit $rc after ${ELAPSED}s (124 = timed out):" >&2
        head -c 2000 "$err" >&2
        echo "accept.sh: $kind: last log lines:" >&2
        $LIB "$kind-logtail" "$w" 30 >&2
    fi
    if [ "$queued" != "$COUNT" ]; then
        echo "accept.sh: $kind: WARNING: $queued messages queued, $COUNT sent (other: $other)" >&2
        [ "$rc" -eq 0 ] && RATE="$RATE(QUEUE-MISMATCH)"
    fi
    [ "$kind" = bw ] && [ "${other:-0}" != 0 ] && \
        echo "accept.sh: bw: WARNING: $other files left in incoming/" >&2
    if [ "$kind" = bw ]; then log="$w/bw/log/breakwater.log"; else log="$w/pf/maillog"; fi
    DOWNSTREAM="$(grep -c 'status=deferred' "$log") deferrals, $(grep -c 'connect to .*Connection refused$' "$log") connection attempts to the closed route"
    $LIB "$kind-stop" "$w"
    if [ "$RATE" = FAILED ] && [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "accept.sh: keeping $w" >&2
        rm -f "$w/$kind.state.json"
    else
        $LIB cleanup "$w"
    fi
    return 0
}

# sink_rate SIZE: smtp-source against Postfix's smtp-sink (no disk, no
# parsing to speak of): the most this client setup can push on this machine
sink_rate() {
    local size=$1 port pid t0 t1 rc
    port=$($LIB port) || return 1
    /usr/sbin/smtp-sink -u nobody "127.0.0.1:$port" 1024 &
    pid=$! SINK_PID=$!
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    t0=$(date +%s.%N)
    timeout -k 10 "$TIMEOUT" "$SMTP_SOURCE" -s "$SESSIONS" -m "$COUNT" -l "$size" \
        -f from@example.com -t to@example.net "127.0.0.1:$port" 2>/dev/null
    rc=$?
    t1=$(date +%s.%N)
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    SINK_PID=
    [ "$rc" -eq 0 ] || { echo FAILED; return 0; }
    awk -v n="$COUNT" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}

median() {  # median of numeric args; FAILED if any failed
    local v
    for v in "$@"; do [[ $v =~ ^[0-9.]+$ ]] || { echo FAILED; return; }; done
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
        END { printf "%.0f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

if want breakwater; then
    BUILD_DIR=$($LIB build) || die "Breakwater build failed"
    echo "accept.sh: breakwater build: $BUILD_DIR" >&2
fi

echo "accept.sh: $COUNT messages per run, $SESSIONS sessions, sizes: $SIZES, runs: $RUNS" >&2
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
SUMMARY=()
ratio_of() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'
}
declare -A PF_D
for size in $SIZES; do
    lbl=$(label "$size")
    bw_rates=() bw_q=- bw_d=-
    declare -A pf_rates=() pf_q=()
    for ((r = 1; r <= RUNS; r++)); do
        if want breakwater; then
            run_one bw "$size"
            bw_rates+=("$RATE") bw_q=$QUEUED bw_d=$DURABILITY
            echo "accept.sh: run $r $lbl breakwater: $COUNT msgs in ${ELAPSED}s = $RATE msg/s, queued $QUEUED; meanwhile $DOWNSTREAM" >&2
        fi
        if want postfix; then
            for mode in $PF_MODES; do
                run_one pf "$size" "$mode"
                pf_rates[$mode]+=" $RATE" pf_q[$mode]=$QUEUED PF_D[$mode]=$DURABILITY
                echo "accept.sh: run $r $lbl postfix ($mode): $COUNT msgs in ${ELAPSED}s = $RATE msg/s, queued $QUEUED; meanwhile $DOWNSTREAM" >&2
            done
        fi
    done
    bw=$( [ ${#bw_rates[@]} -gt 0 ] && median "${bw_rates[@]}" || echo -)
    first=1
    for mode in ${PF_MODES:-none}; do
        if want postfix; then
            read -r -a runs <<< "${pf_rates[$mode]}"
            pf=$(median "${runs[@]}")
        else
            runs=() pf=-
        fi
        ratio=$(ratio_of "$bw" "$pf")
        per_run=
        if [ "$RUNS" -gt 1 ] && [ ${#bw_rates[@]} -eq "$RUNS" ] && [ ${#runs[@]} -eq "$RUNS" ]; then
            for ((r = 0; r < RUNS; r++)); do
                per_run+=" $(awk -v a="${bw_rates[r]}" -v b="${runs[r]}" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.0f/%.0f=%.2f", a, b, a / b; else print "failed" }')"
            done
            per_run=" (medians of $RUNS; per run:$per_run)"
        fi
        if [ $first = 1 ]; then
            SUMMARY+=("accept $lbl: breakwater $bw msg/s, postfix $pf msg/s, ratio $ratio$per_run")
            want postfix && SUMMARY+=("  (postfix mode: $mode)")
            first=0
        else
            SUMMARY+=("  vs postfix mode $mode: postfix $pf msg/s, ratio $ratio$per_run")
        fi
    done
    q="  queued $lbl: breakwater $bw_q"
    if want postfix; then
        for mode in $PF_MODES; do q+=", postfix ($mode) ${pf_q[$mode]}"; done
    fi
    SUMMARY+=("$q")
    unset pf_rates pf_q
    if [ "${BENCH_SINK:-1}" = 1 ]; then
        sink=$(sink_rate "$size")
        echo "accept.sh: $lbl smtp-sink (client ceiling): $sink msg/s" >&2
        SUMMARY+=("  client ceiling $lbl (smtp-source -> smtp-sink, no queue): $sink msg/s")
    fi
done

echo
echo "== accept benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $COUNT messages x $SESSIONS sessions, smtp-source one message per connection"
echo "  load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${SUMMARY[@]}"
want breakwater && echo "  durability breakwater: $bw_d"
if want postfix; then
    for mode in $PF_MODES; do echo "  durability postfix ($mode): ${PF_D[$mode]}"; done
fi
exit 0
