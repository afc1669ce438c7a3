"""baton_uvicorn.py: run an ASGI app (FastAPI, Starlette, Django's ASGI
side, ...) on a stock uvicorn under baton, losing no request at a reload.
It is the `uvicorn` command with the same options, run as a file:

    baton run --listen http=tcp://127.0.0.1:8080 --ready fd -- \\
        python3 contrib/python/baton_uvicorn.py app:app

or, for an app started from Python, baton_uvicorn.run(app) instead of
uvicorn.run(app). It needs baton.py (beside it) and uvicorn 0.17 or newer.

Socket: the listener baton (or systemd) passed under the name "http" (else
the first one) by socket activation (LISTEN_FDS), in place of --host,
--port, --fd and --uds; baton runs the pool, so --workers and --reload
are refused. uvicorn's asyncio server switches the shared socket to
non-blocking, as Go and Node do.

Readiness: once uvicorn serves, after the app's lifespan startup, a line
on BATON_READY_FD (worker.ready = "fd") and READY=1 on NOTIFY_SOCKET
(worker.ready = "notify"). An app whose import or startup fails never
reports ready, so baton rolls the reload back.

Drain. Stock uvicorn, told to stop (Server.shutdown), calls shutdown() on
every connection, which closes at once a connection with no request in
progress: an idle keep-alive connection on which the client may be
sending its next request right then, and an accepted one whose request
has not been read yet. Those requests fail (EOF or reset). Here, on
SIGTERM or SIGINT:
  1. STOPPING=1; stop accepting (uvicorn closes this process's copy of
     the listener; other workers keep accepting on the shared socket);
  2. every response from now on carries "Connection: close", so uvicorn
     closes the connection after it;
  3. a connection with no request in progress, on which nothing arrived
     for IDLE_GRACE seconds, is closed: a busy client sends its next
     request long before that and gets it answered;
  4. uvicorn's own shutdown goes on (it waits for the connections, then
     the app's tasks and lifespan shutdown), and exits 0; at
     BATON_DRAIN_TIMEOUT (a Go duration set by baton; default 30s) the
     process exits 1 with whatever is left.
It works on both of uvicorn's HTTP/1.1 implementations (h11, httptools)
and event loops (asyncio, uvloop), through their common protocol
methods. A second SIGINT still forces uvicorn's exit, as stock.
"""

import asyncio
import importlib
import os
import select
import sys

import uvicorn

import baton

IDLE_GRACE = baton.IDLE_GRACE  # seconds
STARTUP_FAILURE = 3  # uvicorn's exit code when the app does not start


class _Drain:
    """Whether this process drains: read by every connection."""

    active = False


def close_on_drain(app):
    """The ASGI app, with "Connection: close" on every response that starts
    once the drain has begun (uvicorn then closes the connection after it)."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_closing(message):
            if _Drain.active and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": headers + [(b"connection", b"close")]}
            await send(message)

        return await app(scope, receive, send_closing)

    return wrapped


def draining_protocol(base):
    """uvicorn's HTTP protocol class base, whose shutdown() leaves a
    connection open until it has been idle for the grace."""

    class Protocol(base):
        def connection_made(self, transport):
            self.baton_received = 0  # bytes: more than at idle means a request arrives
            self.baton_timer = None
            super().connection_made(transport)
            if _Drain.active:  # accepted before the listener closed
                self.baton_idle()

        def data_received(self, data):
            self.baton_received += len(data)
            super().data_received(data)

        def on_response_complete(self):
            super().on_response_complete()
            if _Drain.active:
                self.baton_idle()

        def shutdown(self):
            # uvicorn's closes an idle connection now (see the module's doc).
            self.baton_idle()

        def connection_lost(self, exc):
            if self.baton_timer is not None:
                self.baton_timer.cancel()
            super().connection_lost(exc)

        def baton_idle(self):
            """Close this connection IDLE_GRACE from now if it stays idle."""
            if self.transport.is_closing() or self.cycle is not None and not self.cycle.response_complete:
                return  # closing, or a request in progress: its response re-arms this
            if self.baton_timer is not None:
                self.baton_timer.cancel()
            self.baton_timer = self.loop.call_later(IDLE_GRACE, self.baton_close_if_idle, self.baton_received)

        def baton_close_if_idle(self, received):
            """Close the connection if nothing arrived since it became idle.
            What remains is a request still on its way from a client that
            was silent for the whole grace: HTTP/1.1 gives a server no way
            to close a connection atomically with a client's write."""
            self.baton_timer = None
            if self.baton_received != received or self.cycle is not None and not self.cycle.response_complete:
                return  # a request arrived: its response re-arms this
            sock = self.transport.get_extra_info("socket")
            if sock is not None and _readable(sock.fileno()):
                # Bytes (or the client's FIN) wait in the kernel, not read
                # yet: this turn of the loop delivers them.
                self.baton_timer = self.loop.call_later(IDLE_GRACE / 10, self.baton_close_if_idle, received)
                return
            self.timeout_keep_alive_handler()  # uvicorn's own close of an idle connection

    Protocol.__name__ = Protocol.__qualname__ = "Baton" + base.__name__
    return Protocol


