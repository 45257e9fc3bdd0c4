#!/usr/bin/env bash
# bench/serve.sh - does a scrape of `tcplens serve` stay cheap on a host with
# a million sockets, and do scrapes never trigger dumps?
#
# Creates a throw-away namespace tl-bench-serve-<pid>, fills it with N
# TIME_WAIT sockets (bench/twgen), starts `tcplens serve --netns NS` on a
# loopback port with --interval 15s, waits for the first sample, then:
#   - times sequential scrapes for SECS seconds (default 16, longer than the
#     interval, so at least one background dump runs under them), and
#   - times PAR scrapes fired at once (more than the 8 in flight allowed),
# and reads tcplens_last_sample_duration_seconds (what one dump costs) and
# tcplens_samples_total before and after (scrapes must not add samples
# beyond one per interval). Reference in the same run: `ss -tan | wc -l`.
#
# Usage: sudo bash bench/serve.sh          (N=1000000)
#        sudo N=20000 bash bench/serve.sh  (smoke check)
set -euo pipefail
export LC_ALL=C
N=${N:-1000000}
SECS=${SECS:-16}
PAR=${PAR:-32}
SCRIPT=serve.sh
. "$(dirname "$0")/lib.sh"
[[ $N =~ ^[0-9]+$ ]] || die "N must be a number"
cd "$(dirname "$0")/.."
NS=tl-bench-serve-$$
TMP=$(mktemp -d)
SERVE_PID=
cleanup() {
	[[ -n $SERVE_PID ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
bench_signals
sweep_stale tl-bench-serve-
go build -o "$TMP/tcplens" ./cmd/tcplens
go build -o "$TMP/twgen" ./bench/twgen
ip netns add "$NS"
ip -n "$NS" link set lo up
echo "serve.sh: generating $N TIME_WAIT sockets in $NS" >&2
"$TMP/twgen" -netns "$NS" -n "$N" >&2
sockets=$(ip netns exec "$NS" ss -Htan | wc -l)
t0=$EPOCHREALTIME; ip netns exec "$NS" ss -tan | wc -l >/dev/null; t1=$EPOCHREALTIME
ss_wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')

"$TMP/tcplens" serve --netns "$NS" --listen 127.0.0.1:0 --interval 15s 2>"$TMP/log" &
SERVE_PID=$!
addr=
for _ in $(seq 100); do
	addr=$(grep -o 'msg="tcplens serve" listen=[0-9.:]*' "$TMP/log" | sed 's/.*listen=//' || true)
	[[ -n $addr ]] && break
	sleep 0.1
done
[[ -n $addr ]] || { cat "$TMP/log" >&2; exit 1; }
url="http://$addr/metrics"
for _ in $(seq 300); do
	curl -fs "$url" | grep -q '^tcplens_scrape_success 1' && break
	sleep 0.1
done
metric() { curl -fs "$url" | awk -v m="$1" '$1==m{print $2}'; }
samples0=$(metric tcplens_samples_total)
dump=$(metric tcplens_last_sample_duration_seconds)
start=$EPOCHREALTIME
stop_at=$(( ${EPOCHREALTIME%.*} + SECS ))
while (( ${EPOCHREALTIME%.*} < stop_at )); do curl -fs -o /dev/null -w '%{time_total}\n' "$url"; sleep 0.05; done >"$TMP/seq"
for _ in $(seq "$PAR"); do curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$url" & done >"$TMP/par"
wait $(jobs -p | grep -v "^$SERVE_PID$") 2>/dev/null || true
end=$EPOCHREALTIME
samples1=$(metric tcplens_samples_total)
rss=$(awk '/VmHWM/{print $2/1024}' /proc/$SERVE_PID/status)
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END{i=int(NR*p+0.999); if(i<1)i=1; printf "%.1f", a[i]*1000}'; }
echo
echo "| what | value |"
echo "|---|---:|"
echo "| sockets in the namespace (ss -Htan \| wc -l) | $sockets |"
echo "| reference: ss -tan \| wc -l wall | ${ss_wall} s |"
echo "| one sample (dump + /proc scan), tcplens_last_sample_duration_seconds | $(awk -v d="$dump" 'BEGIN{printf "%.2f", d}') s |"
echo "| sequential scrapes: p50 / p99 / max | $(pct 0.5 <"$TMP/seq") / $(pct 0.99 <"$TMP/seq") / $(pct 1 <"$TMP/seq") ms |"
echo "| $PAR concurrent scrapes: 200 / 503 | $(grep -c '^200' "$TMP/par") / $(grep -c '^503' "$TMP/par" || true) |"
echo "| concurrent scrapes answered 200: max latency | $(awk '$1==200{print $2}' "$TMP/par" | pct 1) ms |"
echo "| samples taken during $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s of scraping ($(( $(wc -l <"$TMP/seq") + PAR )) scrapes, interval 15 s) | $((samples1-samples0)) |"
echo "| serve peak RSS (VmHWM) | ${rss} MB |"
