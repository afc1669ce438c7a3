"""baton.py: what a Python WSGI app needs to run under baton, on the
standard library alone (Python 3.8 or newer). An existing app adds two
lines:

    import baton          # this file, next to the app or on PYTHONPATH
    baton.serve(app)      # instead of wsgiref's make_server(...).serve_forever()

serve(app, name="http") takes the listener baton (or systemd) passed under
name (else the first one) by socket activation (LISTEN_FDS), serves the
WSGI app on it with HTTP/1.1 keep-alive, one thread per connection, and
reports readiness: a line on the descriptor BATON_READY_FD names
(worker.ready = "fd"), and READY=1 on NOTIFY_SOCKET (worker.ready =
"notify"; also systemd's Type=notify). It runs the same under baton and
under systemd (or systemd-socket-activate):

    baton run --listen http=tcp://127.0.0.1:8080 --ready fd -- python3 app.py
    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http python3 app.py

The listener is used as inherited, in blocking mode. That mode belongs to
the socket, shared by every process holding it, so this module never
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

Requests: a body comes with one Content-Length; a request with a
Transfer-Encoding (a chunked body) is refused with 501, and one whose
framing could be read two ways with 400, closing the connection, so that
nothing in front of this server reads it differently. A body the app did
not read is read and dropped before the next request. Every read and
write on a connection waits IO_TIMEOUT at most (idle keep-alive
included).

Responses: a WSGI app that sets Content-Length keeps the connection alive
(the length is enforced: more is cut, less closes the connection); one
that does not is sent chunked to an HTTP/1.1 client, and with the
connection closed after it to an HTTP/1.0 one. Headers that cannot go on
the wire as they are (CR, LF or NUL in them, not Latin-1) make a 500.
1xx, 204, 304 and HEAD responses carry no body.
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
import wsgiref.simple_server

IDLE_GRACE = 1.0  # seconds
IO_TIMEOUT = 60.0  # seconds a read or write on a connection may wait (idle keep-alive included)
MAX_UNREAD_BODY = 1 << 20  # bytes of an unread request body dropped to keep the connection
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def log(msg):
    print(f"python: {msg}", file=sys.stderr, flush=True)


def parse_duration(s):
    """Seconds in a Go duration ("30s", "1m30s", "500ms"), or None."""
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    part = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"
    if not s or not re.fullmatch(f"(?:{part})+", s):
        return None
    return sum(float(n) * unit[u] for n, u in re.findall(part, s))


def listener(name="http"):
    """The listener named name (else the first one) passed by socket
    activation. Removes LISTEN_* so that no child takes them for its own."""
    fds = os.environ.pop("LISTEN_FDS", "")
    names = os.environ.pop("LISTEN_FDNAMES", "").split(":")
    if os.environ.pop("LISTEN_PID", "") != str(os.getpid()) or not fds.isdigit() or int(fds) < 1:
        raise SystemExit("python: no inherited listener (LISTEN_FDS unset): "
                         "run under baton or systemd socket activation")
    i = names.index(name) if name in names[: int(fds)] else 0
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


def ready():
    """Tell baton (or systemd) this worker serves: a line on
    $BATON_READY_FD, which is then closed, and READY=1 on $NOTIFY_SOCKET."""
    fd = os.environ.pop("BATON_READY_FD", "")
    if fd.isdigit():
        try:
            os.write(int(fd), b"READY=1\n")
            os.close(int(fd))
        except OSError as e:
            log(f"readiness descriptor {fd}: {e}")
    notify("READY=1")


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

    def reading(self):
        with self.lock:
            self.got_data = True


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


class Body(io.RawIOBase):
    """wsgi.input: the request body, never read past Content-Length (the
    next request on the connection follows it)."""

    def __init__(self, rfile, length):
        self.rfile = rfile
        self.left = length

    def readable(self):
        return True

    def readinto(self, b):
        if self.left <= 0:
            return 0
        n = self.rfile.readinto(memoryview(b)[: min(len(b), self.left)])
        self.left -= n
        if n == 0:
            self.left = 0  # the client went away mid-body
        return n

    def discard(self, limit):
        """Read what the app left of the body; False if more than limit."""
        if self.left > limit:
            return False
        while self.left > 0 and self.read(min(self.left, 65536)):
            pass
        return True


class Handler(wsgiref.simple_server.WSGIRequestHandler):
    """One connection, one request after another, each served by the WSGI
    app (wsgiref's handler builds the environ; this one keeps the
    connection alive and frames the response)."""

    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = IO_TIMEOUT  # of every read and write on the connection

    def setup(self):
        # TCP_NODELAY (headers and body are separate writes) is TCP's.
        self.disable_nagle_algorithm = self.request.family in (socket.AF_INET, socket.AF_INET6)
        super().setup()
        self.conn = self.server.conn_of(self.request)
        self.rfile = io.BufferedReader(MarkingReader(self.conn))
        self.body = None

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.untrack(self.conn)

    def handle(self):
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self):
        self.conn.idle()
        if self.server.draining:
            self.server.wake()  # a sweep is due at the end of the grace
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except TimeoutError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        self.conn.reading()  # a pipelined request may be in the buffer already
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        try:
            if not self.parse_request():
                return  # parse_request answered the error
        except TimeoutError:
            self.close_connection = True
            return
        length = self.body_length()
        if length is None:
            self.close_connection = True
            return
        # HTTP_X_A would be both X-A and X_A: the underscore form is dropped.
        for name in {k for k in self.headers.keys() if "_" in k}:
            del self.headers[name]
        self.body = Body(self.rfile, length)
        self.respond()
        if not self.close_connection and not self.body.discard(MAX_UNREAD_BODY):
            self.close_connection = True

    def body_length(self):
        """The request body's length, or None once the request has been
        answered with an error: a request whose framing could be read two
        ways (several or malformed Content-Length headers, any
        Transfer-Encoding, a broken header block) is refused, so that
        nothing in front of this server reads it differently."""
        if self.headers.defects:
            self.send_error(400, "Malformed header block")
            return None
        if self.headers.get_all("Transfer-Encoding"):
            self.send_error(501, "Transfer-Encoding is not supported; send a Content-Length")
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1 or lengths and not re.fullmatch(r"[0-9]{1,18}", lengths[0].strip()):
            self.send_error(400, "Bad Content-Length")
            return None
        return int(lengths[0]) if lengths else 0

    def respond(self):
        environ = self.get_environ()
        environ.update({
            "wsgi.input": io.BufferedReader(self.body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        })
        out = Response(self)
        try:
            result = self.server.app(environ, out.start_response)
            try:
                for chunk in result:
                    out.write(chunk)
                out.end()
            finally:
                if hasattr(result, "close"):
                    result.close()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            self.close_connection = True
            log(f"{self.command} {self.path}: the app failed:")
            sys.excepthook(*sys.exc_info())
            if not out.sent:
                self._headers_buffer = []  # what send_headers may have left
                try:
                    self.send_error(500)
                except OSError:
                    pass

    def log_message(self, format, *args):
        pass  # no access log: one line per request would drown baton's log


# What a header name may be (RFC 9110's token).
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Response:
    """A WSGI response on the handler's connection: the status and headers
    go out with the first body bytes (or at the end), framed by the app's
    Content-Length (enforced: more is cut, less closes the connection) or
    else chunked; 1xx, 204, 304 and HEAD responses carry no body."""

    def __init__(self, handler):
        self.h = handler
        self.status = None
        self.headers = []
        self.sent = False
        self.chunked = False
        self.length = None  # the app's Content-Length
        self.written = 0

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice")
        self.status, self.headers = status, list(headers)
        return self.write

    def bodiless(self):
        code = int(self.status[:3])
        return self.h.command == "HEAD" or 100 <= code < 200 or code in (204, 304)

    def check(self):
        """Raise ValueError for a status or header that cannot go on the
        wire as is: nothing is sent then, and the app's failure is a 500."""
        if self.status is None:
            raise AssertionError("the app returned before calling start_response")
        self.length = None
        if not re.fullmatch(r"[1-5][0-9]{2}( [^\r\n\0]*)?", self.status):
            raise ValueError(f"bad status {self.status!r}")
        for k, v in self.headers:
            if not isinstance(k, str) or not TOKEN.fullmatch(k):
                raise ValueError(f"bad header name {k!r}")
            if not isinstance(v, str) or any(c in v for c in "\r\n\0"):
                raise ValueError(f"bad value for header {k}: {v!r}")
            v.encode("latin-1")  # WSGI's header strings are Latin-1
            if k.lower() == "content-length":
                if not re.fullmatch(r"[0-9]{1,18}", v.strip()) or self.length is not None:
                    raise ValueError(f"bad Content-Length {v!r}")
                self.length = int(v)

    def send_headers(self, length_known):
        h = self.h
        self.check()
        code, _, reason = self.status.partition(" ")
        h.send_response(int(code), reason or None)
        for k, v in self.headers:
            h.send_header(k, v)
        if self.length is None and not length_known and not self.bodiless():
            if h.request_version == "HTTP/1.1":
                self.chunked = True
                h.send_header("Transfer-Encoding", "chunked")
            else:
                h.close_connection = True
        if h.body is not None and h.body.left > MAX_UNREAD_BODY:
            h.close_connection = True  # too much body left to drop and go on
        if h.server.draining or h.close_connection:
            h.send_header("Connection", "close")  # also sets close_connection
        h.end_headers()
        self.sent = True

    def write(self, data):
        if not isinstance(data, bytes):
            raise TypeError(f"the app gave {type(data).__name__}, not bytes, as body")
        if not data:
            return
        if not self.sent:
            self.send_headers(False)
        if self.bodiless():
            return
        if self.length is not None:
            if self.written + len(data) > self.length:
                data = data[: self.length - self.written]  # more than it said
                self.h.close_connection = True
            self.written += len(data)
        if self.chunked:
            self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        elif data:
            self.h.wfile.write(data)

    def end(self):
        if not self.sent:
            # Nothing written: an empty body, whose length is known.
            self.check()
            if self.length is None and not self.bodiless():
                self.headers.append(("Content-Length", "0"))
                self.length = 0
            self.send_headers(True)
        elif self.chunked:
            self.h.wfile.write(b"0\r\n\r\n")
        if self.length is not None and self.written < self.length and not self.bodiless():
            self.h.close_connection = True  # less than it said: the client sees the end
        self.h.wfile.flush()


class Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer on an inherited socket, with its own accept loop
    and a drain."""

    def __init__(self, sock, app):
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.app = app
        self.draining = False
        self.conns = set()
        self.pending = {}  # socket -> its Conn, until its thread takes it
        self.changed = threading.Condition()
        self.setup_environ()

    def setup_environ(self):
        # What wsgiref's WSGIServer gives every request's environ.
        addr = self.socket.getsockname()
        host, port = (addr[0], addr[1]) if isinstance(addr, tuple) else ("localhost", "")
        self.base_environ = {
            "SERVER_NAME": host, "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PORT": str(port), "REMOTE_HOST": "", "CONTENT_LENGTH": "", "SCRIPT_NAME": "",
        }

    def conn_of(self, sock):
        """The Conn process_request made for sock."""
        with self.changed:
            return self.pending.pop(sock)

    def untrack(self, conn):
        with self.changed:
            self.conns.discard(conn)
            self.changed.notify()

    def wake(self):
        with self.changed:
            self.changed.notify()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def process_request(self, request, client_address):
        # Tracked before its thread starts, so that a drain beginning now
        # waits for it.
        conn = Conn(request)
        with self.changed:
            self.conns.add(conn)
            self.pending[request] = conn
        # Handler threads inherit the signal mask: with the stop signals
        # blocked there, the kernel delivers them to the main thread, where
        # they interrupt accept().
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            super().process_request(request, client_address)
        except RuntimeError as e:  # no thread to be had
            log(f"cannot serve a connection: {e}")
            with self.changed:
                self.pending.pop(request, None)
            self.untrack(conn)
            request.close()
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
                if err in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: the connection waits in
                    # the queue (or goes to another worker) while this one
                    # serves what it has.
                    log(f"accept: {os.strerror(err)}; retrying in 100ms")
                    time.sleep(0.1)
                    continue
                raise OSError(err, os.strerror(err))
            sock = socket.socket(fileno=fd)
            try:
                addr = sock.getpeername()
            except OSError:
                sock.close()  # the client is gone already
                continue
            if sock.family == socket.AF_UNIX:
                addr = ("", 0)  # an unnamed unix peer: no address
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
            try:
                p = select.poll()  # not select(): descriptors above 1023
                p.register(c.sock.fileno(), select.POLLIN)
                if p.poll(0):
                    return None  # a request (or the client's FIN) is waiting
            except (OSError, ValueError):
                return None  # closed meanwhile
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


def serve(app, name="http"):
    """Serve the WSGI app on the inherited listener name until SIGTERM or
    SIGINT, drain, and exit (0 drained, 1 cut at the deadline)."""
    timeout = parse_duration(os.environ.get("BATON_DRAIN_TIMEOUT"))
    if timeout is None:
        timeout = 30.0
    server = Server(listener(name), app)

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
    log(f"serving on {addr} pid {os.getpid()} (listener {mode})")
    ready()
    server.serve(wr)

    notify("STOPPING=1")
    log(f"draining, {len(server.conns)} connections open")
    server.socket.close()  # this process's copy only
    if not server.drain(timeout):
        server.force(f"at the {timeout:g}s deadline")
    # Not sys.exit: a thread the app left running would hold the exit up.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
