"""
What bench/run.py and bench/soak.py share: the subprocesses they start and
stop, free ports on 127.0.0.1, and how txlb is started under twistd.

Only the standard library is used.  The scripts are run as
C{python bench/NAME.py}, so this folder is first on C{sys.path} and they
import this module as C{common}.
"""

import os
import re
import signal
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
TWISTD = "from twisted.scripts.twistd import run; run()"
STOP_TIMEOUT = 5.0


class Processes:
    """
    Every subprocess a run starts; L{stopAll} ends those still running.
    """

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def output(self, name):
        """
        The path of the file that the output of process C{name} goes to.
        """
        return os.path.join(self.tmp, name + ".out")

    def start(self, name, argv, env=None):
        """
        Start C{argv} in its own session, appending its output to
        L{output}C{(name)} (a restarted process keeps one file).
        """
        with open(self.output(name), "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.tmp,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        """
        Terminate C{proc}, one of ours, and kill its process group if it
        lingers.

        @return: whether it lingered (was killed after L{STOP_TIMEOUT}).
        """
        return bool(self._stop([proc]))

    def stopAll(self):
        """
        Terminate every process still running, then kill its process group
        if it lingers.
        """
        self._stop(self.procs)

    def _stop(self, procs):
        """
        Terminate C{procs}; kill those still running after L{STOP_TIMEOUT}.

        @return: the processes that had to be killed.
        """
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        killed = []
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(proc)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(STOP_TIMEOUT)
        return killed


def freePorts(count):
    """
    Pick C{count} distinct free TCP ports on 127.0.0.1.
    """
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def txlbEnv(source):
    """
    The environment for twistd: txlb imported from C{source} first.
    """
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


def txlbArgv(python, log, port, backendPorts, options=(), algo=None):
    """
    The command line of C{twistd -n txlb} under C{python}, listening on
    127.0.0.1:C{port} in front of C{backendPorts}, logging to C{log}, with
    the extra txlb C{options} and C{--algo ALGO} if C{algo} is given.
    """
    argv = [
        python,
        "-c",
        TWISTD,
        "-n",
        "--pidfile=",
        "--logfile=" + log,
        "txlb",
        "--listen",
        f"tcp:{port}:interface={HOST}",
        "--backends",
        ",".join(f"{HOST}:{p}" for p in backendPorts),
        *options,
    ]
    if algo:
        argv += ["--algo", algo]
    return argv


def exitOnSigterm():
    """
    Turn SIGTERM into L{SystemExit} so that C{finally} cleanup runs.
    """

    def terminated(signum, frame):
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, terminated)


def txlbHelpOptions(python, env):
    """
    The long options that C{twistd txlb --help} lists under C{python}, so
    that a script can leave out those an older txlb does not have.

    @raise RuntimeError: With a one-line reason if the help cannot be read.
    """
    try:
        done = subprocess.run(
            [python, "-c", TWISTD, "txlb", "--help"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"cannot run {python} twistd txlb --help: {e}") from None
    if done.returncode != 0 or "--backends" not in done.stdout:
        raise RuntimeError(
            f"{python} twistd txlb --help failed (is Twisted installed for it?):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", done.stdout))
