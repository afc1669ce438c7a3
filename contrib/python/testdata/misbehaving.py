"""A WSGI app that misbehaves in every way TestAppMistakes checks that
baton.py contains, served by baton.py; with MISBEHAVING_THREAD=1 it also
leaves a thread running that never ends."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import baton  # noqa: E402


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/crlf":  # a header value with a line break in it
        start_response("302 Found", [("Location", "/x\r\nSet-Cookie: evil=1"), ("Content-Length", "0")])
        return [b""]
    if path == "/latin":  # a header value that is not Latin-1
        start_response("200 OK", [("X-Name", "caf\u20ac"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/long":  # more body than its Content-Length
        start_response("200 OK", [("Content-Length", "2")])
        return [b"okHTTP/1.1 200 OK\r\nX-Evil: 1\r\nContent-Length: 0\r\n\r\n"]
    if path == "/short":  # less body than its Content-Length
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12345"]
    if path == "/nocontent":  # a body on a 204
        start_response("204 No Content", [])
        return [b"oops"]
    if path == "/str":  # str, not bytes
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["text"]
    if path == "/echo":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    body = b"fine\n"
    start_response("200 OK", [("Content-Length", str(len(body))), ("X-Forwarded-For", environ.get("HTTP_X_FORWARDED_FOR", ""))])
    return [body]


if __name__ == "__main__":
    if os.environ.get("MISBEHAVING_THREAD") == "1":
        threading.Thread(target=lambda: time.sleep(3600)).start()
    baton.serve(app)
