# TLS echo server (protocol API) on asyncio or uvloop, for
# scripts/bench/run.sh tls: the same shape as scripts/bench/tls_echo.lua.
# usage: python3 tls_echo.py PORT CERT KEY [asyncio|uvloop]
import sys
sys.path.pop(0)  # this directory holds queue.py, which would shadow the stdlib's
import asyncio, socket, ssl

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
peer = sys.argv[4] if len(sys.argv) > 4 else "asyncio"
if peer == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", port,
                                           backlog=1024, ssl=ctx))
print(f"tls_echo.py: listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
loop.run_forever()
