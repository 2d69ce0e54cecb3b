#!/usr/bin/env bash
# One full sync timed by hand: a fresh replica of the segkv primary already running on
# PRIMARY_PORT (default 7101), from its start until INFO says the link is up and the sync is
# done; then CPU seconds per thread of both processes over the sync (from /proc).
#   target/release/segkv-server --port 7101 --dir /tmp/fp &     # a primary with its data
#   benches/scripts/full_sync_by_hand.sh
set -u
B=${SEGKV_BIN:-$(dirname "$0")/../../target/release/segkv-server}
PP=${PRIMARY_PORT:-7101}
RP=${REPLICA_PORT:-7102}
RD=$(mktemp -d /tmp/segkv-fullsync.XXXXXX)
thr() { for t in /proc/$1/task/*; do echo "$(cat "$t"/comm) $(awk '{print $14+$15}' "$t"/stat)"; done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort; }
P1=$(pgrep -f -- "--port $PP" | head -1)
thr "$P1" > "$RD/before"
S=$(date +%s.%N)
"$B" --port "$RP" --dir "$RD/data" --replicaof 127.0.0.1 "$PP" > "$RD/replica.log" 2>&1 &
P2=$!
sleep 0.05
until redis-cli -p "$RP" info replication 2>/dev/null | grep -q "master_link_status:up" \
    && redis-cli -p "$RP" info replication | grep -q "master_sync_in_progress:0"; do sleep 0.005; done
E=$(date +%s.%N)
BYTES=$(redis-cli -p "$PP" info stats | awk -F: '/segkv_log_data_bytes/ {print $2+0}')
echo "full sync of $BYTES bytes took $(echo "$E - $S" | bc) s"
thr "$P1" > "$RD/after1"; thr "$P2" > "$RD/after2"
echo "primary CPU s:"; join -a2 "$RD/before" "$RD/after1" | awk '{d=$NF-(NF==2?0:$2); if (d>0) print "  "$1, d/100}'
echo "replica CPU s:"; awk '{if ($2>0) print "  "$1, $2/100}' "$RD/after2"
kill "$P2"; wait "$P2" 2>/dev/null
[ -n "${KEEP:-}" ] || rm -rf "$RD"
