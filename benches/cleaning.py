#!/usr/bin/env python3
"""segkv-server beside redis-server for issue 4: segment cleaner, active expiry, eviction.

Each scenario starts one server at a time on a fresh data directory and a free local port
(redis-server --save '' --appendonly no; segkv-server --appendfsync no), runs the same steps
against it, stops it and deletes the directory. The order alternates per round (segkv first in
odd rounds, redis first in even ones) so drift on the machine hits both alike. Per-round figures
go to stderr; at the end one table per scenario prints the median over the rounds and the
segkv/redis ratio. RSS is VmRSS (and RssAnon / RssFile) of /proc/PID/status, disk is
`du -s -B1` (allocated bytes) of the data directory. Data is loaded through a raw-socket RESP
pipeline; keys are `key:` plus 12 digits (16 bytes, the names redis-benchmark -r uses).

Scenarios (--scenario, default all):
  memory     RSS growth per key after SETting --keys keys (32 B values), and after a pipelined GET
             of every key (segkv's sealed data lives in file mmaps that count in RSS only once
             touched). Target: segkv <= 0.5x redis.
  ttl-wave   --keys/10 persistent keys, then --keys keys with SET k v EX 4. DBSIZE and RSS every
             100 ms until 12 s after the last deadline: time from the last deadline until DBSIZE
             is back at the persistent count (target segkv <= 1 s), share of the wave's RSS
             (peak - RSS before the wave) returned within 5 s of it (target >= 90%). A second
             wave on a fresh server measures redis-benchmark GET p99 at rest and during the
             expiry window (target <= 2x); it is separate so the 50 benchmark clients do not
             slow the expiry being timed.
  overwrite  --keys keys of 256 B, then --duration s of redis-benchmark -t set -r KEYS -d 256
             -P 16 -c 50; RSS, disk and the server's total_commands_processed every second. Max
             RSS and disk over live data (keys x (16 + 256 + 12) bytes: 12 is segkv's record
             header), SET ops/s in the first 10 s against the rest. Then, once the server is
             idle, redis-benchmark GET p99 (--bench-n requests) at rest, and again right after
             half the keys are rewritten once (garbage in every segment): GET p99 while the
             cleaner reclaims it, copying the other half, with no client writing (target <= 2x).
  zipf       read-through cache at maxmemory 64mb (scaled by --keys/1M), allkeys-lru and
             allkeys-lfu: Zipf(0.99) over --keys keys (fixed seed), GET, and SET 100 B on a
             miss, in batches; hit ratio over --zipf-requests after --zipf-warmup requests, RSS
             against maxmemory.
  skew       --keys keys of --zipf-value-size B loaded once, then --skew-writes SETs (default 6 x
             keys) of Zipf(0.99) keys, pipelined: write amplification (cleaner copies / client
             bytes), max RSS and disk against the live data. Hot keys' records die young, cold
             keys' stay: where LFS's cost-benefit rule is meant to copy less than oldest-first
             (a build with it copied 2-4% less; it was reverted, see benches/README.md).

usage: benches/cleaning.py [--scenario all|memory|ttl-wave|overwrite|zipf|skew] [--rounds 2]
                           [--keys 1000000] [--duration 60] [--no-build]
"""
import argparse
import bisect
import itertools
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from procstat import wait_idle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS = ("segkv", "redis")
RECORD_HEADER = 12  # segkv record header: commit word, CRC, kind, keyspace, reserved, key length


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def key(i):
    return b"key:%012d" % i


# ---------------------------------------------------------------- RESP client

class RespError(Exception):
    pass


class Incomplete(Exception):
    pass


