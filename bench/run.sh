#!/usr/bin/env bash
# bench/run.sh - how fast and how lean is a TCP socket dump at 1M sockets?
#
# Creates a throw-away network namespace tl-bench-<pid>, fills it with N
# TIME_WAIT sockets (bench/twgen, default N=1000000) and, in the same run,
# times these commands against that namespace:
#
#   raw       bench/rawcount: netlink dump that only counts by state (the floor)
#   raw1      the same with -one-walk: one TCPDIAG_GETSOCK request for both
#             families, the request tcplens sends (raw sends one per family,
#             like ss)
#   rawall    the same with state mask 0xffffffff, which on Linux >= 6.5 includes
#             TCP_BOUND_INACTIVE and makes the kernel walk the bind hash too
#   ss|wc     ss -tan | wc -l
#   ss        ss -tan > /dev/null
#   summary   tcplens summary --json --netns NS > /dev/null
#   sockets   tcplens sockets --json --netns NS > /dev/null
#   doctor    tcplens doctor --interval 0 --json --netns NS > /dev/null
#
# Each command runs RUNS times (default 3), interleaved round by round so the
# slow decay of the socket table (TIME_WAIT lasts 60 s) and any machine noise
# hit every command alike. Wall time is taken with bash's EPOCHREALTIME around
# the command (microseconds; includes fork/exec of /usr/bin/time and sh, about
# 1-2 ms); peak RSS is GNU time's %M, the wait4() ru_maxrss of `sh -c CMD`,
# which is the largest of sh and everything it ran (so for `ss | wc` it is the
# larger of ss and wc). The report gives the median wall, the largest RSS and
# the ratios the design targets.
#
# TIME_WAIT sockets live 60 s, so measurements must fit in what remains after
# generation (~30 s at 1M). Before each command the script checks that the
# oldest sockets will not expire during it; if they would, it waits until the
# table is empty and generates it again. The table size is read before every
# timed command with `ss -s` (2 ms) and reported as a range.
#
# The tcplens rows are skipped with a message when ./cmd/tcplens does not
# build yet or a subcommand is missing. The host's namespace is never touched:
# sysctls are set inside the namespace, which is deleted on exit.
#
# Usage: sudo bash bench/run.sh            (N=1000000, RUNS=3)
#        sudo N=20000 bash bench/run.sh    (quick smoke check)
# Env:   N, RUNS, OUT (also write the markdown report there),
#        TCPLENS (use this prebuilt binary instead of building ./cmd/tcplens)
set -euo pipefail
export LC_ALL=C

N=${N:-1000000}
RUNS=${RUNS:-3}
OUT=${OUT:-}
TIMEOUT_S=120 # per timed command

SCRIPT=run.sh
. "$(dirname "$0")/lib.sh"

[[ $N =~ ^[0-9]+$ ]] || die "N must be a number, got '$N'"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, got '$RUNS'"
for c in ip ss go awk timeout; do
	command -v "$c" >/dev/null || die "$c not found"
done
if [[ ! -x /usr/bin/time ]]; then
	log "GNU time missing; installing it (apt-get install -y time)"
	apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y time >/dev/null; } ||
		die "could not install GNU time"
fi

cd "$(dirname "$0")/.."
NS=tl-bench-$$
WORK=$(mktemp -d /tmp/tl-bench.XXXXXX)

