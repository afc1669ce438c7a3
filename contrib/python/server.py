#!/usr/bin/env python3
"""A baton worker in Python 3 (standard library only): a WSGI app that
answers every request with "hello from pid N" and an X-Pid header, served
by baton.py, which takes the socket baton (or systemd) passed, reports
readiness and drains on SIGTERM without failing a request of a client
that does not retry:

    baton run --listen http=tcp://127.0.0.1:8080 --ready fd -- python3 contrib/python/server.py
    systemd-socket-activate -l 127.0.0.1:8080 --fdname=http python3 contrib/python/server.py

The same app runs under gunicorn (`server:app`, with contrib/gunicorn's
config for the drain). Besides "/", it has two routes that exercise the
WSGI framing: POST /echo answers the request body (read from wsgi.input),
/stream answers in pieces without a Content-Length, and /fail raises.
"""

import os

import baton

def app(environ, start_response):
    pid = str(os.getpid())  # at each request: under gunicorn --preload, the app is imported before the fork
    path = environ.get("PATH_INFO", "/")
    if path == "/echo":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body))), ("X-Pid", pid)])
        return [body]
    if path == "/fail":
        raise RuntimeError("this route fails, for the tests")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("X-Pid", pid)])
        return (f"part {i}\n".encode() for i in range(3))
    hello = f"hello from pid {pid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(hello))), ("X-Pid", pid)])
    return [hello]


if __name__ == "__main__":
    baton.serve(app)
