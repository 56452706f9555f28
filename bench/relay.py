"""The floor for any proxy on this machine: a bare relay (thread per connection, recv_into/sendall).

No HTTP parsing, no framework, no checks: it forwards the client's bytes to the upstream and the
upstream's bytes back. Whatever it costs over a direct download is the price of one more loopback hop
and one more copy through user space, which no Python proxy (the resolver included) can avoid.
With `--tls-ca` it speaks TLS to the upstream (verifying it with that CA) and plain to the client: the
floor for an HTTPS upstream, where each read returns one TLS record, so it fills its 1 MiB buffer from the
records already arrived before each write. That mode forwards one request (the bench client's, which asks
the upstream to close) and then the answer until the upstream closes.
Run it as `python -m bench.relay --to PORT`; it prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import select
import socket
import ssl
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


def pipe_tls(src: ssl.SSLSocket, dst: socket.socket) -> None:
    """Upstream TLS to client: every record at hand into one buffer, then one sendall."""
    buf = bytearray(BUF)
    view = memoryview(buf)
    src.setblocking(False)
    eof = False
    try:
        while not eof:
            n = 0
            try:
                while n < BUF:
                    got = src.recv_into(view[n:])
                    if not got:
                        eof = True
                        break
                    n += got
            except ssl.SSLWantReadError:
                pass
            if n:
                dst.sendall(view[:n])
            elif not eof:
                select.select([src], [], [])
    except OSError:
        pass


def handle(client: socket.socket, port: int) -> None:
    with client, socket.create_connection(("127.0.0.1", port)) as upstream:
        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join()


def handle_tls(client: socket.socket, port: int, ctx: ssl.SSLContext) -> None:
    with client, ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1") as up:
        head = b""
        while b"\r\n\r\n" not in head:
            got = client.recv(65536)
            if not got:
                return
            head += got
        up.sendall(head)
        pipe_tls(up, client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", type=int, required=True, help="upstream port on 127.0.0.1")
    parser.add_argument("--tls-ca", default="", help="speak TLS to the upstream, trusting this CA")
    args = parser.parse_args()
    ctx = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        target, extra = (handle_tls, (ctx,)) if ctx else (handle, ())
        threading.Thread(target=target, args=(client, args.to, *extra), daemon=True).start()


if __name__ == "__main__":
    main()
