"""Process CPU time from /proc, shared by the benchmark scripts in this directory."""
import os
import time


def cpu_seconds(pid):
    """User + system CPU seconds the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid, limit=60):
    """Waits until the process uses under 5% of a core (segkv cleans after a load)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        a = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - a < 0.025:
            return
