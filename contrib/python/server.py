#!/usr/bin/env python3
"""A baton worker in Python 3 (standard library only).

It answers every request with "hello from pid N" and an X-Pid header, tells
the supervisor READY=1 over sd_notify, and drains on SIGTERM without failing
a request of a client that does not retry. It speaks systemd's
socket-activation protocol, so it runs the same under baton and under
systemd (or systemd-socket-activate):

    baton run --listen http=tcp://127.0.0.1:8080 -- python3 contrib/python/server.py
    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http python3 contrib/python/server.py

The listener is used as inherited, in blocking mode. That mode belongs to
the socket, shared by every process holding it, so this worker never
changes it (a pool should not mix it with Go or Node workers, which switch
it to non-blocking). A blocking accept() can wait for the next connection
even after poll() said one was there, when another worker took it first;
so accept() is called through ctypes, where SIGTERM interrupts it (EINTR)
instead of Python retrying it.

Drain, on SIGTERM or SIGINT (more of them during the drain are ignored:
under systemd's default KillMode=control-group a worker gets SIGTERM from
systemd and from baton at once):
  1. STOPPING=1; stop accepting (this process's copy of the listener is
     closed; other workers keep accepting on the shared socket);
  2. every response from now on carries "Connection: close";
  3. a connection idle for IDLE_GRACE seconds (between requests, or
     accepted and still silent) is closed: a busy client sends its next
     request long before that and gets it answered;
  4. exit 0 once no connection is left, or exit 1 at BATON_DRAIN_TIMEOUT
     (set by baton, a Go duration such as "30s"; default 30s), closing
     whatever is left.
"""

import ctypes
import errno
import http.server
import io
import os
import re
import select
import signal
import socket
import sys
import threading
import time

IDLE_GRACE = 1.0  # seconds
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
PID = os.getpid()
HELLO = f"hello from pid {PID}\n".encode()


def log(msg):
    print(f"python: {msg}", file=sys.stderr, flush=True)


def parse_duration(s):
    """Seconds in a Go duration ("30s", "1m30s", "500ms"), or None."""
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    part = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"
    if not s or not re.fullmatch(f"(?:{part})+", s):
        return None
    return sum(float(n) * unit[u] for n, u in re.findall(part, s))


def listener():
    """The listener named "http" (else the first one) passed by socket
    activation. Removes LISTEN_* so that no child takes them for its own."""
    fds = os.environ.pop("LISTEN_FDS", "")
    names = os.environ.pop("LISTEN_FDNAMES", "").split(":")
    if os.environ.pop("LISTEN_PID", "") != str(PID) or not fds.isdigit() or int(fds) < 1:
        raise SystemExit("python: no inherited listener (LISTEN_FDS unset): "
                         "run under baton or systemd socket activation")
    i = names.index("http") if "http" in names[: int(fds)] else 0
    for fd in range(3, 3 + int(fds)):
        os.set_inheritable(fd, False)
    return socket.socket(fileno=3 + i)


def notify(state):
    """Send an sd_notify state to $NOTIFY_SOCKET, if set."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), path)
    except OSError as e:
        log(f"notify {state}: {e}")


class Conn:
    """One connection: since when it waits for a request, and whether bytes
    arrived since then (a request is being read)."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()
        self.idle_since = time.monotonic()
        self.got_data = False
        self.kicked = False

    def idle(self):
        with self.lock:
            self.idle_since = time.monotonic()
            self.got_data = False


class MarkingReader(io.RawIOBase):
    """The connection's reads, noting when a request starts to arrive."""

    def __init__(self, conn):
        self.conn = conn

    def readable(self):
        return True

    def readinto(self, b):
        n = self.conn.sock.recv_into(b)
        if n:
            with self.conn.lock:
                self.conn.got_data = True
        return n


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body are separate writes

    def setup(self):
        super().setup()
        self.conn = Conn(self.connection)
        self.rfile = io.BufferedReader(MarkingReader(self.conn))
        self.server.track(self.conn)

    def handle_one_request(self):
        self.conn.idle()
        if self.server.draining:
            self.server.wake()  # a sweep is due at the end of the grace
        super().handle_one_request()

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.untrack(self.conn)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(HELLO)))
        self.send_header("X-Pid", str(PID))
        if self.server.draining:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(HELLO)

    do_HEAD = do_GET

    def log_message(self, format, *args):
        pass  # no access log: one line per request would drown baton's log


class Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer on an inherited socket, with its own accept loop
    and a drain."""

    def __init__(self, sock):
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.draining = False
        self.conns = set()
        self.changed = threading.Condition()

    def track(self, conn):
        with self.changed:
            self.conns.add(conn)

    def untrack(self, conn):
        with self.changed:
            self.conns.discard(conn)
            self.changed.notify()

    def wake(self):
        with self.changed:
            self.changed.notify()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def process_request(self, request, client_address):
        # Handler threads inherit the signal mask: with the stop signals
        # blocked there, the kernel delivers them to the main thread, where
        # they interrupt accept().
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            super().process_request(request, client_address)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def serve(self, wakeup):
        """Accept until draining. wakeup is the read end of the signal
        wakeup pipe."""
        libc = ctypes.CDLL(None, use_errno=True)
        lfd = self.socket.fileno()
        poller = select.poll()
        poller.register(lfd, select.POLLIN)
        poller.register(wakeup, select.POLLIN)
        while not self.draining:
            ready = [fd for fd, _ in poller.poll()]
            if wakeup in ready:
                try:
                    while len(os.read(wakeup, 64)) == 64:
                        pass
                except BlockingIOError:
                    pass
                continue  # the signal handler has run: check draining
            fd = libc.accept4(lfd, None, None, socket.SOCK_CLOEXEC)
            if fd < 0:
                err = ctypes.get_errno()
                if err in (errno.EINTR, errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise OSError(err, os.strerror(err))
            sock = socket.socket(fileno=fd)
            try:
                addr = sock.getpeername()
            except OSError:
                sock.close()  # the client is gone already
                continue
            self.process_request(sock, addr)

    def drain(self, timeout):
        """Wait for every connection to finish, closing the idle ones after
        the grace. Returns False if the deadline cut some."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.conns:
                now = time.monotonic()
                if now >= deadline:
                    return False
                wake = deadline
                for c in list(self.conns):
                    due = self.close_if_idle(c, now)
                    if due is not None:
                        wake = min(wake, due)
                self.changed.wait(wake - now)
        return True

    @staticmethod
    def close_if_idle(c, now):
        """Wake c's handler with end-of-file if c has waited for a request
        for the grace; else return when it will have (None: not waiting).

        shutdown(SHUT_RD) of this connection (never of the shared listener)
        makes the handler's pending read return, so the handler closes the
        connection itself. A request that has reached the kernel is left to
        be read; one that the handler just read is served (writing still
        works after SHUT_RD). What remains is a request still on its way
        from a client that was silent for the whole grace: HTTP/1.1 gives a
        server no way to close a connection atomically with a client's
        write."""
        with c.lock:
            if c.got_data or c.kicked:
                return None
            due = c.idle_since + IDLE_GRACE
            if now < due:
                return due
            if select.select([c.sock], [], [], 0)[0]:
                return None  # a request (or the client's FIN) is waiting
            c.kicked = True
            try:
                c.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # closed meanwhile
        return None

    def force(self, why):
        """Close every connection and exit 1."""
        conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        log(f"forced close of {len(conns)} open connections {why}")
        os._exit(1)


def main():
    timeout = parse_duration(os.environ.get("BATON_DRAIN_TIMEOUT")) or 30.0
    server = Server(listener())

    def on_signal(signum, frame):
        server.draining = True

    wr, ww = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(ww)
    for s in STOP_SIGNALS:
        signal.signal(s, on_signal)

    addr = server.socket.getsockname()
    if isinstance(addr, tuple):
        addr = "%s:%s" % addr[:2]
    # The mode is the socket's, as it was handed over (never changed here).
    mode = "blocking" if os.get_blocking(server.socket.fileno()) else "non-blocking"
    log(f"serving on {addr} pid {PID} (listener {mode})")
    notify("READY=1")
    server.serve(wr)

    notify("STOPPING=1")
    log(f"draining, {len(server.conns)} connections open")
    server.socket.close()  # this process's copy only
    if not server.drain(timeout):
        server.force(f"at the {timeout:g}s deadline")
    sys.exit(0)


if __name__ == "__main__":
    main()
