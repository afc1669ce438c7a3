"""gunicorn settings and hooks for a stock gunicorn (20.1 or newer) under
baton: gunicorn -c contrib/gunicorn/baton.conf.py app:app

baton runs the pool, so each baton worker is one gunicorn master with one
gunicorn worker (`workers` below; -w on the command line overrides it).
gunicorn takes baton's listeners by socket activation (LISTEN_FDS) by
itself. What this file changes:

Readiness. gunicorn's master sends READY=1 as soon as it holds the
sockets, before any worker has imported the app: baton would drain the
old workers while the new one may still fail to boot. So the master's
NOTIFY_SOCKET is taken away here, and each gunicorn worker reports ready
once the app is loaded (post_worker_init): a line on BATON_READY_FD
(worker.ready = "fd") and READY=1 on NOTIFY_SOCKET (worker.ready =
"notify"; baton takes it from a worker's child).

Drain. On SIGTERM baton's signal reaches the gunicorn master, which
passes it to its worker. A stock gthread worker then closes its idle
keep-alive connections at once: a client sending its next request on one
right then gets a reset (the keep-alive race). Here a gthread worker
instead keeps serving for the keep-alive timeout (`keepalive`, 2 s by
default) plus one turn of its loop, answering every request with
"Connection: close" (pre_request); a connection idle that long is closed
by gunicorn's own keep-alive timeout, and a busy one ends after its next
response. Then it stops as gunicorn's SIGTERM would. It still accepts
during that time (gunicorn has no hook to stop accepting), and answers
those connections the same way. The sync worker needs nothing: it never
keeps a connection alive. graceful_timeout follows baton's drain timeout
(a second before it), and the gthread grace ends 1.5 s before that; a
drain timeout under 6 s shortens `keepalive` to fit (under 4 s: no
keep-alive).
"""

import os
import re
import signal
import threading
import time

workers = 1

# baton SIGKILLs what is left at its drain timeout; gunicorn's own deadline
# for its worker comes a second before.
_unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_part = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"
_drain = os.environ.get("BATON_DRAIN_TIMEOUT", "")
if re.fullmatch(f"(?:{_part})+", _drain):
    graceful_timeout = max(1, int(sum(float(n) * _unit[u] for n, u in re.findall(_part, _drain))) - 1)
    # The gthread drain lasts the keep-alive timeout and 1.5 s, and must
    # end 1.5 s before graceful_timeout: a drain timeout too short for
    # gunicorn's 2 s shortens it, down to 0 (no keep-alive at all, so no
    # idle connection to close).
    keepalive = max(0, min(2, graceful_timeout - 3))

# The master's READY=1 would come before the app is loaded (see above).
_notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
_ready_fd = os.environ.pop("BATON_READY_FD", "")
_draining = threading.Event()
# The drain thread's wake-up: a stop signal's handler only writes a byte
# here (see _on_stop_signal).
_wake_r, _wake_w = -1, -1


def _notify(worker, state):
    if not _notify_socket:
        return
    import socket
    path = "\0" + _notify_socket[1:] if _notify_socket.startswith("@") else _notify_socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(1)  # a receiver that reads nothing does not hold the drain
            s.sendto(state.encode(), path)
    except OSError as e:
        worker.log.warning("baton: notify %s: %s", state, e)


def post_worker_init(worker):
    global _wake_r, _wake_w
    if _ready_fd.isdigit():
        try:
            os.write(int(_ready_fd), b"READY=1\n")
            os.close(int(_ready_fd))
        except OSError as e:
            worker.log.warning("baton: readiness descriptor %s: %s", _ready_fd, e)
    _notify(worker, "READY=1")
    if type(worker).__name__ == "ThreadWorker":  # gthread
        _wake_r, _wake_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(_wake_w, False)
        threading.Thread(target=_drain_gthread, args=(worker,), name="baton-drain", daemon=True).start()
        signal.signal(signal.SIGTERM, _on_stop_signal)
        # As gunicorn has it: SIGTERM does not interrupt system calls.
        signal.siginterrupt(signal.SIGTERM, False)


def _on_stop_signal(signum, frame):
    # Python runs a signal's handler in the main thread between two of its
    # steps, wherever it is, and runs the next signal's inside this one:
    # a worker gets SIGTERM twice as it is told to stop (from its master,
    # and from baton or systemd to the whole group). So the handler takes
    # no lock, not even an Event's: the code it interrupted may hold it,
    # and the main loop, which serves every connection, would wait on
    # itself forever. One write; the drain thread does the rest, once.
    try:
        os.write(_wake_w, b"T")
    except OSError:
        pass  # the pipe is full: the drain began long ago


def _drain_gthread(worker):
    os.read(_wake_r, 1)  # until the first stop signal
    _draining.set()
    _notify(worker, "STOPPING=1")
    # The keep-alive timeout and a turn of the loop (1 s), within the
    # master's own deadline for its worker (graceful_timeout), which must
    # leave time to finish what is in flight.
    grace = min(worker.cfg.keepalive + 1.5, worker.cfg.graceful_timeout - 1.5)
    if grace > 0:
        worker.log.info("baton: draining for %.1fs, every response with Connection: close", grace)
        time.sleep(grace)
    worker.alive = False  # what gunicorn's SIGTERM does


def pre_request(worker, req):
    if _draining.is_set():
        req.force_close()
