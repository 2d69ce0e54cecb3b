#!/usr/bin/env bash
# Redis's restart time for the data set of benches/benches/recovery.rs, for comparison:
# 1M keys of 16 bytes ("key:" + 12 digits, as segkv_benches::key) with 32-byte values,
# loaded with `redis-cli --pipe`, saved with SAVE, then redis-server is restarted RUNS times
# on that dump and the time of each load is read from its log line
# "DB loaded from disk: X seconds".
#
# Usage: benches/scripts/redis_rdb_load.sh [RUNS]   (needs redis-server, redis-cli, python3)
# Env:   PORT (default 6399, loopback only), KEYS (default 1000000), WORKDIR (default: mktemp -d).
# Not part of any test.
set -euo pipefail

RUNS=${1:-5}
PORT=${PORT:-6399}
KEYS=${KEYS:-1000000}
WORKDIR=${WORKDIR:-$(mktemp -d)}
pid=

cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid"
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

start() {
    : >"$WORKDIR/redis.log"
    redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORKDIR" --dbfilename dump.rdb \
        --save "" --appendonly no --logfile "$WORKDIR/redis.log" --daemonize no &
    pid=$!
    for _ in $(seq 1 600); do
        if redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; then
            return 0
        fi
        sleep 0.05
    done
    echo "redis-server did not answer on port $PORT" >&2
    exit 1
}

stop() {
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
    pid=
}

echo "redis: $(redis-server --version)"
echo "workdir: $WORKDIR"
rm -f "$WORKDIR/dump.rdb"
start
t0=$(date +%s.%N)
python3 - "$KEYS" <<'PY' | redis-cli -p "$PORT" --pipe >/dev/null
import base64, random, sys
n = int(sys.argv[1])
rnd = random.Random(42)
out = sys.stdout.buffer
buf = []
for i in range(n):
    k = b"key:%012d" % i
    v = base64.b64encode(rnd.randbytes(24))  # 32 bytes
    buf.append(b"*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$32\r\n%s\r\n" % (k, v))
    if len(buf) == 10000:
        out.write(b"".join(buf))
        buf.clear()
out.write(b"".join(buf))
PY
t1=$(date +%s.%N)
echo "loaded $(redis-cli -p "$PORT" dbsize) keys with redis-cli --pipe in $(echo "$t1 - $t0" | bc) s"
redis-cli -p "$PORT" save >/dev/null
echo "dump.rdb: $(stat -c %s "$WORKDIR/dump.rdb") bytes; used_memory: $(redis-cli -p "$PORT" info memory | grep '^used_memory:' | tr -d '\r')"
stop

for r in $(seq 1 "$RUNS"); do
    start
    line=$(grep -m1 "DB loaded from disk" "$WORKDIR/redis.log" || true)
    keys=$(redis-cli -p "$PORT" dbsize)
    echo "run $r: $keys keys; ${line##*DB loaded from disk: }"
    stop
done
rm -rf "$WORKDIR"
