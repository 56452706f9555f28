"""The floor for any proxy on this machine: a bare TCP relay (thread per connection, recv_into/sendall).

No HTTP parsing, no framework, no checks: it forwards the client's bytes to the upstream and the
upstream's bytes back. Whatever it costs over a direct download is the price of one more loopback hop
and one more copy through user space, which no Python proxy (the resolver included) can avoid.
Run it as `python -m bench.relay --to PORT`; it prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import socket
import threading

BUF = 1 << 20


def pipe(src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(BUF)
    view = memoryview(buf)
    try:
        while n := src.recv_into(buf):
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(client: socket.socket, port: int) -> None:
    with client, socket.create_connection(("127.0.0.1", port)) as upstream:
        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", type=int, required=True, help="upstream port on 127.0.0.1")
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(client, args.to), daemon=True).start()


if __name__ == "__main__":
    main()
