"""Claim files: one runner at a time works on a unit (a bench job), across processes and machines sharing a folder.

    with hold(folder.claim("kd-1a2b3c-lr0.001-seed0-data1-relabel0"), expiry_s=600):
        train()                           # the claim's mtime is refreshed every expiry_s / 4 while this runs

    claim = Claim(path, expiry_s=600)
    if claim.acquire():                   # False: a live runner holds it (a stale claim is taken over)
        try: ...
        finally: claim.release()

The claim is created with O_CREAT | O_EXCL, so of two runners that try at once exactly one
gets it. It holds the runner's pid, host and start time; a heartbeat thread touches it while
the work runs. A claim is stale when it was not touched for `expiry_s` seconds (its runner
was killed, or its machine lost) or when its pid is dead on this host; a stale claim is
taken over by renaming it away first (an atomic step only one runner wins).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_EXPIRY_S = 600.0


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: float  # time.time() when the claim was made
    token: str  # unique per claim: tells a claim from a newer one at the same path


def read_holder(path: Path) -> Holder | None:
    """The claim's holder, or None when there is no claim (or it is being written or removed right now)."""
    try:
        return Holder(**json.loads(Path(path).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def is_stale(path: Path, holder: Holder, expiry_s: float, now: float | None = None) -> bool:
    """Not touched for `expiry_s` seconds, or held by a dead process of this host."""
    try:
        touched = os.stat(path).st_mtime
    except FileNotFoundError:
        return False  # already gone: nothing to take over
    if (now if now is not None else time.time()) - touched > expiry_s:
        return True
    return holder.host == socket.gethostname() and holder.pid != os.getpid() and not pid_alive(holder.pid)


class Claim:
    """An exclusive claim on `path` (see the module's docstring)."""

    def __init__(self, path: Path, *, expiry_s: float = DEFAULT_EXPIRY_S):
        if expiry_s <= 0:
            raise ValueError(f"claim expiry must be positive seconds, got {expiry_s}")
        self.path, self.expiry_s = Path(path), float(expiry_s)
        self.holder: Holder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the claim (True), taking over a stale one; False while a live runner holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # create; else take a stale claim over and create again
            if self._create():
                self._start_heartbeat()
                return True
            held = read_holder(self.path)
            if held is None:
                if not self.path.exists():
                    continue  # released meanwhile: try again
                time.sleep(0.05)  # being written by its maker
                held = read_holder(self.path)
                if held is None:
                    continue
            if not is_stale(self.path, held, self.expiry_s) or not self._take_over(held):
                return False
        return False

    def _create(self) -> bool:
        holder = Holder(os.getpid(), socket.gethostname(), time.time(), uuid.uuid4().hex)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(holder)))
        self.holder = holder
        return True

    def _take_over(self, stale: Holder) -> bool:
        """Move the stale claim aside (one runner wins the rename); put back a fresh claim moved by mistake."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # another runner moved it: compete for the new one
        moved = read_holder(aside)
        if moved is not None and moved.token != stale.token:  # a runner re-claimed between our read and the rename
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)
        print(f"[prefdistill] took over the stale claim {self.path.name} (pid {stale.pid} on {stale.host})", flush=True)
        return True

    def owned(self) -> bool:
        held = read_holder(self.path)
        return self.holder is not None and held is not None and held.token == self.holder.token

    def refresh(self) -> None:
        """Touch the claim, so it does not expire while its work runs."""
        if self.owned():
            os.utime(self.path)

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat():
            while not self._stop.wait(self.expiry_s / 4):
                self.refresh()

        self._beat = threading.Thread(target=beat, name=f"claim {self.path.name}", daemon=True)
        self._beat.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the claim (only ours: a claim taken over after we lost it stays)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.owned():
            self.path.unlink(missing_ok=True)
        self.holder = None


@contextmanager
def hold(path: Path, *, expiry_s: float = DEFAULT_EXPIRY_S, poll_s: float = 2.0):
    """Wait until the claim at `path` is ours (a live holder finishes, or its claim goes stale); release it after."""
    claim = Claim(path, expiry_s=expiry_s)
    announced = False
    while not claim.acquire():
        if not announced:
            held = read_holder(path)
            who = f"pid {held.pid} on {held.host}" if held else "another runner"
            print(f"[prefdistill] waiting for {path.name}, claimed by {who}", flush=True)
            announced = True
        time.sleep(poll_s)
    try:
        yield claim
    finally:
        claim.release()
