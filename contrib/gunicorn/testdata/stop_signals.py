"""Checks that contrib/gunicorn/baton.conf.py's SIGTERM handler survives a
second SIGTERM at any step of it: a gunicorn worker gets SIGTERM twice when
it is told to stop (from its master, and from baton or systemd to its whole
process group), and Python runs the second signal's handler inside the
first, wherever that one is. A handler that took a lock there (an Event's)
waited on itself with the main loop stopped: every request on the worker's
connections timed out.

    python3 stop_signals.py contrib/gunicorn/baton.conf.py

For each step k of the handler (each call, line and return Python traces
in it, the standard library's included), a fresh copy of the config runs
the handler with a second SIGTERM sent at step k, under a deadline, and
then must drain as one SIGTERM would: STOPPING=1 sent once, every request
after it answered with "Connection: close", the worker told to stop
(worker.alive false) after its grace. Prints "ok: N steps" or exits 1.
"""

import faulthandler
import importlib.util
import os
import signal
import socket
import sys
import tempfile
import time

CONF = sys.argv[1]
DEADLINE = 10  # seconds for a handler and its drain; a deadlock dumps the stacks and exits 1


class Cfg:
    keepalive = 0
    graceful_timeout = 1.7  # a grace of 0.2 s: min(keepalive + 1.5, graceful_timeout - 1.5)


class Log:
    def info(self, *args):
        pass

    def warning(self, msg, *args):
        print("warning:", msg % args, file=sys.stderr)


class ThreadWorker:  # the name the config looks for: a gthread worker
    def __init__(self):
        self.alive = True
        self.cfg = Cfg()
        self.log = Log()


class Request:
    def __init__(self):
        self.closing = False

    def force_close(self):
        self.closing = True


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


def trial(k, notify_path, notify):
    """Runs the handler with a second SIGTERM at step k; returns how many
    steps the handler took."""
    os.environ["NOTIFY_SOCKET"] = notify_path
    spec = importlib.util.spec_from_file_location(f"baton_conf_{k}", CONF)
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    worker = ThreadWorker()
    conf.post_worker_init(worker)
    if notify.recv(4096) != b"READY=1":
        fail("no READY=1 after post_worker_init")
    handler = signal.getsignal(signal.SIGTERM)

    steps = 0

    def tracer(frame, event, arg):
        nonlocal steps
        if steps == k:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at Python's next step: inside the handler
        steps += 1
        return tracer

    faulthandler.dump_traceback_later(DEADLINE, exit=True)
    sys.settrace(tracer)
    try:
        handler(signal.SIGTERM, None)
    finally:
        sys.settrace(None)
    # The second SIGTERM of a step past the handler's end is handled here.
    deadline = time.monotonic() + DEADLINE
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    faulthandler.cancel_dump_traceback_later()
    if worker.alive:
        fail(f"second SIGTERM at step {k}: the worker was never told to stop")
    req = Request()
    conf.pre_request(worker, req)
    if not req.closing:
        fail(f"second SIGTERM at step {k}: a request after the drain began is not answered with Connection: close")
    got = []
    notify.setblocking(False)
    try:
        while True:
            got.append(notify.recv(4096))
    except BlockingIOError:
        pass
    notify.setblocking(True)
    if got != [b"STOPPING=1"]:
        fail(f"second SIGTERM at step {k}: sent {got}, want STOPPING=1 once")
    return steps


def main():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(path)
        notify.settimeout(DEADLINE)
        k = 0
        while True:
            steps = trial(k, path, notify)
            if k >= steps:
                break  # the last trial's second signal came after the handler
            k += 1
        print(f"ok: a second SIGTERM at each of the handler's {steps} steps")


main()
