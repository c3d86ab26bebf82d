"""One supervisor for every server this project starts: SeaweedFS, Triton, the reconciler, the FastAPI baselines.

:class:`Service`, the launcher side, runs ``python -m serve.supervisor <spec.json>`` in its own session (it
outlives the CLI that started it) with its files in the state folder (``<name>.pid``: the server,
``<name>.supervisor.pid``, ``<name>.log``: the server's and the supervisor's output, ``<name>.events.jsonl``),
and finds, waits for and stops it from any process (``make serve`` starts, ``make serve-stop`` stops).

:class:`Supervisor` starts the server again, with the same command line (so on the same ports), when it dies
unasked (a crash, a signal, an exit code); every exit is logged with its signal or code, and the time from the
crash to ready again is measured. After ``max_restarts`` restarts within ``window_s`` seconds it gives up (a
server that crashes at every start is not hidden behind an endless loop; 0: never restart). A first start that
fails (an exit code before ready: a model that does not load, a port in use) is not retried, the launcher
reports why; nor is a clean exit (status 0). SIGTERM/SIGINT stop the server (SIGTERM, SIGKILL after
``stop_timeout_s``), every process it left behind, then the supervisor. The server gets SIGTERM if the
supervisor is killed (``PR_SET_PDEATHSIG``); the supervisor is a child subreaper, so backend processes orphaned
by a crashed server become its children and are stopped before the restart. The environment is inherited, so
secrets never appear on a command line.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    with contextlib.suppress(ValueError):  # a signal without a name
        return f"killed by {signal.Signals(-returncode).name}"
    return f"killed by signal {-returncode}"


def is_ready(urls: list[str]) -> bool:
    """Every URL answers 2xx (any other status is an HTTPError, an OSError)."""
    try:
        for url in urls:
            urllib.request.urlopen(url, timeout=1.0).close()
    except OSError:
        return False
    return True


class Supervisor:
    def __init__(self, spec: dict[str, Any]):
        self.args: list[str] = spec["args"]
        self.pid_file, self.events_file = Path(spec["pid_file"]), Path(spec["events_file"])
        self.ready_urls: list[str] = spec["ready_urls"]
        self.max_restarts, self.window_s = int(spec["max_restarts"]), float(spec["window_s"])
        self.stop_timeout_s, self.ready_timeout_s = float(spec["stop_timeout_s"]), 300.0
        self.cleanup_globs: list[str] = spec["cleanup_globs"]
        self.name = Path(self.args[0]).name
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def say(self, message: str) -> None:
        print(f"[supervisor {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def event(self, kind: str, **fields: Any) -> None:
        with open(self.events_file, "a") as f:
            f.write(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}) + "\n")

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):  # the loop sees `stopping` and leaves; the finally stops the server
            signal.signal(sig, lambda *_: setattr(self, "stopping", True))
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        restarts: list[float] = []  # the times of the restarts within the window
        crashed_at: float | None = None
        unready_runs = 0  # consecutive runs that died before becoming ready: back off
        try:
            while not self.stopping:
                started = time.monotonic()
                self.child = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,  # preexec_fn: in the child
                                              preexec_fn=lambda: _prctl(PR_SET_PDEATHSIG, signal.SIGTERM))
                self.pid_file.write_text(f"{self.child.pid}\n")
                self.event("started", pid=self.child.pid, restarts=len(restarts))
                ready = self._wait_ready()
                unready_runs = 0 if ready else unready_runs + 1
                if ready and crashed_at is not None:
                    seconds = round(time.monotonic() - crashed_at, 2)
                    self.say(f"{self.name} (pid {self.child.pid}) ready again {seconds} s after the crash")
                    self.event("ready", pid=self.child.pid, seconds_since_crash=seconds)
                while (returncode := self.child.poll()) is None and not self.stopping:
                    time.sleep(0.05)
                if self.stopping:
                    break
                died_at = time.monotonic()
                how, uptime = describe_exit(returncode), round(time.monotonic() - started, 1)
                self.say(f"{self.name} (pid {self.child.pid}) died: {how}, after {uptime} s")
                self.event("exited", pid=self.child.pid, returncode=returncode, how=how, uptime_s=uptime)
                self._stop_leftovers()
                if returncode == 0:
                    self.say("it exited by itself, cleanly (someone stopped it): not restarting")
                    return 0
                if crashed_at is None and not ready and returncode > 0:
                    self.say("it failed to start: not restarting (the launcher reports why)")
                    return returncode
                crashed_at = died_at
                restarts = [t for t in restarts if died_at - t <= self.window_s]
                if len(restarts) >= self.max_restarts:
                    self.say(f"giving up: {len(restarts)} restarts within {self.window_s:.0f} s already")
                    self.event("gave-up", restarts=len(restarts), window_s=self.window_s)
                    return 1
                restarts.append(died_at)
                self.say(f"restarting {self.name} ({len(restarts)} of {self.max_restarts} within {self.window_s:.0f} s)")
                if unready_runs:  # it crashed again before it was ever ready: do not spin
                    time.sleep(min(2.0 ** (unready_runs - 1), 8.0))
            return 0
        finally:
            if self.child is not None and self.child.poll() is None:
                stop_process(self.child.pid, self.stop_timeout_s)
            self._stop_leftovers()
            self.pid_file.unlink(missing_ok=True)
            self.event("stopped")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout_s
        while not self.stopping and self.child.poll() is None and time.monotonic() < deadline:
            if is_ready(self.ready_urls):
                return True
            time.sleep(0.05)
        return False

    def _stop_leftovers(self) -> None:
        """Stop what the dead server left: its orphaned backend processes (now our children,
        as we are their subreaper) and the files named by ``cleanup_globs``."""
        leftovers = psutil.Process().children(recursive=True)
        for proc in leftovers:  # orphans of a dead server: nothing to finish (a stub ignores SIGTERM)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=5)  # reaps them: they are our children now
        if leftovers:
            self.say(f"stopped {len(leftovers)} process(es) left behind: {[p.pid for p in leftovers]}")
        for pattern in self.cleanup_globs:
            for path in glob.glob(pattern):
                with contextlib.suppress(OSError):
                    os.unlink(path)


class ServiceError(RuntimeError):
    """A supervised server did not start, or exited; the message has its log's last lines."""