TWGEN_PID=
cleanup() {
	if [[ -n $TWGEN_PID ]]; then
		kill "$TWGEN_PID" 2>/dev/null || true
		wait "$TWGEN_PID" 2>/dev/null || true
	fi
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
bench_signals
sweep_stale tl-bench-

# ---- build ----------------------------------------------------------------
log "building bench/twgen and bench/rawcount"
go build -o "$WORK/twgen" ./bench/twgen
go build -o "$WORK/rawcount" ./bench/rawcount

TL=""
TL_NOTE=""
if [[ -n ${TCPLENS:-} ]]; then
	[[ -x $TCPLENS ]] || die "TCPLENS=$TCPLENS is not executable"
	TL=$TCPLENS
elif compgen -G "cmd/tcplens/*.go" >/dev/null; then
	log "building ./cmd/tcplens"
	if go build -o "$WORK/tcplens" ./cmd/tcplens 2>"$WORK/tcplens-build.log"; then
		TL=$WORK/tcplens
	else
		TL_NOTE="./cmd/tcplens does not build yet: $(grep -v '^#' "$WORK/tcplens-build.log" | grep -m1 . || true)"
	fi
else
	TL_NOTE="./cmd/tcplens has no Go files yet (the CLI is not written)"
fi
[[ -n $TL_NOTE ]] && log "tcplens rows skipped: $TL_NOTE"

# ---- namespace --------------------------------------------------------------
ip netns add "$NS"
ip -n "$NS" link set lo up

# Command table: id, label, shell command, accepted exit codes.
IDS=()
declare -A LABEL CMD OKRC NOTE
add() { IDS+=("$1"); LABEL[$1]=$2; CMD[$1]=$3; OKRC[$1]=$4; NOTE[$1]=""; }
add raw "rawcount (netlink, count by state, mask 0x1ffe)" "'$WORK/rawcount' -netns $NS > '$WORK/raw.out'" "0"
add raw1 "rawcount -one-walk (both families in one request)" "'$WORK/rawcount' -netns $NS -one-walk > /dev/null" "0"
add rawall "rawcount -states all (adds bit 13)" "'$WORK/rawcount' -netns $NS -states all > /dev/null" "0"
add sswc 'ss -tan | wc -l' "ss -N $NS -tan | wc -l > '$WORK/sswc.out'" "0"
add ss 'ss -tan > /dev/null' "ss -N $NS -tan > /dev/null" "0"
add summary "tcplens summary --json" "'$TL' summary --json --netns $NS > /dev/null" "0"
add sockets "tcplens sockets --json > /dev/null" "'$TL' sockets --json --netns $NS > /dev/null" "0"
add doctor "tcplens doctor --interval 0 --json" "'$TL' doctor --interval 0 --json --netns $NS > /dev/null" "0 1 2"

usage_error() { grep -qiE 'unknown (command|flag|shorthand)|invalid argument' "$1"; }

# A tcplens row runs only if the command works on the still-empty namespace.
for id in summary sockets doctor; do
	if [[ -z $TL ]]; then
		NOTE[$id]="pending: $TL_NOTE"
		continue
	fi
	rc=0
	timeout 30 sh -c "${CMD[$id]}" 2>"$WORK/probe.err" || rc=$?
	# doctor's exit 2 means findings, but the CLI also exits 2 on usage errors.
	if [[ " ${OKRC[$id]} " != *" $rc "* ]] || usage_error "$WORK/probe.err"; then
		NOTE[$id]="pending: probe on an empty namespace exited $rc: $(grep -m1 . "$WORK/probe.err" || true)"
		log "skipping ${LABEL[$id]}: ${NOTE[$id]}"
	fi
done


GEN_START=0
GEN_SECS=()
generate() {
	log "generating $N TIME_WAIT sockets in $NS"
	GEN_START=$(now_us)
	# In the background plus wait, so INT/TERM interrupt the wait at once and
	# cleanup stops twgen instead of waiting for it.
	timeout 150 "$WORK/twgen" -netns "$NS" -n "$N" -timeout 140s >"$WORK/twgen.out" &
	TWGEN_PID=$!
	wait "$TWGEN_PID" || die "generating the sockets failed (see twgen's message above)"
	TWGEN_PID=
	local end
	end=$(now_us)
	GEN_SECS+=("$(awk -v a="$GEN_START" -v b="$end" 'BEGIN{printf "%.1f", (b-a)/1e6}')")
	local tw
	tw=$(tw_count "$NS")
	log "generated in ${GEN_SECS[-1]} s; sockstat timewait=$tw"
	if ((${tw:-0} < N * 99 / 100)); then
		die "only $tw TIME_WAIT sockets after generating $N"
	fi
	# Let the kernel finish freeing the server-side sockets (RCU callbacks
	# run in kworkers for a moment after a burst), then one untimed dump
	# warms the caches the same way for every command.
	sleep 2
	"$WORK/rawcount" -netns "$NS" >"$WORK/warm.out"
	log "rawcount after generation: $(cat "$WORK/warm.out")"
}

# wait_empty waits until the TIME_WAIT sockets of the last generation expire.
wait_empty() {
	local i tw
	for ((i = 0; i < 90; i++)); do
		tw=$(tw_count "$NS")
		((${tw:-0} == 0)) && return 0
		sleep 1
	done
	die "TIME_WAIT sockets still present after 90 s"
}

generate

# ---- measure ------------------------------------------------------------------
declare -A WALLS RSSES EST
TW_MIN=-1
TW_MAX=0
SS_SAW=""
RAW_SAW=""
REGENS=0
MAX_REGENS=2 # a machine so busy that 1M sockets take ~60 s to create must not loop
DECAY_NOTE=""
# Initial guess of a command's duration before its first run: 5 s per 1M.
GUESS_US=$((N * 5 + 500000))

NIDS=${#IDS[@]}
for ((round = 1; round <= RUNS; round++)); do
	# Each round starts one command later, so no command always runs first.
	for ((j = 0; j < NIDS; j++)); do
		id=${IDS[$(((j + round - 1) % NIDS))]}
		[[ -n ${NOTE[$id]} ]] && continue
		est=${EST[$id]:-$GUESS_US}
		# The first sockets of the generation expire 60 s after GEN_START.
		if (($(now_us) + est + 1000000 > GEN_START + 60000000)) && ((REGENS >= MAX_REGENS)); then
			DECAY_NOTE="after $REGENS regenerations the table was still decaying during some runs (machine too busy?)"
		elif (($(now_us) + est + 1000000 > GEN_START + 60000000)); then
			log "TIME_WAIT sockets would expire during '${LABEL[$id]}': waiting for them to go, then regenerating"
			wait_empty
			generate
			REGENS=$((REGENS + 1))
		fi
		tw=$(tw_count "$NS")
		tw=${tw:-0}
		((TW_MIN < 0 || tw < TW_MIN)) && TW_MIN=$tw
		((tw > TW_MAX)) && TW_MAX=$tw
		t0=$(now_us)
		rc=0
		/usr/bin/time -f '%M %x' -o "$WORK/time.out" timeout "$TIMEOUT_S" sh -c "${CMD[$id]}" 2>"$WORK/cmd.err" || rc=$?
		t1=$(now_us)
		if [[ " ${OKRC[$id]} " != *" $rc "* ]] || usage_error "$WORK/cmd.err"; then
			NOTE[$id]="failed: exit $rc: $(grep -v '^Command exited' "$WORK/cmd.err" | grep -m1 . || true)"
			log "${LABEL[$id]}: ${NOTE[$id]}"
			continue
		fi
		dur=$((t1 - t0))
		rss=$(awk 'END{print $1}' "$WORK/time.out")
		WALLS[$id]+="$dur "
		RSSES[$id]+="$rss "
		((dur > ${EST[$id]:-0})) && EST[$id]=$dur
		case $id in
		sswc) SS_SAW+="$(($(cat "$WORK/sswc.out") - 1)) " ;;
		raw) RAW_SAW+="$(sed -n 's/.*"total":\([0-9]*\).*/\1/p' "$WORK/raw.out") " ;;
		esac
		log "round $round: $(printf '%-40s' "${LABEL[$id]}") $(awk -v d="$dur" 'BEGIN{printf "%.3f s", d/1e6}')  ${rss} KB  (tw=$tw)"
	done
