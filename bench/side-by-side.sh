#!/bin/bash
# Side-by-side A/B of two servers' CPU cost per request, immune to this machine's drift.
#
#   CA="server command A" CB="server command B" bash bench/side-by-side.sh
#
# Each command must start a server with ONE worker and print a line with "ready" or "listening on"
# and its http://127.0.0.1:PORT. Both run at once: their worker processes (the children of each
# command's process) are pinned to CPU 1, where they split the CPU fairly; the two parents and two
# wrk clients run on CPU 0, both loading at the same time. So the per-round ratio reqs(A)/reqs(B)
# is the inverse ratio of their CPU cost per request, and whatever slows the machine slows both.
# Interleaved A/B runs here swing +-10% per round; this gives +-2-3% per round and, over PAIRS
# fresh process pairs (JIT outcomes differ per process), a pooled median good to about 2%.
#
# Env: PAIRS (3) fresh process pairs, ROUNDS (6) rounds of DUR (3) s each, C (50) connections,
# P (/) path, WRKARGS extra wrk arguments (e.g. "-s close.lua" for a new connection per request).
# Needs wrk and taskset (util-linux) and 2 CPUs. Ends the processes it started, by pid.
set -u
PAIRS=${PAIRS:-3}; ROUNDS=${ROUNDS:-6}; DUR=${DUR:-3}; C=${C:-50}; P=${P:-/}; WRKARGS=${WRKARGS:-}
: "${CA:?set CA to server command A}" "${CB:?set CB to server command B}"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
ratios=()

url() { grep -oE "http://127\.0\.0\.1:[0-9]+" "$1" | head -1; }

for pair in $(seq 1 "$PAIRS"); do
  (exec taskset -c 0 bash -c "$CA" > "$work/a.out" 2>&1) & pa=$!
  (exec taskset -c 0 bash -c "$CB" > "$work/b.out" 2>&1) & pb=$!
  for _ in $(seq 1 100); do grep -qE "ready|listening on" "$work/a.out" && grep -qE "ready|listening on" "$work/b.out" && break; sleep 0.2; done
  ua=$(url "$work/a.out"); ub=$(url "$work/b.out")
  if [ -z "$ua" ] || [ -z "$ub" ]; then echo "pair $pair: a server did not start:"; cat "$work/a.out" "$work/b.out"; kill "$pa" "$pb" 2>/dev/null; exit 1; fi
  for w in $(pgrep -P "$pa") $(pgrep -P "$pb"); do taskset -pc 1 "$w" > /dev/null; done
  # shellcheck disable=SC2086 # WRKARGS is a list of words
  { taskset -c 0 wrk -t1 -c"$C" $WRKARGS -d1s "$ua$P" > /dev/null & w=$!; taskset -c 0 wrk -t1 -c"$C" $WRKARGS -d1s "$ub$P" > /dev/null; wait $w; }
  line="pair $pair:"
  for _ in $(seq 1 "$ROUNDS"); do
    # shellcheck disable=SC2086
    { taskset -c 0 wrk -t1 -c"$C" $WRKARGS -d"${DUR}s" "$ua$P" > "$work/wa" & w=$!; taskset -c 0 wrk -t1 -c"$C" $WRKARGS -d"${DUR}s" "$ub$P" > "$work/wb"; wait $w; }
    na=$(awk '/requests in/{print $1}' "$work/wa"); nb=$(awk '/requests in/{print $1}' "$work/wb")
    r=$(awk -v a="$na" -v b="$nb" 'BEGIN{ if (b > 0) printf "%.3f", a / b; else print "nan" }')
    ratios+=("$r"); line="$line $r"
  done
  kill "$pa" "$pb" 2>/dev/null; wait "$pa" "$pb" 2>/dev/null; sleep 1
  echo "$line"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END{printf "A/B requests per CPU, pooled over %d rounds: median %s (quartiles %s-%s)\n", NR, a[int((NR+1)/2)], a[int((NR+3)/4)], a[int((3*NR+1)/4)]}'