def parse_one(buf, pos):
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    t = buf[pos]
    if t == 43:  # +
        return bytes(buf[pos + 1:end]), end + 2
    if t == 45:  # -
        return RespError(bytes(buf[pos + 1:end]).decode(errors="replace")), end + 2
    if t == 58:  # :
        return int(buf[pos + 1:end]), end + 2
    if t == 36:  # $
        n = int(buf[pos + 1:end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise Incomplete
        return bytes(buf[end + 2:stop]), stop + 2
    if t == 42:  # *
        n = int(buf[pos + 1:end])
        pos = end + 2
        if n < 0:
            return None, pos
        out = []
        for _ in range(n):
            v, pos = parse_one(buf, pos)
            out.append(v)
        return out, pos
    raise RuntimeError(f"bad reply byte {t!r} at {pos}: {bytes(buf[pos:pos + 40])!r}")


def command(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    """One connection; pipeline() writes and reads at the same time (select), so a batch of any
    size cannot deadlock against the server's output limit."""

    def __init__(self, port, timeout=120):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.setblocking(False)
        self.timeout = timeout

    def close(self):
        self.s.close()

    def pipeline(self, data, n, expect=None):
        """Sends `data` (n commands) and returns their n replies. With `expect` (the exact reply
        bytes when all goes well) it only compares bytes and returns None; on the first
        difference it falls back to parsing and raises on an error reply."""
        s = self.s
        mv = memoryview(data)
        sent = 0
        buf = bytearray()
        got = 0  # expect mode: bytes matched so far
        replies = None if expect is not None else []
        pos = 0
        while True:
            if replies is None:
                if got == len(expect):
                    return None
            elif len(replies) == n:
                return replies
            r, w, _ = select.select([s], [s] if sent < len(data) else [], [], self.timeout)
            if not r and not w:
                raise TimeoutError(f"no reply within {self.timeout} s")
            if w:
                try:
                    sent += s.send(mv[sent:sent + (1 << 20)])
                except BlockingIOError:
                    pass
            if r:
                try:
                    chunk = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ConnectionError("server closed the connection")
                if replies is None:
                    if expect[got:got + len(chunk)] == chunk:
                        got += len(chunk)
                        continue
                    buf = bytearray(expect[:got])  # what matched, then parse from the start
                    replies = []
                buf += chunk
                try:
                    while len(replies) < n:
                        v, pos = parse_one(buf, pos)
                        replies.append(v)
                except Incomplete:
                    pass
                if pos > (1 << 20):
                    del buf[:pos]
                    pos = 0
                if expect is not None:
                    for v in replies:
                        if isinstance(v, RespError):
                            raise v
                    if len(replies) == n:
                        raise RuntimeError(f"unexpected replies, e.g. {replies[:3]!r}")

    def call(self, *args):
        (v,) = self.pipeline(command(*args), 1)
        if isinstance(v, RespError):
            raise v
        return v

    def info(self, section=None):
        text = self.call("INFO", section) if section else self.call("INFO")
        return text.decode()


def info_fields(text):
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def load(conn, start, count, vsize, ex=None, batch=10000):
    """SET key(start..start+count) to vsize bytes of 'x'. Returns (first ack, last ack) times."""
    val = b"x" * vsize
    if ex is None:
        tmpl = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$" + b"%d\r\n" % vsize + val + b"\r\n"
    else:
        exs = b"%d" % ex
        tmpl = (b"*5\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$" + b"%d\r\n" % vsize + val
                + b"\r\n$2\r\nEX\r\n$%d\r\n%s\r\n" % (len(exs), exs))
    first = last = None
    for b0 in range(start, start + count, batch):
        b1 = min(b0 + batch, start + count)
        n = b1 - b0
        conn.pipeline(b"".join([tmpl % i for i in range(b0, b1)]), n, expect=b"+OK\r\n" * n)
        last = time.monotonic()
        if first is None:
            first = last
    return first, last


def read_all(conn, start, count, vsize, batch=10000):
    """GET every key; every reply must be the value load() wrote."""
    tmpl = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:%012d\r\n"
    reply = b"$%d\r\n" % vsize + b"x" * vsize + b"\r\n"
    for b0 in range(start, start + count, batch):
        b1 = min(b0 + batch, start + count)
        conn.pipeline(b"".join([tmpl % i for i in range(b0, b1)]), b1 - b0, expect=reply * (b1 - b0))


# ---------------------------------------------------------------- servers and measurements

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def rss(pid):
    return proc_status(pid)["VmRSS"]


def du(path):
    r = subprocess.run(["du", "-s", "-B1", path], capture_output=True, text=True)
    try:
        return int(r.stdout.split()[0])
    except (IndexError, ValueError):
        return 0


class Server:
    def __init__(self, name, args, tmp):
        self.name = name
        self.tmp = tmp
        self.dir = os.path.join(tmp, "data")
        os.makedirs(self.dir)
        self.port = free_port()
        self.logpath = os.path.join(tmp, "server.log")
        if name == "segkv":
            argv = [args.segkv_bin, "--port", str(self.port), "--dir", self.dir,
                    "--appendfsync", "no"]
            if args.threads:
                argv += ["--threads", str(args.threads)]
            argv += shlex.split(args.segkv_args)
        else:
            argv = ["redis-server", "--port", str(self.port), "--dir", self.dir,
                    "--save", "", "--appendonly", "no"] + shlex.split(args.redis_args)
        self.argv = argv

    def start(self, extra=()):
        self.argv += list(extra)
        self.logf = open(self.logpath, "wb")
        self.p = subprocess.Popen(self.argv, stdout=self.logf, stderr=subprocess.STDOUT)
        self.pid = self.p.pid
        for _ in range(1000):
            if self.p.poll() is not None:
                self.logf.close()
                with open(self.logpath, errors="replace") as f:
                    tail = f.read()[-2000:]
                raise RuntimeError(f"{self.name} exited with status {self.p.returncode}: {tail}")
            try:
                c = Conn(self.port)
                if c.call("PING") == b"PONG":
                    c.close()
                    return self
                c.close()
            except (OSError, RespError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} on port {self.port} did not answer PING")

    def conn(self):
        return Conn(self.port)

    def rss(self):
        return rss(self.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()


def run_server(name, args, fn, extra=()):
    tmp = tempfile.mkdtemp(prefix=f"segkv-cleaning-{name}-", dir=args.tmp)
    srv = Server(name, args, tmp)
    try:
        srv.start(extra)
        return fn(srv)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class Sampler(threading.Thread):
    """Samples every `interval` s on its own connection: time (after the reply), and what
    `fields` asks for: dbsize, rss (+anon/file), disk, cmds (total_commands_processed)."""

    def __init__(self, srv, interval, fields):
        super().__init__(daemon=True)
        self.srv, self.interval, self.fields = srv, interval, fields
        self.samples = []
        self.halt = threading.Event()
        self.error = None
        self.t0 = time.monotonic()

    def sample(self, c):
        s = {}
        if "dbsize" in self.fields:
            s["dbsize"] = c.call("DBSIZE")
        if "cmds" in self.fields:
            s["cmds"] = int(info_fields(c.info("stats"))["total_commands_processed"])
        s["t"] = time.monotonic()
        if "rss" in self.fields:
            st = proc_status(self.srv.pid)
            s["rss"], s["anon"], s["file"] = st["VmRSS"], st["RssAnon"], st["RssFile"]
        if "disk" in self.fields:
            s["disk"] = du(self.srv.dir)
        return s

    def run(self):
        try:
            c = self.srv.conn()
            k = 0
            while not self.halt.is_set():
                self.samples.append(self.sample(c))
                k += 1
                delay = self.t0 + k * self.interval - time.monotonic()
                if delay > 0:
                    self.halt.wait(delay)
            c.close()
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.halt.set()
        self.join()
        if self.error:
            raise self.error
        return self.samples


def first_at(samples, t):
    """The first sample taken at or after t (else the last one)."""
    for s in samples:
        if s["t"] >= t:
            return s
    return samples[-1]


def cleaner_bytes_copied(c):
    for line in c.info().splitlines():
        if line.startswith("segkv_cleaner_bytes_copied:"):
            return int(line.split(":", 1)[1])
    return 0


def bench_get_p99(port, n, keyspace):
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-t", "get", "-n", str(n), "-r", str(keyspace),
         "-P", "1", "-c", "50", "--csv"], check=True, capture_output=True, text=True).stdout
    lines = [l for l in out.splitlines() if l.strip()]
    head = [c.strip('"') for c in lines[0].split(",")]
    for line in lines[1:]:
        cells = [c.strip('"') for c in line.split(",")]
        if cells[0] == "GET":
            row = dict(zip(head, cells))
            return float(row["p99_latency_ms"]), float(row["rps"])
    raise RuntimeError(f"no GET line in redis-benchmark output: {out!r}")


MB = 1 << 20


# ---------------------------------------------------------------- scenarios

def sc_memory(args):
    k = args.keys

    def fn(srv):
        c = srv.conn()
        time.sleep(0.5)
        s0 = proc_status(srv.pid)
        t = time.monotonic()
        load(c, 0, k, 32)
        load_s = time.monotonic() - t
        time.sleep(1)
        s1 = proc_status(srv.pid)
        t = time.monotonic()
        read_all(c, 0, k, 32)
        read_s = time.monotonic() - t
        time.sleep(0.5)
        s2 = proc_status(srv.pid)
        dbsize = c.call("DBSIZE")
        c.close()
        if dbsize != k:
            raise RuntimeError(f"DBSIZE {dbsize}, expected {k}")
        r = {
            "rss0": s0["VmRSS"] / MB,
            "load": (s1["VmRSS"] - s0["VmRSS"]) / k,
            "read": (s2["VmRSS"] - s0["VmRSS"]) / k,
            "anon_read": (s2["RssAnon"] - s0["RssAnon"]) / k,
            "file_read": (s2["RssFile"] - s0["RssFile"]) / k,
            "disk": du(srv.dir) / k,
            "load_s": load_s, "read_s": read_s,
        }
        log(f"  memory {srv.name:<5} RSS {s0['VmRSS'] / MB:.1f} MiB -> {s1['VmRSS'] / MB:.1f} after load "
            f"({load_s:.1f} s) -> {s2['VmRSS'] / MB:.1f} after the read pass ({read_s:.1f} s); "
            f"per key {r['load']:.1f} / {r['read']:.1f} B (anon {r['anon_read']:.1f}, file {r['file_read']:.1f})")
        return r
    return fn


def sc_ttl_wave(args):
    wave = args.keys
    persist = max(1, args.keys // 10)
    ttl = 4

    def clean_wave(srv):
        c = srv.conn()
        load(c, 0, persist, 32)
        time.sleep(1)
        base = srv.rss()
        smp = Sampler(srv, 0.1, ("dbsize", "rss"))
        smp.start()
        t0 = smp.t0
        first, last = load(c, persist, wave, 32, ex=ttl)
        first_deadline, last_deadline = first + ttl, last + ttl
        while time.monotonic() < last_deadline + 12:
            time.sleep(0.1)
        samples = smp.stop()
        c.close()
        peak = max(s["rss"] for s in samples)
        at5 = first_at(samples, last_deadline + 5)
        end = samples[-1]
        clear = next((s["t"] - last_deadline for s in samples
                      if s["t"] >= first_deadline and s["dbsize"] <= persist), None)
        wave_rss = peak - base
        r = {
            "load_s": last - t0,
            "clear_s": clear if clear is not None else float("inf"),
            "dbsize_end": end["dbsize"],
            "base_mb": base / MB, "peak_mb": peak / MB, "at5_mb": at5["rss"] / MB,
            "end_mb": end["rss"] / MB,
            "returned5": 100.0 * (peak - at5["rss"]) / wave_rss if wave_rss > 0 else float("nan"),
            "returned12": 100.0 * (peak - end["rss"]) / wave_rss if wave_rss > 0 else float("nan"),
        }
        # DBSIZE at whole seconds after the last deadline, for the log
        marks = " ".join(f"+{d}s:{first_at(samples, last_deadline + d)['dbsize']}"
                         for d in (0, 1, 2, 4, 6, 8, 10, 12))
        log(f"  ttl-wave {srv.name:<5} load {r['load_s']:.2f} s; cleared "
            f"{'never' if clear is None else f'{clear:+.2f} s'} after the last deadline; DBSIZE {marks}")
        log(f"  ttl-wave {srv.name:<5} RSS MiB: before wave {r['base_mb']:.1f}, peak {r['peak_mb']:.1f}, "
            f"+5 s {r['at5_mb']:.1f}, +12 s {r['end_mb']:.1f}; returned {r['returned5']:.0f}% by +5 s, "
            f"{r['returned12']:.0f}% by +12 s")
        return r

    def latency_wave(srv):
        c = srv.conn()
        load(c, 0, persist, 32)
        time.sleep(0.5)
        rest, rest_rps = bench_get_p99(srv.port, args.bench_n, persist)
        time.sleep(0.5)
        smp = Sampler(srv, 0.1, ("dbsize",))
        smp.start()
        first, last = load(c, persist, wave, 32, ex=ttl)
        start_at = first + ttl
        while time.monotonic() < start_at:
            time.sleep(0.01)
        b0 = time.monotonic()
        during, during_rps = bench_get_p99(srv.port, args.bench_n, persist)
        b1 = time.monotonic()
        samples = smp.stop()
        c.close()
        d0, d1 = first_at(samples, b0)["dbsize"], first_at(samples, b1)["dbsize"]
        r = {"p99_rest": rest, "p99_during": during, "p99_ratio": during / rest,
             "rps_rest": rest_rps, "rps_during": during_rps}
        log(f"  ttl-wave {srv.name:<5} GET p99 at rest {rest:.3f} ms ({rest_rps:,.0f} rps), during expiry "
            f"{during:.3f} ms ({during_rps:,.0f} rps); bench ran from {b0 - last - ttl:+.2f} to "
            f"{b1 - last - ttl:+.2f} s of the last deadline, DBSIZE {d0} -> {d1}")
        return r

    def fn_pair(name):
        r = run_server(name, args, clean_wave)
        r.update(run_server(name, args, latency_wave))
        return r
    return fn_pair


def sc_overwrite(args):
    k = args.keys
    vsize = 256
    live = k * (16 + vsize + RECORD_HEADER)
    dur = args.duration
    first_win = min(10.0, dur / 2)

    def fn(srv):
        c = srv.conn()
        t = time.monotonic()
        load(c, 0, k, vsize, batch=5000)
        load_s = time.monotonic() - t
        time.sleep(0.5)
        smp = Sampler(srv, 1.0, ("rss", "disk", "cmds"))
        smp.start()
        time.sleep(0.2)
        outp = os.path.join(srv.tmp, "bench.out")
        with open(outp, "wb") as out:
            b = subprocess.Popen(
                ["redis-benchmark", "-p", str(srv.port), "-t", "set", "-r", str(k), "-d", str(vsize),
                 "-P", "16", "-n", "2000000000", "-c", "50", "-q"], stdout=out, stderr=subprocess.STDOUT)
            b0 = time.monotonic()
            stopped = None
            while time.monotonic() < b0 + dur:
                time.sleep(0.25)
                if smp.samples and smp.samples[-1]["rss"] > args.rss_limit * MB:
                    stopped = time.monotonic() - b0
                    log(f"  overwrite {srv.name:<5} RSS {smp.samples[-1]['rss'] / MB:.0f} MiB is over "
                        f"--rss-limit {args.rss_limit} MiB: benchmark stopped after {stopped:.1f} s")
                    break
            b.send_signal(signal.SIGINT)
            try:
                b.wait(timeout=10)
            except subprocess.TimeoutExpired:
                b.kill()
                b.wait()
            b1 = time.monotonic()
        time.sleep(1.0)
        samples = smp.stop()
        ci = c.info()
        # GET p99 during heavy cleaning: once the server is idle, GET p99 at rest; then half
        # the keys overwritten once more (half a log of garbage, spread over every segment, so
        # cleaning them copies the other half) and GET p99 at once, while the cleaner reclaims
        # it with no client writing.
        wait_idle(srv.pid)
        p99_rest, _ = bench_get_p99(srv.port, args.bench_n, k)
        load(c, 0, k // 2, vsize, batch=5000)
        copied0 = cleaner_bytes_copied(c)
        p99_clean, _ = bench_get_p99(srv.port, args.bench_n, k)
        copied_during = cleaner_bytes_copied(c) - copied0
        c.close()
        with open(outp, "rb") as f:
            prog = re.findall(rb"rps=[0-9.]+ \(overall: ([0-9.]+)\)", f.read())
        bench_overall = float(prog[-1]) if prog else float("nan")

        def cmds_at(t):  # linear interpolation of total_commands_processed
            prev = samples[0]
            for s in samples:
                if s["t"] >= t:
                    if s is prev or s["t"] == prev["t"]:
                        return s["cmds"]
                    f = (t - prev["t"]) / (s["t"] - prev["t"])
                    return prev["cmds"] + f * (s["cmds"] - prev["cmds"])
                prev = s
            return samples[-1]["cmds"]
        c0, c10, c1 = cmds_at(b0), cmds_at(b0 + first_win), cmds_at(b1)
        r1 = (c10 - c0) / first_win
        r2 = (c1 - c10) / (b1 - b0 - first_win) if b1 - b0 > first_win + 0.5 else float("nan")
        win = [s for s in samples if b0 <= s["t"] <= b1 + 1.0]
        max_rss = max(s["rss"] for s in win)
        max_disk = max(s["disk"] for s in win)
        r = {
            "load_s": load_s, "live_mb": live / MB,
            "max_rss_mb": max_rss / MB, "max_disk_mb": max_disk / MB,
            "rss_live": max_rss / live, "disk_live": max_disk / live,
            "end_rss_live": win[-1]["rss"] / live, "end_disk_live": win[-1]["disk"] / live,
            "end_anon_mb": win[-1]["anon"] / MB, "end_file_mb": win[-1]["file"] / MB,
            "ops_first": r1, "ops_rest": r2, "drop": 100.0 * (1 - r2 / r1) if r1 else float("nan"),
            "bench_overall": bench_overall, "bench_s": b1 - b0,
            "p99_rest": p99_rest, "p99_clean": p99_clean, "p99_clean_ratio": p99_clean / p99_rest,
            "copied_during_mb": copied_during / MB,
        }
        cleaner = []
        section = None
        for line in ci.splitlines():
            if line.startswith("#"):
                section = line[1:].strip().lower()
            elif line.strip() and (section == "cleaner" or line.startswith("segkv_cleaner")):
                cleaner.append(line.strip())
        r["_cleaner"] = cleaner
        per_s = []
        prev = None
        for s in win:
            if prev:
                per_s.append((s["cmds"] - prev["cmds"]) / (s["t"] - prev["t"]))
            prev = s
        log(f"  overwrite {srv.name:<5} load {load_s:.1f} s; SET ops/s first {first_win:.0f} s {r1:,.0f}, "
            f"rest {r2:,.0f} (drop {r['drop']:.1f}%), redis-benchmark overall {bench_overall:,.0f}; "
            f"max RSS {max_rss / MB:.0f} MiB ({r['rss_live']:.2f}x live), max disk {max_disk / MB:.0f} MiB "
            f"({r['disk_live']:.2f}x live)")
        log(f"  overwrite {srv.name:<5} per second (kops/s, RSS MiB, disk MiB): "
            + " ".join(f"{o / 1000:.0f}/{s['rss'] / MB:.0f}/{s['disk'] / MB:.0f}"
                       for o, s in zip(per_s, win[1:])))
        for line in cleaner:
            log(f"  overwrite {srv.name:<5} INFO {line}")
        log(f"  overwrite {srv.name:<5} GET p99 at rest {p99_rest:.3f} ms, while cleaning {p99_clean:.3f} ms "
            f"({r['p99_clean_ratio']:.2f}x; {copied_during / MB:.0f} MiB copied by the cleaner meanwhile)")
        return r
    return fn


def sc_skew(args, draws):
    """Skewed overwrites: every key loaded once, then SETs of keys drawn from Zipf(0.99). Hot
    keys' records die fast, cold keys' stay live: where cost-benefit cleaning (cold segments
    at a higher live fraction than hot ones) is meant to copy less than oldest-first."""
    k = args.keys
    vsize = args.zipf_value_size
    rec = 16 + vsize + RECORD_HEADER
    live = k * rec
    set_t = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$" + b"%d\r\n" % vsize + b"w" * vsize + b"\r\n"

    def fn(srv):
        c = srv.conn()
        load(c, 0, k, vsize, batch=5000)
        smp = Sampler(srv, 0.5, ("rss", "disk"))
        smp.start()
        copied0 = cleaner_bytes_copied(c)
        t0 = time.monotonic()
        batch = 2000
        for b0 in range(0, len(draws), batch):
            ids = draws[b0:b0 + batch]
            c.pipeline(b"".join([set_t % i for i in ids]), len(ids), expect=b"+OK\r\n" * len(ids))
        t1 = time.monotonic()
        time.sleep(1.0)
        samples = smp.stop()
        copied = cleaner_bytes_copied(c) - copied0
        c.close()
        r = {
            "live_mb": live / MB,
            "rss_live": max(s["rss"] for s in samples) / live,
            "disk_live": max(s["disk"] for s in samples) / live,
            "wa": copied / (len(draws) * rec),
            "set_s": len(draws) / (t1 - t0),
        }
        log(f"  skew {srv.name:<5} {len(draws):,} SETs in {t1 - t0:.1f} s ({r['set_s']:,.0f}/s); max RSS "
            f"{r['rss_live']:.2f}x live, max disk {r['disk_live']:.2f}x live; cleaner copied "
            f"{copied / MB:,.0f} MiB (write amplification {r['wa']:.3f})")
        return r
    return fn


def zipf_draws(n_keys, count, seed, s=0.99):
    """`count` key ids drawn with Zipf(s) popularity over n_keys ranks (inverse CDF, bisect);
    rank -> key id through a fixed shuffle so the hot keys are spread over the key space."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (r ** s) for r in range(1, n_keys + 1)))
    total = cum[-1]
    ids = list(range(n_keys))
    rng.shuffle(ids)
    rnd = rng.random
    bis = bisect.bisect_left
    last = n_keys - 1
    return [ids[min(bis(cum, rnd() * total), last)] for _ in range(count)]


def sc_zipf(args, policy, draws):
    vsize = args.zipf_value_size
    maxmem = args.maxmemory
    warm = args.zipf_warmup
    batch = args.zipf_batch
    get_t = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:%012d\r\n"
    set_t = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$" + b"%d\r\n" % vsize + b"v" * vsize + b"\r\n"

    def fn(srv):
        c = srv.conn()
        rss0 = srv.rss()
        hits = gets = errors = 0
        t0 = time.monotonic()
        t_meas = None
        for b0 in range(0, len(draws), batch):
            if b0 >= warm and t_meas is None:
                t_meas = time.monotonic()
            ids = draws[b0:b0 + batch]
            replies = c.pipeline(b"".join([get_t % i for i in ids]), len(ids))
            miss = []
            seen = set()
            h = 0
            for i, v in zip(ids, replies):
                if v is None:
                    if i not in seen:
                        seen.add(i)
                        miss.append(i)
                elif isinstance(v, RespError):
                    raise v
                else:
                    h += 1
            if b0 >= warm:
                hits += h
                gets += len(ids)
            if miss:
                for v in c.pipeline(b"".join([set_t % i for i in miss]), len(miss)):
                    if isinstance(v, RespError):
                        errors += 1
        t1 = time.monotonic()
        time.sleep(0.5)
        st = proc_status(srv.pid)
        mem = info_fields(c.info("memory"))
        stats = info_fields(c.info("stats"))
        dbsize = c.call("DBSIZE")
        c.close()
        r = {
            "hit": 100.0 * hits / gets if gets else float("nan"),
            "rss_mb": st["VmRSS"] / MB, "rss_max": st["VmRSS"] / maxmem,
            "growth_max": (st["VmRSS"] - rss0) / maxmem,
            "used_max": int(mem.get("used_memory", 0)) / maxmem,
            "dbsize": dbsize, "evicted": int(stats.get("evicted_keys", 0)),
            "set_errors": errors, "req_s": (len(draws) - warm) / (t1 - t_meas),
        }
        log(f"  zipf {policy} {srv.name:<5} hit ratio {r['hit']:.2f}%; RSS {r['rss_mb']:.1f} MiB "
            f"({r['rss_max']:.2f}x maxmemory, anon {st['RssAnon'] / MB:.1f}, file {st['RssFile'] / MB:.1f}), "
            f"used_memory {r['used_max']:.2f}x; DBSIZE {dbsize}, evicted_keys {r['evicted']}, SET errors "
            f"{errors}; {t1 - t0:.1f} s, {r['req_s']:,.0f} requests/s measured")
        return r
    return fn


# ---------------------------------------------------------------- tables

def fmt(v, spec):
    if v is None:
        return "-"
    if isinstance(v, float) and v == float("inf"):
        return "never"
    return format(v, spec)


def table(title, rows, res):
    """rows: (metric key, label, format, target or '', ratio?)."""
    print(f"\n== {title} ==")
    print(f"{'':<52}{'segkv':>11}{'redis':>11}{'segkv/redis':>13}  target")
    for k, label, spec, target, ratio in rows:
        vals = {}
        for name in SERVERS:
            xs = [r[k] for r in res.get(name, []) if k in r]
            vals[name] = statistics.median(xs) if xs else None
        s, r = vals["segkv"], vals["redis"]
        rt = "-"
        if ratio and s is not None and r not in (None, 0) and s != float("inf") and r != float("inf"):
            rt = f"{s / r:.2f}"
        print(f"{label:<52}{fmt(s, spec):>11}{fmt(r, spec):>11}{rt:>13}  {target}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["all", "memory", "ttl-wave", "overwrite", "zipf", "skew"],
                    default="all")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keys", type=int, default=1_000_000,
                    help="keys loaded (memory, overwrite), in the wave (ttl-wave), possible (zipf)")
    ap.add_argument("--duration", type=float, default=60, help="overwrite: seconds of redis-benchmark SET")
    ap.add_argument("--rss-limit", type=int, default=8192,
                    help="overwrite: stop the benchmark early once the server's RSS passes this many MiB")
    ap.add_argument("--bench-n", type=int, default=200_000, help="ttl-wave, overwrite: redis-benchmark GET requests")
    ap.add_argument("--maxmemory", type=int, default=0,
                    help="zipf: bytes (default 64 MiB x keys / 1M)")
    ap.add_argument("--policies", default="allkeys-lru,allkeys-lfu")
    ap.add_argument("--zipf-value-size", type=int, default=100)
    ap.add_argument("--zipf-warmup", type=int, default=0, help="zipf: requests before measuring (default 2 x keys)")
    ap.add_argument("--zipf-requests", type=int, default=0, help="zipf: requests measured (default 2 x keys)")
    ap.add_argument("--zipf-batch", type=int, default=500, help="zipf: GETs per pipelined batch")
    ap.add_argument("--skew-writes", type=int, default=0, help="skew: Zipf SETs after the load (default 6 x keys)")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="segkv worker threads (default: cores)")
    ap.add_argument("--segkv-args", default="", help="more segkv-server options, e.g. '--segment-size 8mb'")
    ap.add_argument("--redis-args", default="", help="more redis-server options")
    ap.add_argument("--segkv-bin", default=os.path.join(ROOT, "target", "release", "segkv-server"))
    ap.add_argument("--tmp", default=None, help="where the data directories go (default: $TMPDIR or /tmp)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    a = ap.parse_args()
    if a.keys > 10 ** 11:
        sys.exit("--keys: at most 10^11 (12-digit key names)")
    if not a.maxmemory:
        a.maxmemory = max(4 * MB, 64 * MB * a.keys // 1_000_000)
    a.zipf_warmup = a.zipf_warmup or 2 * a.keys
    a.zipf_requests = a.zipf_requests or 2 * a.keys
    a.skew_writes = a.skew_writes or 6 * a.keys
    for tool in ("redis-server", "redis-benchmark", "du"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install redis-server redis-tools")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "segkv-server"], cwd=ROOT, check=True)
    scen = ["memory", "ttl-wave", "overwrite", "zipf", "skew"] if a.scenario == "all" else [a.scenario]
    t_start = time.monotonic()
    with open("/proc/loadavg") as f:
        log(f"segkv-server {a.segkv_bin}; {subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.strip()}; "
            f"load average {f.read().split()[:3]}")
    draws = None
    if "zipf" in scen:
        t = time.monotonic()
        draws = zipf_draws(a.keys, a.zipf_warmup + a.zipf_requests, a.seed)
        log(f"zipf: {len(draws):,} draws over {a.keys:,} keys in {time.monotonic() - t:.1f} s")
    skew_draws = None
    if "skew" in scen:
        t = time.monotonic()
        skew_draws = zipf_draws(a.keys, a.skew_writes, a.seed + 1)
        log(f"skew: {len(skew_draws):,} draws over {a.keys:,} keys in {time.monotonic() - t:.1f} s")
    results = {}  # label -> server -> [metrics]
    durations = {}
    for sc in scen:
        t_sc = time.monotonic()
        for rnd in range(a.rounds):
            order = SERVERS if rnd % 2 == 0 else SERVERS[::-1]
            log(f"[{sc}] round {rnd + 1}/{a.rounds}: {' then '.join(order)}")
            if sc == "zipf":
                for policy in a.policies.split(","):
                    for name in order:
                        extra = ["--maxmemory", str(a.maxmemory), "--maxmemory-policy", policy]
                        r = run_server(name, a, sc_zipf(a, policy, draws), extra)
                        results.setdefault(f"zipf {policy}", {}).setdefault(name, []).append(r)
                continue
            for name in order:
                if sc == "memory":
                    r = run_server(name, a, sc_memory(a))
                elif sc == "ttl-wave":
                    r = sc_ttl_wave(a)(name)
                elif sc == "skew":
                    r = run_server(name, a, sc_skew(a, skew_draws))
                else:
                    r = run_server(name, a, sc_overwrite(a))
                results.setdefault(sc, {}).setdefault(name, []).append(r)
        durations[sc] = time.monotonic() - t_sc
        log(f"[{sc}] {durations[sc]:.0f} s")

    n = a.rounds
    for sc in scen:
        if sc == "memory":
            table(f"memory: RSS per key, {a.keys:,} keys (16 B keys, 32 B values); median of {n}",
                  [("rss0", "RSS at start (MiB)", ".1f", "", False),
                   ("load", "RSS growth per key after load (B)", ".1f", "segkv <= 0.5x redis", True),
                   ("read", "RSS growth per key after a GET of every key (B)", ".1f", "segkv <= 0.5x redis", True),
                   ("anon_read", "  of which anonymous (B)", ".1f", "", False),
                   ("file_read", "  of which file-backed (mmaps) (B)", ".1f", "", False),
                   ("disk", "disk per key (B)", ".1f", "", False),
                   ("load_s", "load time (s)", ".2f", "", False),
                   ("read_s", "read pass time (s)", ".2f", "", False)], results["memory"])
        elif sc == "ttl-wave":
            table(f"ttl-wave: {max(1, a.keys // 10):,} persistent + {a.keys:,} keys EX 4; median of {n}",
                  [("load_s", "wave load time (s)", ".2f", "", False),
                   ("clear_s", "last deadline -> DBSIZE back to persistent (s)", ".2f", "segkv <= 1 s (redis ~7-8)", True),
                   ("dbsize_end", "DBSIZE 12 s after the last deadline", ".0f", "", False),
                   ("base_mb", "RSS before the wave (MiB)", ".1f", "", False),
                   ("peak_mb", "RSS peak (MiB)", ".1f", "", False),
                   ("at5_mb", "RSS 5 s after the last deadline (MiB)", ".1f", "", False),
                   ("returned5", "wave RSS returned by +5 s (%)", ".1f", ">= 90%", False),
                   ("returned12", "wave RSS returned by +12 s (%)", ".1f", "", False),
                   ("p99_rest", "GET p99 at rest (ms)", ".3f", "", True),
                   ("p99_during", "GET p99 during expiry (ms)", ".3f", "", True),
                   ("p99_ratio", "GET p99 during / at rest", ".2f", "<= 2x", False),
                   ("rps_rest", "GET rps at rest", ",.0f", "", True),
                   ("rps_during", "GET rps during expiry", ",.0f", "", True)], results["ttl-wave"])
        elif sc == "overwrite":
            table(f"overwrite: {a.keys:,} keys x 256 B, {a.duration:.0f} s of SET -P 16 -c 50; live data "
                  f"= keys x (16 + 256 + {RECORD_HEADER}) B; median of {n}",
                  [("live_mb", "live data (MiB)", ".1f", "", False),
                   ("max_rss_mb", "max RSS (MiB)", ".1f", "", True),
                   ("rss_live", "max RSS / live data", ".2f", "", True),
                   ("end_rss_live", "RSS at the end / live data", ".2f", "", True),
                   ("end_anon_mb", "  RssAnon at the end (MiB)", ".1f", "", False),
                   ("end_file_mb", "  RssFile at the end (MiB)", ".1f", "", False),
                   ("max_disk_mb", "max disk (MiB)", ".1f", "", False),
                   ("disk_live", "max disk / live data", ".2f", "", False),
                   ("end_disk_live", "disk at the end / live data", ".2f", "", False),
                   ("ops_first", f"SET ops/s, first {min(10.0, a.duration / 2):.0f} s", ",.0f", "", True),
                   ("ops_rest", "SET ops/s, the rest", ",.0f", "", True),
                   ("drop", "drop (%)", ".1f", "", False),
                   ("bench_overall", "redis-benchmark overall rps", ",.0f", "", True),
                   ("bench_s", "benchmark ran (s; less if over --rss-limit)", ".1f", "", False),
                   ("load_s", "initial load time (s)", ".1f", "", False),
                   ("p99_rest", "GET p99 at rest, after (ms)", ".3f", "", True),
                   ("p99_clean", "GET p99 while cleaning a rewrite of half the keys (ms)", ".3f", "", True),
                   ("p99_clean_ratio", "GET p99 while cleaning / at rest", ".2f", "<= 2x", False),
                   ("copied_during_mb", "MiB the cleaner copied meanwhile", ".0f", "", False)],
                  results["overwrite"])
            for name in SERVERS:
                lines = results["overwrite"][name][-1].get("_cleaner") or []
                if lines:
                    print(f"{name} INFO cleaner lines (last round):")
                    for line in lines:
                        print(f"  {line}")
        elif sc == "skew":
            table(f"skew: {a.keys:,} keys x {a.zipf_value_size} B loaded, then {a.skew_writes:,} SETs of "
                  f"Zipf(0.99) keys (batches of 2000); live data = keys x (16 + {a.zipf_value_size} + "
                  f"{RECORD_HEADER}) B; median of {n}",
                  [("live_mb", "live data (MiB)", ".1f", "", False),
                   ("rss_live", "max RSS / live data", ".2f", "", True),
                   ("disk_live", "max disk / live data", ".2f", "", False),
                   ("wa", "write amplification (cleaner copies / client bytes)", ".3f", "", False),
                   ("set_s", "SETs/s", ",.0f", "", True)], results["skew"])
        elif sc == "zipf":
            for policy in a.policies.split(","):
                table(f"zipf {policy}: Zipf(0.99) over {a.keys:,} keys, {a.zipf_value_size} B values, maxmemory "
                      f"{a.maxmemory / MB:.0f} MiB, {a.zipf_warmup:,} warm-up + {a.zipf_requests:,} measured "
                      f"requests (batches of {a.zipf_batch}); median of {n}",
                      [("hit", "hit ratio (%)", ".2f", "", True),
                       ("rss_mb", "final RSS (MiB)", ".1f", "", True),
                       ("rss_max", "final RSS / maxmemory", ".2f", "", True),
                       ("growth_max", "RSS growth since start / maxmemory", ".2f", "", True),
                       ("used_max", "INFO used_memory / maxmemory", ".2f", "", True),
                       ("dbsize", "DBSIZE at the end", ".0f", "", True),
                       ("evicted", "INFO evicted_keys", ".0f", "", False),
                       ("set_errors", "SET errors (OOM)", ".0f", "", False),
                       ("req_s", "client requests/s while measuring", ",.0f", "", True)],
                      results[f"zipf {policy}"])
    with open("/proc/loadavg") as f:
        la = " ".join(f.read().split()[:3])
    print("\nruntime: " + ", ".join(f"{sc} {d:.0f} s" for sc, d in durations.items())
          + f"; total {time.monotonic() - t_start:.0f} s; load average at the end {la}")


if __name__ == "__main__":
    main()
