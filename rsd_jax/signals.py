"""SIGINT and SIGTERM at any moment: one line on stderr, the files intact, exit 130 or 143, within a moment.

A command run as a program (`python -m rsd_jax.evaluate` / `decode`) calls `on_signals_while_starting` as its
first line. From then on a dedicated thread, not the main one, answers either signal: Python's C-level handler
writes the signal's number to a socket (`signal.set_wakeup_fd`) from whichever thread the kernel picked, the
thread wakes, takes the write lock (so a batch of records being written by `writing()` is finished first, never
cut), prints the line and ends the process with `os._exit(130 / 143)`. The main thread is never asked to do
anything: a jitted loop or a compilation can hold it inside XLA for minutes, a library can swallow an exception
raised in it, and its Python-level handler would run only between two bytecodes. Everything on disk is complete
when the thread exits: record logs are appended and fsynced inside `writing()`, other files replaced whole
(rsd_jax.outputs), so a resume equals an uninterrupted run. `interruptible(command, kept)` only tells the thread
what the line says; `leave(code)` ends a command (after it, a signal no longer changes the exit code).

Used as a library (no `on_signals_while_starting`: a test, a notebook, `rsd_jax.run`), `interruptible` keeps
the in-process behaviour: either signal raises `Interrupted` in the main thread (after a write in progress), and
a watchdog thread ends the process only if the main thread is still busy `grace` seconds later.

Ending with `os._exit` also skips the interpreter's teardown: a SIGTERM during the first compilation used to
print the right line and then die with a segmentation fault (exit 139) there, as it freed JAX's objects while
XLA's compiler threads still ran.
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
# process mode (on_signals_while_starting): the answering thread's line, and whether the command is done
_process = {"on": False, "command": "", "kept": lambda: "any file it wrote is complete", "done": False}


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
    interruption is not mistaken for bad input. In process mode the answering thread is ending the process:
    this waits for it."""
    if _state["received"] is not None:
        if _process["on"] and not _process["done"]:
            threading.Event().wait()
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


def _signal_numbers(sock: socket.socket):
    """The exit signals' numbers as they arrive on `sock` (one byte each; others skipped), until it closes."""
    while True:
        try:
            data = sock.recv(1)
        except OSError:
            return
        if not data:
            return
        if data[0] in EXIT_CODES:
            yield data[0]


def _watch(sock: socket.socket, finished: threading.Event, grace: float, command: str,
           kept: Callable[[], str]) -> None:
    """The watchdog: waits for a signal number on `sock`; if the main thread is still busy `grace` seconds
    later, exits the process between two writes."""
    with sock:
        for signum in _signal_numbers(sock):
            if finished.wait(grace):
                continue
            with _write_lock:
                if finished.is_set():
                    return
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                os.write(2, (message(command, signum, kept()) + "\n").encode())
                os._exit(EXIT_CODES[signum])


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
    if _process["on"]:  # the answering thread ends the process: only its line changes
        previous = _process["command"], _process["kept"]
        _process.update(command=command, kept=kept)
        try:
            yield
        finally:
            _process["command"], _process["kept"] = previous
        return
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
        _state.update(pending=None, received=None)  # a later error outside is not this interruption


def leave(code: int) -> None:
    """sys.exit(code) for a command's `__main__`. After an interruption (130 / 143) the process ends with
    os._exit once stdout and stderr are flushed, skipping the teardown that can crash while XLA threads run
    (every record file is already complete and fsynced; nothing else is pending). Otherwise the command is done:
    SIGINT and SIGTERM are ignored for the teardown (which runs atexit hooks, e.g. a multi-host run's
    jax.distributed shutdown), so a signal that comes then cannot turn a finished run into a killed one (Python
    puts the default disposition back for the handlers it installed as it finalizes, but leaves SIG_IGN)."""
    with _write_lock:  # a signal that came before this line still ends the process, with its line
        _process["done"] = True
    if code in EXIT_CODES.values():
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


def on_signals_while_starting(command: str) -> None:
    """Process mode, for a command's `__main__` (its first line, before the imports): from now on SIGINT and
    SIGTERM are answered by a dedicated thread (see the module doc) with one line and 130 / 143. Until
    `interruptible` gives the command's own line, the line says any file written is complete."""
    if _process["on"] or threading.current_thread() is not threading.main_thread():
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for s in SIGNALS:
        signal.signal(s, _note)
    _process.update(on=True, command=command, writer=writer)  # the writer stays open for the process's life
    threading.Thread(target=_answer, args=(reader,), daemon=True, name="rsd_jax-signals").start()


def _note(signum: int, frame) -> None:
    """The Python-level handler in process mode: notes the signal and tells the answering thread once more (in
    case a library moved the wakeup fd: the thread ends the process on the first number it reads)."""
    _state["received"] = signum
    with contextlib.suppress(Exception):
        _process["writer"].send(bytes([signum]))


def _answer(sock: socket.socket) -> None:
    """The answering thread: for each signal number read from `sock`, unless the command is done, waits for the
    write in progress, prints the line and ends the process."""
    for signum in _signal_numbers(sock):
        if _process["done"]:
            continue
        _write_lock.acquire()  # never released: the process ends here, between two writes
        if _process["done"]:
            _write_lock.release()
            continue
        line = message(_process["command"], signum, "any file it wrote is complete")
        with contextlib.suppress(Exception):
            line = message(_process["command"], signum, _process["kept"]())
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.write(2, (_line_start() + line + "\n").encode())
        os._exit(EXIT_CODES[signum])


def _line_start() -> str:
    """A newline when a tqdm progress bar is open (it ends its line with a carriage return, and the main thread,
    which would close it, is not asked): the line then starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    with contextlib.suppress(Exception):
        if tqdm is not None and len(tqdm.tqdm._instances):
            return "\n"
    return ""