done

# ---- report -------------------------------------------------------------------
median_us() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
max_of() { printf '%s\n' $1 | sort -n | tail -1; }
min_of() { printf '%s\n' $1 | sort -n | head -1; }
secs() { awk -v u="$1" 'BEGIN{printf "%.3f", u/1e6}'; }

declare -A MED MAXRSS
for id in "${IDS[@]}"; do
	[[ -n ${WALLS[$id]:-} && -z ${NOTE[$id]} ]] || continue
	MED[$id]=$(median_us "${WALLS[$id]}")
	MAXRSS[$id]=$(max_of "${RSSES[$id]}")
done

ratio() { # ratio NUM DEN -> a/b or "-"
	if [[ -n ${MED[$1]:-} && -n ${MED[$2]:-} ]]; then
		awk -v a="${MED[$1]}" -v b="${MED[$2]}" 'BEGIN{printf "%.2f", a/b}'
	else
		echo "-"
	fi
}
verdict() { # verdict VALUE OP LIMIT
	[[ $1 == "-" ]] && { echo "pending"; return; }
	awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN{ok = (op == "<=") ? (v <= l) : (v >= l); print ok ? "met" : "**missed**"}'
}

report() {
	local cpu
	cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
	echo "### tcplens benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- kernel: $(uname -r); $(nproc) CPUs ($cpu); $(ss -V | head -1)"
	echo "- sockets requested: $N TIME_WAIT (client side, IPv4 loopback) in a fresh namespace"
	echo "- generation time (bench/twgen): ${GEN_SECS[*]} s$( ((REGENS > 0)) && echo " (regenerated $REGENS time(s) to stay inside the 60 s TIME_WAIT window)")"
	echo "- table size during the timed runs (sockstat timewait): $TW_MIN .. $TW_MAX${DECAY_NOTE:+ ($DECAY_NOTE)}"
	echo "- sockets ss saw (ss -tan | wc -l, minus header), per run: ${SS_SAW:-n/a}"
	echo "- sockets rawcount saw, per run: ${RAW_SAW:-n/a}"
	echo "- runs per command: $RUNS, interleaved round by round (each round starts one command later); wall = median, RSS = max"
	echo
	echo "| command | median wall (s) | min .. max wall (s) | peak RSS (MB) |"
	echo "|---|---:|---:|---:|"
	local id
	for id in "${IDS[@]}"; do
		if [[ -n ${MED[$id]:-} ]]; then
			printf '| `%s` | %s | %s .. %s | %s |\n' "${LABEL[$id]//|/\\|}" "$(secs "${MED[$id]}")" \
				"$(secs "$(min_of "${WALLS[$id]}")")" "$(secs "$(max_of "${WALLS[$id]}")")" \
				"$(awk -v k="${MAXRSS[$id]}" 'BEGIN{printf "%.1f", k/1024}')"
		else
			printf '| `%s` | %s | | |\n' "${LABEL[$id]//|/\\|}" "${NOTE[$id]//|/\\|}"
		fi
	done
	echo
	local r_sum r_ss r_sock r_doc rss_sum
	r_sum=$(ratio summary raw)
	r_ss=$(ratio sswc raw)
	r_sock=$(ratio sockets ss)
	r_doc=$(ratio doctor summary)
	rss_sum="-"
	[[ -n ${MAXRSS[summary]:-} ]] && rss_sum=$(awk -v k="${MAXRSS[summary]}" 'BEGIN{printf "%.1f", k/1024}')
	echo "| ratio | value | target | verdict |"
	echo "|---|---:|---|---|"
	echo "| summary / raw (wall) | $r_sum | <= 1.3 | $(verdict "$r_sum" "<=" 1.3) |"
	echo "| ss -tan \\| wc -l / raw (wall) | $r_ss | >= 2.0 (raw dump at least 2x faster than ss) | $(verdict "$r_ss" ">=" 2.0) |"
	echo "| sockets --json / ss -tan (wall, both to /dev/null) | $r_sock | <= 1.0 | $(verdict "$r_sock" "<=" 1.0) |"
	echo "| summary peak RSS (MB) | $rss_sum | <= 64 | $(verdict "$rss_sum" "<=" 64) |"
	echo "| doctor / summary (wall) | $r_doc | (informational) | |"
	echo "| raw -one-walk / raw (wall) | $(ratio raw1 raw) | (informational: one walk of the socket hash instead of two) | |"
	echo "| summary / raw -one-walk (wall) | $(ratio summary raw1) | (informational: tcplens against the floor of its own request) | |"
	echo "| raw with -states all / raw (wall) | $(ratio rawall raw) | (informational: cost of TCP_BOUND_INACTIVE, bit 13) | |"
}

report >"$WORK/report.md"
echo
cat "$WORK/report.md"
if [[ -n $OUT ]]; then
	cp "$WORK/report.md" "$OUT"
	log "report written to $OUT"
fi
