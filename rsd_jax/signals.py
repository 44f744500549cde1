"""SIGINT and SIGTERM during a long command: one line on stderr, the files intact, exit 130 or 143.

Inside `interruptible(...)` either signal raises `Interrupted` in the main thread, except while a batch of
records is being written (`writing()`): then it waits for the write to finish. Python runs signal handlers only
between bytecodes, and a jitted loop can keep the main thread inside XLA for minutes, so a watchdog thread also
hears the signal (through `signal.set_wakeup_fd`) and, if the main thread has not finished within `grace`
seconds, takes the write lock (no write is ever cut) and ends the process itself with the same line and code.
Everything already written is complete: the record logs are appended and fsynced batch by batch.

A command that was interrupted leaves through `leave(code)` (its `__main__` line), which flushes stdout and
stderr and ends the process with `os._exit`: a SIGTERM during the first compilation used to print the right line
and then die with a segmentation fault (exit 139) in the interpreter's teardown, which freed JAX's objects while
XLA's compiler threads still ran. `on_signals_while_starting` covers the seconds of imports before `main`
installs `interruptible`: either signal then ends the process at once with the same line and 130 / 143.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import sys
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

_write_lock = threading.RLock()  # held while records are written; the watchdog takes it before it exits
_state = {"depth": 0, "pending": None, "received": None}


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (a BaseException, like KeyboardInterrupt: `except Exception` lets it pass)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + self.signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def interruption(e: BaseException) -> Interrupted:
    """An Interrupted for `e` (a KeyboardInterrupt is SIGINT)."""
    return e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT)


def raise_if_interrupted() -> None:
    """Raises Interrupted when a signal arrived inside `interruptible`: for a library that wraps whatever
    interrupted it into its own error (orbax reports a restore cut by the signal as a read error), so that the
    interruption is not mistaken for bad input."""
    if _state["received"] is not None:
        raise Interrupted(_state["received"])


def message(command: str, signum: int, kept: str) -> str:
    return f"{command}: interrupted by {signal.Signals(signum).name}; {kept}"


def _handler(signum: int, frame) -> None:
    _state["received"] = signum
    if _state["depth"]:
        _state["pending"] = signum  # raised when the write in progress is complete
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """A write that a signal must not cut: an interruption is raised after it, and the watchdog waits for it."""
    with _write_lock:
        _state["depth"] += 1
        try:
            yield
        except BaseException:
            _state["depth"] -= 1
            raise
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise Interrupted(signum)


def _watch(sock: socket.socket, finished: threading.Event, grace: float, command: str,
           kept: Callable[[], str]) -> None:
    """The watchdog: waits for a signal number on `sock`; if the main thread is still busy `grace` seconds
    later, exits the process between two writes."""
    with sock:
        while True:
            try:
                data = sock.recv(1)
            except OSError:
                return
            if not data:
                return
            if data[0] not in EXIT_CODES or finished.wait(grace):
                continue
            with _write_lock:
                if finished.is_set():
                    return
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                os.write(2, (message(command, data[0], kept()) + "\n").encode())
                os._exit(EXIT_CODES[data[0]])


def _unraisable(previous: Callable, unraisable) -> None:
    """An Interrupted raised where Python cannot propagate it (a garbage-collector callback, a finalizer) is
    dropped without its traceback: the watchdog, which heard the same signal, ends the process `grace` seconds
    later with the one line."""
    if not isinstance(unraisable.exc_value, Interrupted):
        previous(unraisable)


@contextlib.contextmanager
def interruptible(command: str, kept: Callable[[], str], grace: float = 3.0) -> Iterator[None]:
    """Within: SIGINT / SIGTERM raise Interrupted (see the module doc). `command` and `kept()` (what is safe on
    disk, asked when the signal comes) make the watchdog's line; the caller prints its own for an Interrupted it
    catches. Outside the main thread this does nothing (signals are only delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.update(depth=0, pending=None, received=None)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    finished = threading.Event()
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    old = {s: signal.signal(s, _handler) for s in SIGNALS}
    watchdog = threading.Thread(target=_watch, args=(reader, finished, grace, command, kept), daemon=True,
                                name="rsd_jax-signal-watchdog")
    watchdog.start()
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_unraisable, previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        with _write_lock:
            finished.set()
        for s, handler in old.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(old_fd)
        writer.close()  # the watchdog reads EOF and returns
        watchdog.join(timeout=1.0)


def leave(code: int) -> None:
    """sys.exit(code) for a command's `__main__`. After an interruption (130 / 143) the process ends with
    os._exit once stdout and stderr are flushed, skipping the teardown that can crash while XLA threads run
    (every record file is already complete and fsynced; nothing else is pending). Otherwise the command is done:
    SIGINT and SIGTERM are ignored for the teardown (which runs atexit hooks, e.g. a multi-host run's
    jax.distributed shutdown), so a signal that comes then cannot turn a finished run into a killed one (Python
    puts the default disposition back for the handlers it installed as it finalizes, but leaves SIG_IGN)."""
    if code in EXIT_CODES.values():
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


def on_signals_while_starting(command: str) -> None:
    """SIGINT / SIGTERM before `interruptible` is entered (the imports): one line, nothing written, 130 / 143
    (os._exit: an exception raised in the middle of an import would print a traceback)."""
    def handler(signum: int, frame) -> None:
        os.write(2, (message(command, signum, "any file it wrote is complete") + "\n").encode())
        os._exit(EXIT_CODES[signum])

    for s in SIGNALS:
        signal.signal(s, handler)
