#!/usr/bin/env bash
# bench/record.sh - CPU overhead of `tcplens record` on a big socket table.
#
# Creates a throw-away network namespace tl-brec-<pid>, fills it with N
# TIME_WAIT sockets (bench/twgen, default 100000), starts
#
#   tcplens record --netns NS --interval 1s --db WORK/rec.db [EXTRA]
#
# and, after WARM seconds, reads utime+stime of the recorder from
# /proc/PID/stat over SECS seconds (default 45: TIME_WAIT sockets live
# exactly 60 s, generating 100k takes ~3-5 s and the references below
# ~2 s, so the whole window sees the full table; the sockstat timewait
# count is reported at both ends).
# In the same run it measures the reference: the CPU time of one bare
# netlink dump of the same table (bench/rawcount, per family as ss asks,
# and -one-walk as tcplens asks; the floor of any socket
# dump), so the result can be read as "how many dumps per second".
#
# Usage: sudo bash bench/record.sh
# Env:   N (sockets), SECS (window), WARM, EXTRA (more record flags, e.g.
#        "--cpu-budget 0" to see the cost of a full sample every second),
#        TCPLENS (prebuilt binary)
set -euo pipefail
export LC_ALL=C

N=${N:-100000}
SECS=${SECS:-45}
WARM=${WARM:-3}
EXTRA=${EXTRA:-}

SCRIPT=record.sh
. "$(dirname "$0")/lib.sh"

[[ $N =~ ^[0-9]+$ ]] || die "N must be a number"
[[ $SECS =~ ^[1-9][0-9]*$ ]] || die "SECS must be a positive number"
((WARM + SECS + 7 <= 60)) || log "warning: WARM+SECS+generation exceeds the 60 s TIME_WAIT life; the table will shrink during the window"

cd "$(dirname "$0")/.."
NS=tl-brec-$$
WORK=$(mktemp -d /tmp/tl-brec.XXXXXX)
REC_PID=
cleanup() {
	[[ -n $REC_PID ]] && kill "$REC_PID" 2>/dev/null && wait "$REC_PID" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
bench_signals
sweep_stale tl-brec-

log "building"
go build -o "$WORK/twgen" ./bench/twgen
go build -o "$WORK/rawcount" ./bench/rawcount
TL=${TCPLENS:-}
if [[ -z $TL ]]; then
	go build -o "$WORK/tcplens" ./cmd/tcplens
	TL=$WORK/tcplens
fi
HZ=$(getconf CLK_TCK)

ip netns add "$NS"
ip -n "$NS" link set lo up

log "generating $N TIME_WAIT sockets in $NS"
"$WORK/twgen" -netns "$NS" -n "$N" -timeout 60s >/dev/null

# Reference: CPU of one bare dump of this table (median of 5).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# median_cpu_ms ARGS: median CPU ms of 5 rawcount runs with ARGS.
median_cpu_ms() {
	local i ms=()
	for i in 1 2 3 4 5; do
		/usr/bin/time -f '%U %S' -o "$WORK/raw.time" "$WORK/rawcount" -netns "$NS" "$@" >/dev/null
		ms+=("$(awk '{printf "%.0f", ($1 + $2) * 1000}' "$WORK/raw.time")")
	done
	printf '%s\n' "${ms[@]}" | sort -n | sed -n 3p
}
RAW_MS=$(median_cpu_ms)
RAW1_MS=$(median_cpu_ms -one-walk)

# shellcheck disable=SC2086
"$TL" record --netns "$NS" --interval 1s --db "$WORK/rec.db" --duration $((WARM + SECS + 5))s --json $EXTRA >"$WORK/rec.json" 2>"$WORK/rec.err" &
REC_PID=$!
sleep "$WARM"
kill -0 "$REC_PID" 2>/dev/null || die "record exited early: $(cat "$WORK/rec.err")"
TW0=$(tw_count "$NS")
T0=$(date +%s.%N)
C0=$(ticks "$REC_PID")
RSS=0
for ((i = 0; i < SECS; i++)); do
	sleep 1
	r=$(awk '/^VmRSS/{print $2}' "/proc/$REC_PID/status")
	((r > RSS)) && RSS=$r
done
C1=$(ticks "$REC_PID")
T1=$(date +%s.%N)
TW1=$(tw_count "$NS")
wait "$REC_PID" || die "record failed: $(cat "$WORK/rec.err")"
REC_PID=

CPU=$(awk -v a="$C0" -v b="$C1" -v hz="$HZ" -v t0="$T0" -v t1="$T1" 'BEGIN{printf "%.2f", (b - a) / hz / (t1 - t0) * 100}')
SAMPLES=$(sed -n 's/.*"samples": \([0-9]*\).*/\1/p' "$WORK/rec.json" | head -1)
PROBES=$(sed -n 's/.*"probes": \([0-9]*\).*/\1/p' "$WORK/rec.json" | head -1)
TICKS=$(sed -n 's/.*"ticks": \([0-9]*\).*/\1/p' "$WORK/rec.json" | head -1)
DBSIZE=$(du -k "$WORK/rec.db" | awk '{print $1}')
VERDICT=$(awk -v c="$CPU" 'BEGIN{print (c <= 3.0) ? "met" : "**missed**"}')

cat <<EOF

### tcplens record overhead, $(date -u '+%Y-%m-%d %H:%M UTC')

- kernel $(uname -r), $(nproc) CPUs; $N TIME_WAIT sockets requested
- command: \`tcplens record --netns NS --interval 1s $EXTRA\` (defaults otherwise)
- window: ${SECS} s after ${WARM} s of warm-up; sockstat timewait at start / end: $TW0 / $TW1
- CPU: utime+stime of the recorder from /proc/PID/stat, USER_HZ=$HZ

| measure | value |
|---|---:|
| recorder CPU, average over the window (% of one core) | **$CPU** (target <= 3: $VERDICT) |
| full samples / intervals stored (ticks) / probes, whole run | $SAMPLES / $TICKS / $PROBES |
| recorder peak RSS during the window | $((RSS / 1024)) MB |
| recording file at the end | ${DBSIZE} KB |
| reference: CPU of one bare netlink dump of the table (rawcount, median of 5) | ${RAW_MS} ms |
| reference: that dump once a second, as % of one core | $(awk -v m="$RAW_MS" 'BEGIN{printf "%.1f", m / 10}') |
| reference: CPU of one bare one-walk dump (rawcount -one-walk, the request tcplens sends), median of 5 | ${RAW1_MS} ms |
EOF
