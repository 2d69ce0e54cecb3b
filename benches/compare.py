#!/usr/bin/env python3
"""Side-by-side throughput of segkv-server and redis-server, measured with redis-benchmark.

Both servers are started the same way (same persistence mode) on free local ports, then
redis-benchmark runs against each in turn (A B A B ..., so drift on the machine hits both), with
`-c 50 -d 64 -r 100000 -t set,get -n 200000 --csv`, at -P 1 and -P 16. Prints the median
requests/second of each and the segkv/redis ratio.

Modes:
  off     persistence off in both: redis --save '' --appendonly no; segkv --appendfsync no
          (segkv's log is always written; 'no' leaves flushing to the OS, as close to "off"
          as a log-structured store gets).
  always  both fsync before replying: redis --appendonly yes --appendfsync always;
          segkv --appendfsync always (group commit).

usage: benches/compare.py [--mode off|always|both] [--rounds 2] [-n 200000] [--threads N]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port, proc, what):
    for _ in range(500):
        if proc.poll() is not None:
            sys.exit(f"{what} exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(7) == b"+PONG\r\n":
                    return
        except OSError:
            pass
        time.sleep(0.02)
    sys.exit(f"{what} on port {port} did not answer PING")


def start_segkv(mode, tmp, threads):
    port = free_port()
    args = [os.path.join(ROOT, "target", "release", "segkv-server"), "--port", str(port),
            "--dir", os.path.join(tmp, "segkv"),
            "--appendfsync", "always" if mode == "always" else "no"]
    if threads:
        args += ["--threads", str(threads)]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ping(port, p, "segkv-server")
    return p, port


def start_redis(mode, tmp):
    port = free_port()
    d = os.path.join(tmp, "redis")
    os.makedirs(d, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--dir", d, "--save", ""]
    if mode == "always":
        args += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        args += ["--appendonly", "no"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ping(port, p, "redis-server")
    return p, port


def bench(port, pipeline, n):
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-c", "50", "-d", "64", "-r", "100000",
         "-t", "set,get", "-n", str(n), "-P", str(pipeline), "--csv"],
        check=True, capture_output=True, text=True).stdout
    rps = {}
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] in ("SET", "GET"):
            rps[cells[0]] = float(cells[1])
    return rps


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_mode(mode, rounds, n, threads):
    results = {}  # (server, P, test) -> [rps]
    tmp = tempfile.mkdtemp(prefix=f"segkv-compare-{mode}-")
    try:
        servers = {"segkv": start_segkv(mode, tmp, threads), "redis": start_redis(mode, tmp)}
        try:
            for r in range(rounds):
                for pipeline in (1, 16):
                    for name in ("segkv", "redis"):
                        rps = bench(servers[name][1], pipeline, n)
                        for test, v in rps.items():
                            results.setdefault((name, pipeline, test), []).append(v)
                        print(f"  [{mode}] round {r + 1} P={pipeline:<2} {name:<5} "
                              + " ".join(f"{t}={v:,.0f}" for t, v in sorted(rps.items())),
                              file=sys.stderr)
        finally:
            for p, _ in servers.values():
                stop(p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["off", "always", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-n", type=int, default=200000)
    ap.add_argument("--threads", type=int, default=0, help="segkv worker threads (default: cores)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    a = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install redis-server redis-tools")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "segkv-server"], cwd=ROOT, check=True)
    modes = ["off", "always"] if a.mode == "both" else [a.mode]
    rows = []
    for mode in modes:
        res = run_mode(mode, a.rounds, a.n, a.threads)
        for pipeline in (1, 16):
            for test in ("SET", "GET"):
                s = statistics.median(res.get(("segkv", pipeline, test), [0]))
                r = statistics.median(res.get(("redis", pipeline, test), [0]))
                rows.append((mode, pipeline, test, s, r, s / r if r else float("nan")))
    print(f"{'persistence':<12}{'P':>3} {'test':<5}{'segkv rps':>14}{'redis rps':>14}{'segkv/redis':>13}")
    for mode, pipeline, test, s, r, ratio in rows:
        print(f"{mode:<12}{pipeline:>3} {test:<5}{s:>14,.0f}{r:>14,.0f}{ratio:>13.2f}")


if __name__ == "__main__":
    main()
