"""Python `websockets` peer for the ferry benchmarks, speaking the `plain` protocol:

  /echo      every message is sent back to its sender;
  any path   every message is sent to every *other* client (websockets.broadcast).

Binds 127.0.0.1 only. Usage: python server.py [PORT]   (0 = any free port)
Prints "python-websockets listening on http://127.0.0.1:PORT" once bound.
"""

import asyncio
import signal
import sys

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def handler(ws):
    if ws.request.path == "/echo":
        async for message in ws:
            await ws.send(message)
        return
    CLIENTS.add(ws)
    try:
        async for message in ws:
            broadcast((c for c in CLIENTS if c is not ws), message)
    finally:
        CLIENTS.discard(ws)


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    # compression=None: like the other servers, no permessage-deflate.
    # ping_interval=None: the other peers ping every 25 s or not at all during a run.
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=None,
        max_size=1 << 20,
        backlog=4096,
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"python-websockets listening on http://127.0.0.1:{bound}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
