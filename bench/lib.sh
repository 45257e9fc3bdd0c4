# bench/lib.sh - shared pieces of the bench/*.sh scripts; source it after
# setting SCRIPT (the name for messages):
#
#   SCRIPT=record.sh
#   . "$(dirname "$0")/lib.sh"
#
# It defines die, log, now_us, tw_count NS, sweep_stale PREFIX and
# bench_signals, and stops at once unless run as root (every script creates
# network namespaces).

die() { echo "$SCRIPT: $*" >&2; exit 1; }
log() { echo "$SCRIPT: $*" >&2; }

# now_us prints the wall clock in microseconds.
now_us() { echo "${EPOCHREALTIME/./}"; }

# tw_count NS prints the TIME_WAIT count of namespace NS (sockstat, 2 ms).
tw_count() { ss -N "$1" -s 2>/dev/null | sed -n 's/.*timewait \([0-9]*\).*/\1/p' | head -1; }

# sweep_stale PREFIX removes namespaces PREFIX<pid>[-suffix] left by runs
# that were killed before their trap ran (their pid is gone).
sweep_stale() {
	local old pid
	for old in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1[0-9]+(-[a-z]+)?\$" || true); do
		pid=${old#"$1"}
		pid=${pid%%-*}
		if ! kill -0 "$pid" 2>/dev/null; then
			log "removing stale namespace $old"
			ip netns del "$old" || true
		fi
	done
}

# bench_signals makes INT and TERM exit through the EXIT trap (cleanup).
bench_signals() {
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

[[ $(id -u) == 0 ]] || die "needs root (network namespaces): sudo bash bench/$SCRIPT"