def _running(pid_file: Path, *, must_contain: str | None = None, parent: int | None = None) -> int | None:
    """The pid in ``pid_file`` if that process runs (not a zombie) and is who we think: its
    command line contains ``must_contain``, or its parent is ``parent`` (a recycled pid is not)."""
    try:
        proc = psutil.Process(int(pid_file.read_text().strip()))
        ours = ((must_contain is None or any(must_contain in part for part in proc.cmdline()))
                and (parent is None or proc.ppid() == parent))
        return proc.pid if ours and proc.status() != psutil.STATUS_ZOMBIE else None
    except (FileNotFoundError, ValueError, psutil.Error):
        return None


def stop_process(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL (reaped if it is our child)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        proc.terminate()
        _, alive = psutil.wait_procs([proc], timeout=timeout)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=10)


class Service:
    """The launcher's handle on one supervised server with its files in ``state_dir``; the base of the
    launchers (serve.s3, serve.triton), whose ``start()`` runs their server with :meth:`launch`."""

    def __init__(self, state_dir: str | Path, name: str):
        self.state_dir, self.name = Path(state_dir).absolute(), name
        self.pid_file, self.log_file, self.events_file, self.spec_file, self.supervisor_pid_file = (
            self.state_dir / f"{name}{suffix}" for suffix in (".pid", ".log", ".events.jsonl", ".supervisor.json",
                                                              ".supervisor.pid"))
        self._popen: subprocess.Popen | None = None

    def supervisor_pid(self) -> int | None:
        return _running(self.supervisor_pid_file, must_contain=str(self.spec_file))

    def pid(self) -> int | None:
        """The server's pid (it changes when the supervisor restarts it), None when not running."""
        supervisor = self.supervisor_pid()
        return _running(self.pid_file, parent=supervisor) if supervisor else None

    def is_running(self) -> bool:
        return self.supervisor_pid() is not None

    def supervisor_events(self) -> list[dict]:
        """Since the last start, oldest first: ``started``, ``exited`` (``how``: the signal or exit
        code), ``ready`` (``seconds_since_crash``), ``gave-up``, ``stopped``."""
        lines = self.events_file.read_text().splitlines() if self.events_file.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    def launch(self, args: list[str], *, env: dict[str, str], cwd: Path | None = None, ready_urls: list[str] = (),
               max_restarts: int = 0, window_s: float = 600.0, cleanup_globs: list[str] = (), ready=None,
               timeout: float = 60.0, what: str | None = None) -> None:
        """Run ``args`` under the supervisor (the log starts empty) and :meth:`wait` until ``ready()`` (default:
        every one of ``ready_urls`` answers 200); a server that is not ready is stopped. Neither: returns at once."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        spec = {"args": args, "pid_file": str(self.pid_file), "events_file": str(self.events_file),
                "ready_urls": list(ready_urls), "max_restarts": max_restarts, "window_s": window_s,
                "stop_timeout_s": 15, "cleanup_globs": list(cleanup_globs)}
        self.spec_file.write_text(json.dumps(spec, indent=2))
        self.events_file.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)
        with open(self.log_file, "wb") as log:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "serve.supervisor", str(self.spec_file)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=cwd or self.state_dir, env=env,
                start_new_session=True)  # a Ctrl+C in the launching shell does not reach it
        self.supervisor_pid_file.write_text(f"{self._popen.pid}\n")
        if ready is None and ready_urls:
            ready = functools.partial(is_ready, list(ready_urls))  # what the supervisor calls ready, too
        if ready is not None:
            try:
                self.wait(ready, timeout, what)
            except BaseException:
                self.stop()
                raise

    def wait(self, ready, timeout: float, what: str | None = None) -> None:
        """Poll ``ready()`` until it is true. Raises :class:`ServiceError` (with the log's last
        lines) when the server exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not ready():
            # the supervisor this handle launched is its child: poll it; one it attached to, by its pid file
            exited = self._popen.poll() is not None if self._popen is not None else not self.is_running()
            problem = ("exited during start-up" if exited else
                       f"was not ready within {timeout:.0f} s" if time.monotonic() > deadline else None)
            if problem:
                tail = self.log_file.read_text(errors="replace").splitlines()[-30:] if self.log_file.exists() else []
                raise ServiceError(f"{what or self.name} {problem}; last lines of {self.log_file}:\n"
                                   + ("\n".join(tail) or "(no log)"))
            time.sleep(0.05)

    def attach(self, ready, timeout: float, what: str | None = None) -> bool:
        """Wait for the server that is already running; False when its supervisor exits first (its server died
        and is not restarted: the supervisor was on its way out), so the caller starts a new one."""
        try:
            self.wait(ready, timeout, what)
        except ServiceError:
            if self.is_running():
                raise
            self.stop()  # clears its pid files
            return False
        return True

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the supervisor, which stops the server and what it left (cleanup_globs); False if none ran."""
        supervisor = self.supervisor_pid()
        if supervisor is not None:
            stop_process(supervisor, timeout=timeout + 10)
        if self._popen is not None:
            self._popen.poll()  # reap it if it is our child
            self._popen = None
        self.supervisor_pid_file.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)
        return supervisor is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # python -m serve.supervisor <spec.json>, as Service.launch runs it
    sys.exit(Supervisor(json.loads(Path(sys.argv[1]).read_text())).run())
