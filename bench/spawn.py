"""Run one command and record its wall time and resource usage as JSON.

    python -I -S bench/spawn.py RESULT.json COMMAND [ARG...]

Why a separate, small process: Linux folds the memory high-water mark of the process
that forks into the child's ``ru_maxrss`` when the child calls exec, so a command started
straight from the benchmark (which holds the dataset plan and text pools) would report
the benchmark's own resident set as its peak. Started from this stdlib-only launcher,
the floor is the launcher's few MiB. stdin, stdout, stderr, the working folder and the
environment pass through unchanged; the exit code is the command's.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: spawn.py RESULT.json COMMAND [ARG...]", file=sys.stderr)
        return 2
    result_path, cmd = argv[1], argv[2:]
    started = time.perf_counter()
    try:
        pid = os.posix_spawnp(cmd[0], cmd, dict(os.environ))
    except OSError as exc:
        print(f"spawn.py: cannot run {cmd[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    result = {
        "seconds": seconds,
        "user_seconds": usage.ru_utime,
        "system_seconds": usage.ru_stime,
        "max_rss_kib": usage.ru_maxrss,
        "exit_code": code,
    }
    with open(result_path, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
