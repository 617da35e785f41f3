"""The process that runs a response's code against its tests (`sandbox` starts it; standard library only, run as
`python -I -S runner.py WORKDIR SETTINGS_JSON`, so it imports nothing of the project or of site-packages).

Isolated (started by `unshare` in new network, PID and mount namespaces): it mounts a small tmpfs over its work
folder, makes every other mount read-only, sets the resource limits, becomes an unprivileged user (when it started
as root) and makes itself non-dumpable, so a test cannot read or write its output. Then each test runs in a process
of its own (solution, then test, in one namespace; its output goes to a log file), killed with its process group at
the deadline. Not isolated (`unshare` unavailable): the same limits, and a Python audit hook that refuses sockets,
new processes and writes outside the work folder. The last line it prints is the result: {"outcomes": [...]}.
"""

import ctypes
import json
import os
import resource
import signal
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 21
KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
PR_SET_DUMPABLE = 4
UNPRIVILEGED = 65534  # nobody
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _mount(libc, source, target, fstype, flags, data):
    if libc.mount(source, target.encode(), fstype, flags, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def seal_filesystem(workdir, tmpfs_mb):
    """A fresh tmpfs (at most `tmpfs_mb` MiB) over `workdir`, then every other mount read-only."""
    libc = ctypes.CDLL(None, use_errno=True)
    _mount(libc, b"tmpfs", workdir, b"tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=0777".encode())
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        target = fields[4].encode().decode("unicode_escape")
        if target == workdir:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in fields[5].split(","):
            flags |= KEPT_FLAGS.get(option, 0)
        try:
            _mount(libc, None, target, None, flags, None)
        except OSError:
            if target == "/":
                raise
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def set_limits(limits):
    cpu = int(limits["timeout_seconds"]) + 2
    for name, value in (("RLIMIT_AS", limits["memory_mb"] << 20), ("RLIMIT_NPROC", limits["processes"]),
                        ("RLIMIT_FSIZE", limits["file_mb"] << 20), ("RLIMIT_CPU", cpu), ("RLIMIT_NOFILE", 64),
                        ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def drop_privileges():
    if os.getuid() == 0 and os.environ.get("RLHF_SANDBOX_USERNS") != "1":
        os.setgroups([])
        os.setgid(UNPRIVILEGED)
        os.setuid(UNPRIVILEGED)


def audit_guard(workdir):
    """Refuse sockets, new processes and writes outside `workdir` (the fallback when there are no namespaces)."""
    inside = os.path.realpath(workdir) + os.sep
    refused = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "ctypes.", "pty.")
    path_events = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod",
                   "os.chown", "os.truncate", "os.utime", "shutil.")

    def outside(path):
        if isinstance(path, int):
            return False
        return not (os.path.realpath(os.fsdecode(path)) + os.sep).startswith(inside)

    def guard(event, args):
        if event.startswith(refused):
            raise PermissionError(1, f"sandbox: {event} is not allowed")
        if event == "open" and args and args[0] is not None:
            mode, flags = args[1], args[2]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(flags & WRITE_FLAGS)
            if writes and outside(args[0]):
                raise PermissionError(1, f"sandbox: writing {args[0]} is not allowed")
        elif event.startswith(path_events) and args and any(outside(a) for a in args[:2]
                                                            if isinstance(a, str | bytes)):
            raise PermissionError(1, f"sandbox: {event} outside the work folder is not allowed")

    return guard


def run_test(index, solution, test, workdir, guarded):
    """Fork: the child runs solution then test in one namespace and exits 0 when both ran to the end."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setpgid(0, 0)
        log = os.open(os.path.join(workdir, f"test-{index}.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if guarded:
            sys.addaudithook(audit_guard(workdir))
        scope = {"__name__": "__main__"}
        exec(compile(solution, "solution.py", "exec"), scope)
        exec(compile(test, f"test_{index}.py", "exec"), scope)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - any failure of the response's code fails the test
        try:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


def reap():
    """Collect every exited child (the runner adopts a test's orphans when it is PID 1)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_for(pid, deadline):
    """'pass', 'fail' or 'timeout' for the test process `pid`; its process group is killed afterwards."""
    outcome = "timeout"
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            outcome = "pass" if os.waitstatus_to_exitcode(status) == 0 else "fail"
            break
        time.sleep(0.005)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if outcome == "timeout":
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    reap()
    return outcome


def main():
    workdir, settings = sys.argv[1], json.loads(sys.argv[2])
    with open(os.path.join(workdir, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    if settings["isolated"]:
        seal_filesystem(workdir, settings["tmpfs_mb"])
    os.chdir(workdir)
    set_limits(settings)
    drop_privileges()
    deadline = time.monotonic() + settings["timeout_seconds"]
    outcomes = []
    for index, test in enumerate(job["tests"]):
        if time.monotonic() >= deadline:
            outcomes.append("timeout")
            continue
        pid = run_test(index, job["solution"], test, workdir, not settings["isolated"])
        outcomes.append(wait_for(pid, deadline))
    print(json.dumps({"outcomes": outcomes}), flush=True)


if __name__ == "__main__":
    main()
