#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/delay-proxy.py: a loopback TCP proxy that holds every chunk a client
sends for DELAY seconds before passing it to the upstream server; answers come
back at once. In front of an OAuth server it makes each HTTP request (one
token refresh) take DELAY seconds longer: the "slow provider" of the
head-of-line benchmark.

    delay-proxy.py UPSTREAM_PORT DELAY_SECONDS

Listens on 127.0.0.1 on a free port and prints it on stdout (one line)."""

import asyncio
import sys


async def pipe(reader, writer, delay):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main():
    upstream, delay = int(sys.argv[1]), float(sys.argv[2])

    async def handle(creader, cwriter):
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pipe(creader, uwriter, delay), pipe(ureader, cwriter, 0))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
