#!/usr/bin/env bash
# bench/top.sh - does `tcplens top` stay responsive on a 1M-socket namespace?
#
# Creates a throw-away namespace tl-benchtop-<pid>, fills it with N TIME_WAIT
# sockets (bench/twgen, default N=1000000), runs `tcplens top --netns NS` in a
# private 120x40 tmux server and presses `s` (sort) K times (default 20), a
# random 0-500 ms apart. For each press it polls `tmux capture-pane` every
# ~5 ms until the sort label on screen changes, and records the time from
# send-keys to the changed screen. At 1M sockets a dump takes about a second
# at the default 1 s interval, so most presses land while a dump runs.
#
# Reference, same run: the same presses against an empty namespace, where
# the dump takes a few ms; the difference is what the big table costs the
# terminal. The floor includes tmux's own redraw and one capture-pane
# (~2-5 ms).
#
# Usage: sudo bash bench/top.sh          (N=1000000, K=20)
#        sudo N=20000 bash bench/top.sh  (quick)
# The host's namespace is never touched; the namespaces and the tmux server
# are removed on exit.
set -euo pipefail
export LC_ALL=C

N=${N:-1000000}
K=${K:-20}
SCRIPT=top.sh
. "$(dirname "$0")/lib.sh"
[[ $N =~ ^[0-9]+$ ]] || die "N must be a number"
[[ $K =~ ^[1-9][0-9]*$ ]] || die "K must be a positive number"
for c in ip ss go tmux awk; do command -v "$c" >/dev/null || die "$c not found"; done

cd "$(dirname "$0")/.."
NS=tl-benchtop-$$
EMPTY=tl-benchtop-$$-empty
SOCK=tl-benchtop-$$
WORK=$(mktemp -d /tmp/tl-benchtop.XXXXXX)
cleanup() {
	tmux -L "$SOCK" kill-server 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	ip netns del "$EMPTY" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
bench_signals
sweep_stale tl-benchtop-

log "building tcplens and bench/twgen"
go build -o "$WORK/tcplens" ./cmd/tcplens
go build -o "$WORK/twgen" ./bench/twgen
ip netns add "$NS" && ip -n "$NS" link set lo up
ip netns add "$EMPTY" && ip -n "$EMPTY" link set lo up

tx() { tmux -L "$SOCK" -f /dev/null "$@"; }
screen() { tx capture-pane -p -t top; }
sortlabel() { screen | grep -o 'PORTS IN USE sort: [a-z_ ]*' | head -1; }

# measure NAME: starts top on $1, waits for the first frame, presses s K times.
measure() {
	local ns=$1 name=$2
	tx kill-session -t top 2>/dev/null || true
	tx new-session -d -x 120 -y 40 -s top "$WORK/tcplens top --netns $ns; sleep 5"
	local start; start=$(now_us)
	until screen | grep -q 'PORTS IN USE'; do
		(( $(now_us) - start < 120000000 )) || die "$name: no frame after 120 s: $(screen | head -3)"
		sleep 0.05
	done
	local first_ms=$(( ($(now_us) - start) / 1000 ))
	local lat=()
	for ((i = 0; i < K; i++)); do
		sleep "0.$(printf '%03d' $((RANDOM % 500)))"
		local before; before=$(sortlabel)
		local t0; t0=$(now_us)
		tx send-keys -t top s
		while [[ $(sortlabel) == "$before" ]]; do
			(( $(now_us) - t0 < 10000000 )) || die "$name: key not reflected after 10 s"
		done
		lat+=($(( $(now_us) - t0 )))
	done
	local hdr; hdr=$(screen | head -1)
	tx send-keys -t top q
	printf '%s\n' "${lat[@]}" | sort -n >"$WORK/$name.lat"
	local med max p90
	med=$(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]/1000}' "$WORK/$name.lat")
	p90=$(awk '{a[NR]=$1} END {i=int(NR*0.9+0.5); if(i<1)i=1; print a[i]/1000}' "$WORK/$name.lat")
	max=$(tail -1 "$WORK/$name.lat" | awk '{print $1/1000}')
	echo "| $name | $(echo "$hdr" | grep -o '[0-9,]* sockets' | head -1) | $(echo "$hdr" | grep -o 'dump [0-9.]*[a-z]*' | head -1) | $first_ms ms | $med ms | $p90 ms | $max ms |"
}

log "generating $N TIME_WAIT sockets in $NS"
gstart=$(now_us)
timeout 150 "$WORK/twgen" -netns "$NS" -n "$N" -timeout 140s >"$WORK/twgen.out" || die "twgen failed: $(cat "$WORK/twgen.out")"
log "generated in $(( ($(now_us) - gstart) / 1000000 )) s; $(ss -N "$NS" -s | grep -o 'timewait [0-9]*')"

echo "| namespace | sockets on screen | last dump | first frame | keypress→screen median | p90 | max |"
echo "|---|---|---|---|---|---|---|"
measure "$NS" "$N TIME_WAIT"
measure "$EMPTY" "empty (reference)"
