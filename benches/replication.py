#!/usr/bin/env python3
"""Replication figures for issue 6, segkv beside Redis 7 on this machine.

Each round runs both servers (order alternating per round, so drift hits both alike), each
time on fresh data directories and free local ports:

  full sync   a primary loaded with --keys keys of --value bytes (redis-benchmark SET -r, so
              about keys * (1 - 1/e) distinct keys), then a replica started with replicaof.
              Once the primary is idle (segkv cleans the load's overwrites first), time from
              the replica's start until it reports the sync done (segkv: INFO
              master_sync_in_progress:0 with master_link_status:up; Redis the same), and the
              rate over the primary's data (segkv: its log bytes; Redis: used_memory_dataset).
              Then a second replica syncs while redis-benchmark GET (-c 50) runs on the
              primary; its p99 is compared with the same run at rest just before (both
              replicas run on this machine too). Targets: >= 500 MB/s, p99 during <= 2x.
  lag         primary + synced replica; redis-benchmark SET (-c 50 -P --pipeline -d 100) loads the
              primary while a probe SETs a fresh key on the primary every 10 ms and times how
              long after the primary's reply the replica returns it (GET every 0.2 ms, so the
              polling itself does not keep a replica core busy). Target: p99 <= 5 ms.

segkv runs with appendfsync everysec (its default); Redis with --save '' --appendonly no
(its replicas get an RDB streamed over the socket: repl-diskless-sync yes, its default).

usage: benches/replication.py [--rounds 2] [--keys 1000000] [--value 1000] [--probes 500] [--pipeline 1]
                              [--no-build] [--segkv-bin PATH] [--only full|lag]
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from procstat import wait_idle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn:
    """A minimal RESP client: enough for INFO, SET, GET."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self.read()

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(1 << 16)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                d = self.s.recv(1 << 16)
                if not d:
                    raise ConnectionError("closed")
                self.buf += d
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"bad reply {line!r}")

    def info(self, section=""):
        text = self.call("INFO", section).decode()
        return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)


