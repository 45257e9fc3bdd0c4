#!/usr/bin/env bash
# bench/churn.sh - does destroy-event processing keep up with 20,000
# connections/s, and what does it cost?
#
# Creates a throw-away namespace tl-bench-churn-<pid> and, in the same run:
#   1. starts the listener (bench/churnbench -mode listen: internal/churn with
#      its defaults, one window swapped per second) in its own process, so its
#      CPU time (getrusage) is its own;
#   2. starts `ss -E -tn` (iproute2's destroy-event listener) as the
#      reference: its line count is the oracle for the number of events, GNU
#      time gives its CPU time;
#   3. drives RATE connections/s (default 20000) for DURATION (default 10s)
#      on loopback inside the namespace (bench/churnbench -mode load; every
#      connection gives two events, one per end).
# It prints the load achieved, events seen by both listeners, drops and CPU.
# Sysctls are set inside the namespace only; it is deleted on exit.
#
# Usage: sudo bash bench/churn.sh
# Env:   RATE, DURATION (Go duration), OUT (append the report there)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-20000}
DURATION=${DURATION:-10s}
NS=tl-bench-churn-$$
BIN=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; ip netns del $NS 2>/dev/null || true; rm -rf "$BIN"' EXIT

go build -o "$BIN/churnbench" ./bench/churnbench
ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
ip netns exec "$NS" sysctl -qw net.ipv4.tcp_max_tw_buckets=2000000
ip netns exec "$NS" sysctl -qw net.core.somaxconn=65535
secs=${DURATION%s}
listen_for=$((${secs%.*} + 4))s

"$BIN/churnbench" -mode listen -netns "$NS" -duration "$listen_for" > "$BIN/listen.out" 2>&1 &
lpid=$!
/usr/bin/time -f "%U %S %e" -o "$BIN/ss.time" ip netns exec "$NS" ss -E -Htn > "$BIN/ss.out" 2>/dev/null &
spid=$!
sleep 1
"$BIN/churnbench" -mode load -netns "$NS" -rate "$RATE" -duration "$DURATION" > "$BIN/load.out"
sleep 2
# ss -E has no time limit: stop it (the ip netns exec wrapper passes SIGTERM on).
pkill -TERM -P "$spid" 2>/dev/null || true

wait "$lpid" || true
wait "$spid" 2>/dev/null || true

report=$(
  echo "command: RATE=$RATE DURATION=$DURATION bash bench/churn.sh   ($(uname -r), $(nproc) cores, $(date -u +%F))"
  cat "$BIN/load.out"
  grep -v '^window' "$BIN/listen.out"
  echo "windows (1 s each, listener):"
  grep '^window' "$BIN/listen.out" | sed 's/^/  /'
  read -r u s e < <(tail -n 1 "$BIN/ss.time") || true
  echo "reference ss -E -Htn: $(wc -l < "$BIN/ss.out") events, cpu $(echo "$u + $s" | bc)s over ${e}s"
)
echo "$report"
if [ -n "${OUT:-}" ]; then echo "$report" >> "$OUT"; fi
