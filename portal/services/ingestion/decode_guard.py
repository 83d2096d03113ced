"""Decode untrusted image files in a child process with a hard memory cap and a wall-clock limit.

The header and structure checks (portal.services.ingestion.validation) bound what a well-behaved decoder spends;
this is the defence in depth for a decoder that misbehaves anyway (a libtiff or Pillow bug, a format
corner nobody thought of). The child runs under RLIMIT_AS and is killed at the deadline, so such a file
costs one refused upload ("decoding_limit", a 4xx), never the web or worker process that asked.

Children are forked from a forkserver: a small single-threaded process started once per parent with Django,
Pillow, numpy and tifffile already imported (portal.services.ingestion.decode_preload). Forking that is cheap, and
unlike forking a threaded web worker it cannot inherit a lock some other thread held.
bench/bench_decode_guard.py measures the cost per upload.

What crosses the process boundary: the path of a file on the local disk and the decoding limits in; the
small results (header facts, metadata, derivative and thumbnail bytes, a rendition PNG) back.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import forkserver, spawn
from multiprocessing.process import AuthenticationString
from typing import Any

from django.conf import settings

from portal.services.ingestion.validation_errors import ValidationError

# The settings the decoding code reads; the child gets the parent's values (tests and operators may have
# changed them after the forkserver started).
LIMIT_SETTINGS = ("SEM_MAX_IMAGE_PIXELS", "SEM_MAX_DECODED_BYTES", "SEM_MAX_ASPECT_RATIO")

PARENT_MAIN_VARIABLE = "SEM_DECODE_PARENT_MAIN"

_lock = threading.Lock()
_start_lock = threading.Lock()
_context: multiprocessing.context.BaseContext | None = None


def _forget_the_forkserver_after_fork() -> None:
    """A forked copy of this process (a Celery or gunicorn worker forked after a first upload) is not the
    forkserver's parent, so multiprocessing's checks on it fail there: it starts its own on first use."""
    global _context, _lock, _start_lock
    _context, _lock, _start_lock = None, threading.Lock(), threading.Lock()
    server = forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)  # the parent's server must not live on for this copy
    server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None


os.register_at_fork(after_in_child=_forget_the_forkserver_after_fork)


def run_guarded(function: Callable[..., Any], *args: Any) -> Any:
    """function(*args) in a capped child; its result, or the ValidationError it raised. A child that runs
    out of memory, dies or overruns the deadline raises ValidationError("decoding_limit")."""
    if not settings.SEM_DECODE_IN_CHILD:
        return function(*args)
    limits = {name: getattr(settings, name) for name in LIMIT_SETTINGS}
    receiver, sender = _get_context().Pipe(duplex=False)
    with _children_allowed():  # the child copies this process's multiprocessing state when it is made
        child = _get_context().Process(
            target=_child_main, args=(sender, function, args, limits, settings.SEM_DECODE_MEMORY_BYTES), daemon=True
        )
        child.start()
    sender.close()
    try:
        return _outcome(_receive(receiver, settings.SEM_DECODE_TIMEOUT_S))
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()


def _get_context() -> multiprocessing.context.BaseContext:
    global _context
    with _lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["portal.services.ingestion.decode_preload"])
            _start_forkserver()
            _context = context
        return _context


@contextmanager
def _children_allowed() -> Iterator[None]:
    """What Celery's prefork pool (billiard) leaves in its workers' multiprocessing state, lifted for the
    start of one child: the daemonic mark (multiprocessing refuses children to a daemonic process, as they
    would be orphaned when it exits; ours cannot be, run_guarded joins or kills its child before it
    returns) and billiard's own authentication-key type, which multiprocessing cannot pass to the child."""
    config = multiprocessing.current_process()._config
    with _start_lock:
        saved = {name: config[name] for name in ("daemon", "authkey") if name in config}
        config.pop("daemon", None)
        config["authkey"] = AuthenticationString(bytes(saved.get("authkey", b"") or os.urandom(32)))
        try:
            yield
        finally:
            config.pop("daemon", None)
            config.update(saved)


def _start_forkserver() -> None:
    """Start the forkserver now, telling it the parent's main script (decode_preload reads it): each child
    would otherwise re-run that script (gunicorn's, celery's, manage.py) before doing anything else."""
    main_path = spawn.get_preparation_data("decode").get("init_main_from_path")
    if main_path:
        os.environ[PARENT_MAIN_VARIABLE] = main_path
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(PARENT_MAIN_VARIABLE, None)


def _receive(receiver, timeout_s: float) -> tuple:
    if not receiver.poll(timeout_s):
        return ("timeout", timeout_s)
    try:
        return receiver.recv()
    except (EOFError, OSError):  # killed (the kernel's OOM killer, a signal) or crashed in C code
        return ("died", None)


def _outcome(message: tuple) -> Any:
    kind, payload = message
    if kind == "ok":
        return payload
    if kind == "refused":
        raise ValidationError(*payload)
    if kind == "timeout":
        raise _limit(f"decoding it took longer than {payload:g} s")
    if kind == "memory":
        raise _limit(f"decoding it needed more than {_mib(settings.SEM_DECODE_MEMORY_BYTES)} of memory")
    if kind == "died":
        raise _limit("the decoder stopped without an answer")
    raise RuntimeError(f"decoding failed in the child process: {payload}")


def _limit(why: str) -> ValidationError:
    return ValidationError("decoding_limit", f"The image could not be decoded within the server's limits: {why}.")


def _mib(count: int) -> str:
    return f"{count / 1024**2:,.0f} MiB"


def _child_main(sender, function, args, limits: dict, memory_bytes: int) -> None:
    """In the child: cap the address space above what is mapped already, apply the parent's limits, run."""
    try:
        budget = _mapped_bytes() + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
        for name, value in limits.items():
            setattr(settings, name, value)
        message = ("ok", function(*args))
    except ValidationError as error:
        message = ("refused", (error.code, error.message))
    except MemoryError:
        message = ("memory", None)
    except BaseException:  # anything else is a server bug: the parent raises it with the child's traceback
        message = ("error", traceback.format_exc(limit=8))
    try:
        sender.send(message)
    except MemoryError:
        sender.send(("memory", None))
    finally:
        sender.close()
        os._exit(0)  # no atexit handlers or finalisers inherited from the forkserver


def _mapped_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
