#!/usr/bin/env python3
"""Host memory of the gVisor sandboxes of one arbor home, by process role.

usage: sudo scripts/idle-memory.py HOME

Finds every process started with --root=HOME/runtime/runsc (the foreground
`runsc run`, if any, the sandbox and its gofer), sums their PSS and private
memory from /proc/PID/smaps_rollup, and the memory usage of their cgroups
(cgroup v1 memory controller, or cgroup v2): what the kernel charges to the
runs' limits. See BENCHMARKS.md, "Idle instances".
"""
import collections
import os
import re
import sys


def main(home):
    root = "--root=%s/runtime/runsc" % os.path.abspath(home)
    roles = collections.defaultdict(lambda: [0, 0, 0])  # processes, PSS kB, private kB
    cgroups = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = [c.decode() for c in open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0") if c]
            if root not in cmd:
                continue
            smaps = open("/proc/%s/smaps_rollup" % pid).read()
            cg = open("/proc/%s/cgroup" % pid).read()
        except OSError:
            continue  # gone meanwhile
        name = cmd[0].rsplit("/", 1)[-1]
        verb = next((c for c in cmd[1:] if not c.startswith("-")), "?")
        r = roles[name if name.startswith("runsc-") else "runsc " + verb]
        r[0] += 1
        r[1] += int(re.search(r"^Pss:\s+(\d+)", smaps, re.M).group(1))
        r[2] += sum(int(x) for x in re.findall(r"^Private_(?:Clean|Dirty):\s+(\d+)", smaps, re.M))
        m = re.search(r"^\d+:memory:(.+)$", cg, re.M) or re.search(r"^0::(.+)$", cg, re.M)
        if m:
            cgroups.add(m.group(1))
    for role, (n, pss, priv) in sorted(roles.items()):
        print("%-14s %4d processes  PSS %8.1f MiB (%5.2f each)  private %8.1f MiB (%5.2f each)"
              % (role, n, pss / 1024, pss / 1024 / n, priv / 1024, priv / 1024 / n))
    usage = 0
    for c in cgroups:
        for f in ("/sys/fs/cgroup/memory%s/memory.usage_in_bytes" % c, "/sys/fs/cgroup%s/memory.current" % c):
            try:
                usage += int(open(f).read())
                break
            except OSError:
                pass
    if cgroups:
        print("%-14s %4d cgroups    usage %8.1f MiB (%5.2f each)" % ("sandbox cgroup", len(cgroups), usage / 2**20, usage / 2**20 / len(cgroups)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