def _readable(fd):
    p = select.poll()  # not select(): descriptors above 1023
    p.register(fd, select.POLLIN)
    try:
        return bool(p.poll(0))
    except OSError:
        return False


class Server(uvicorn.Server):
    """uvicorn's server, reporting readiness once it serves and draining
    as the module's doc says."""

    def __init__(self, config, drain_timeout):
        super().__init__(config)
        self.drain_timeout = drain_timeout

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            baton.log(f"uvicorn serving on {sockets[0].getsockname()} pid {os.getpid()}")
            baton.ready()

    async def shutdown(self, sockets=None):
        _Drain.active = True
        baton.notify("STOPPING=1")
        # Stop accepting, and let the connections accepted already get
        # their transports before uvicorn closes the asyncio server: up to
        # Python 3.11, asyncio drops one whose transport comes after (an
        # assertion in Server._attach), resetting it.
        loop = asyncio.get_running_loop()
        for sock in sockets or []:
            loop.remove_reader(sock.fileno())
        await asyncio.sleep(0)
        baton.log(f"draining, {len(self.server_state.connections)} connections open")
        try:
            await asyncio.wait_for(super().shutdown(sockets=sockets), self.drain_timeout)
        except asyncio.TimeoutError:
            n = len(self.server_state.connections)
            baton.log(f"forced close of {n} open connections at the {self.drain_timeout:g}s deadline")
            sys.stderr.flush()
            os._exit(1)


def run(app, name="http", **kwargs):
    """uvicorn.run(app, **kwargs) on the listener baton passed under name,
    with readiness and the drain. kwargs are uvicorn's Config options."""
    for opt in ("fd", "uds"):
        if kwargs.get(opt) is not None:
            raise SystemExit(f"baton_uvicorn: --{opt} is not used: the socket is the one baton passes")
    if (kwargs.get("workers") or 1) > 1 or kwargs.get("reload"):
        raise SystemExit("baton_uvicorn: --workers and --reload are not used: baton runs the pool (worker.count)")
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    app_dir = kwargs.pop("app_dir", None)
    if app_dir is not None:
        sys.path.insert(0, app_dir)
    timeout = baton.parse_duration(os.environ.get("BATON_DRAIN_TIMEOUT"))
    sock = baton.listener(name)

    config = uvicorn.Config(app, **kwargs)
    config.load()
    config.loaded_app = close_on_drain(config.loaded_app)
    config.http_protocol_class = draining_protocol(config.http_protocol_class)
    server = Server(config, 30.0 if timeout is None else timeout)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def main():
    """The uvicorn command line, run by run() above."""
    # uvicorn's command calls its module's run() with the parsed options
    # (the package's uvicorn.main is the command, not the module).
    cli = importlib.import_module("uvicorn.main")
    cli.run = run
    cli.main()


if __name__ == "__main__":
    main()