class Server:
    def __init__(self, kind, args, tmp, name, extra=()):
        self.kind, self.port = kind, free_port()
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        if kind == "segkv":
            argv = [args.segkv_bin, "--port", str(self.port), "--dir", self.dir,
                    *args.segkv_extra.split()]
        else:
            argv = ["redis-server", "--port", str(self.port), "--dir", self.dir, "--save", "",
                    "--appendonly", "no"]
        self.logf = open(os.path.join(tmp, name + ".log"), "wb")
        self.p = subprocess.Popen(argv + list(extra), stdout=self.logf, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        for _ in range(2000):
            try:
                c = Conn(self.port)
                c.call("PING")
                c.s.close()
                return
            except (OSError, RuntimeError):
                if self.p.poll() is not None:
                    raise RuntimeError(f"{kind} exited: see {self.logf.name}")
                time.sleep(0.005)
        raise RuntimeError(f"{kind} did not start")

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.logf.close()


def bench(port, *opts):
    """redis-benchmark --csv: returns its row as a dict (p99_latency_ms, rps, ...)."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "--csv", *opts],
                         capture_output=True, text=True, check=True).stdout
    rows = [l.replace('"', "").split(",") for l in out.strip().splitlines()]
    return dict(zip(rows[0], rows[-1]))


def load(port, args):
    subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-t", "set", "-n", str(args.keys),
                    "-r", str(args.keys), "-d", str(args.value), "-P", "32", "-c", "8"],
                   capture_output=True, check=True)


def data_bytes(kind, c):
    if kind == "segkv":
        return int(c.info("stats")["segkv_log_data_bytes"])
    return int(c.info("memory")["used_memory_dataset"])


def synced(c):
    i = c.info("replication")
    return i.get("master_link_status") == "up" and i.get("master_sync_in_progress") == "0"


def sync_replica(kind, args, tmp, name, primary, extra):
    """Starts a replica of `primary`; returns (it, seconds from its start until it is synced)."""
    r = Server(kind, args, tmp, name, extra + ["--replicaof", "127.0.0.1", str(primary.port)])
    rc = Conn(r.port)
    while not synced(rc):
        time.sleep(0.002)
    return r, rc, time.monotonic() - r.started


def full_sync(kind, args, tmp):
    extra = ["--appendfsync", "everysec"] if kind == "segkv" else []
    p = Server(kind, args, tmp, f"{kind}-primary", extra)
    try:
        load(p.port, args)
        wait_idle(p.p.pid)
        pc = Conn(p.port)
        size = data_bytes(kind, pc)
        # The rate: a replica syncing on an otherwise idle machine.
        r, rc, took = sync_replica(kind, args, tmp, f"{kind}-replica", p, extra)
        ok = rc.call("DBSIZE") == pc.call("DBSIZE")
        r.stop()
        # The primary's GET p99 at rest, then while a second replica syncs.
        n = str(args.get_requests)
        gets = ["-t", "get", "-n", n, "-r", str(args.keys), "-c", "50"]
        rest = bench(p.port, *gets)
        result = {}

        def during():
            result["b"] = bench(p.port, *gets)

        t = threading.Thread(target=during)
        t.start()
        time.sleep(0.2)
        r2, _, took2 = sync_replica(kind, args, tmp, f"{kind}-replica2", p, extra)
        t.join()
        r2.stop()
        return {"bytes": size, "seconds": took, "mb_s": size / took / 1e6,
                "seconds_loaded": took2, "p99_rest": float(rest["p99_latency_ms"]),
                "p99_sync": float(result["b"]["p99_latency_ms"]), "same_dbsize": ok}
    finally:
        p.stop()


def lag(kind, args, tmp):
    extra = ["--appendfsync", "everysec"] if kind == "segkv" else []
    p = Server(kind, args, tmp, f"{kind}-primary", extra)
    r = Server(kind, args, tmp, f"{kind}-replica", extra + ["--replicaof", "127.0.0.1",
                                                            str(p.port)])
    try:
        rc, pc = Conn(r.port), Conn(p.port)
        while not synced(rc):
            time.sleep(0.01)
        load_proc = subprocess.Popen(
            ["redis-benchmark", "-p", str(p.port), "-q", "-t", "set", "-n", "100000000",
             "-r", "1000000", "-d", "100", "-P", str(args.pipeline), "-c", str(args.clients)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        lags = []
        try:
            for i in range(args.probes):
                k = b"probe:%d" % i
                pc.call("SET", k, i)
                t0 = time.perf_counter()
                deadline = t0 + 5
                while rc.call("GET", k) != str(i).encode():
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{kind}: probe {i} not on the replica after 5 s")
                    # Poll gently: a tight loop would keep a replica core busy answering.
                    time.sleep(args.poll)
                lags.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.01)
        finally:
            load_proc.terminate()
            load_proc.wait()
        lags.sort()
        q = lambda f: lags[min(len(lags) - 1, int(f * len(lags)))]
        sets = int(pc.info("stats")["total_commands_processed"])
        return {"p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": lags[-1], "commands": sets}
    finally:
        r.stop()
        p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value", type=int, default=1000)
    ap.add_argument("--get-requests", type=int, default=300_000)
    ap.add_argument("--probes", type=int, default=500)
    ap.add_argument("--pipeline", type=int, default=1, help="redis-benchmark -P of the SET load")
    ap.add_argument("--poll", type=float, default=0.0002, help="seconds between the probe's GETs")
    ap.add_argument("--only", choices=["full", "lag"])
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--segkv-bin", default=os.path.join(ROOT, "target/release/segkv-server"))
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--segkv-extra", default="", help="more segkv-server options")
    ap.add_argument("--clients", type=int, default=50, help="redis-benchmark -c of the SET load")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "segkv-server"], cwd=ROOT,
                       check=True)
    results = {}
    for rnd in range(args.rounds):
        order = ("segkv", "redis") if rnd % 2 == 0 else ("redis", "segkv")
        for kind in order:
            for what, fn in (("full", full_sync), ("lag", lag)):
                if args.only and args.only != what:
                    continue
                tmp = tempfile.mkdtemp(prefix=f"segkv-repl-{kind}-", dir=args.tmp)
                try:
                    res = fn(kind, args, tmp)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                log(f"round {rnd + 1} {kind} {what}: " +
                    ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in res.items()))
                results.setdefault((what, kind), []).append(res)
    for what in ("full", "lag"):
        rows = {k: v for (w, k), v in results.items() if w == what}
        if not rows:
            continue
        print(f"\n{what}: median of {args.rounds} rounds")
        fields = [f for f in rows["segkv"][0] if not isinstance(rows["segkv"][0][f], bool)]
        print(f"{'':12}" + "".join(f"{f:>14}" for f in fields))
        for kind, rs in rows.items():
            print(f"{kind:12}" + "".join(
                f"{statistics.median(r[f] for r in rs):>14.3f}" for f in fields))
        if what == "full":
            for kind, rs in rows.items():
                ratio = statistics.median(r["p99_sync"] / r["p99_rest"] for r in rs)
                print(f"{kind}: GET p99 during full sync / at rest = {ratio:.2f}x")


if __name__ == "__main__":
    main()
