"""The hello app as an ASGI app (standard library only), for ASGI servers
such as uvicorn: uvicorn --fd 3 --app-dir contrib/python asgi:app

It answers every request with "hello from pid N" and an X-Pid header. It
carries no drain of its own: the suite runs it on a stock uvicorn, to
measure what that loses at a reload, and with baton_uvicorn.py, the
recipe (docs/languages.md):
python3 contrib/python/baton_uvicorn.py --app-dir contrib/python asgi:app
"""

import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    pid = str(os.getpid())
    body = f"hello from pid {pid}\n".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-pid", pid.encode()),
    ]})
    await send({"type": "http.response.body", "body": body})
