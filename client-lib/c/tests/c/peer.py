#!/usr/bin/env python3
"""Kernel-socket peers for the libtcpd C tests.

usage: peer.py HOST
       peer.py echo-client HOST PORT BYTES
The first form listens on HOST (IPv4 or IPv6; "::" takes both families,
as Linux's bindv6only = 0) with three servers and prints one line
"ports ECHO SHA CLOSER CLOSED": ECHO echoes everything, SHA reads to EOF
and answers the hex SHA-256 of what it read, CLOSER accepts and closes at
once, CLOSED is a port nobody listens on. Runs until killed.
The second connects to an echo server, sends BYTES of data while reading
the echo back, and exits 0 when the SHA-256 of both sides agree.
"""
import hashlib
import socket
import socketserver
import sys
import threading


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class Sha(socketserver.BaseRequestHandler):
    def handle(self):
        digest = hashlib.sha256()
        while True:
            data = self.request.recv(1 << 20)
            if not data:
                break
            digest.update(data)
        self.request.sendall(digest.hexdigest().encode())


class Closer(socketserver.BaseRequestHandler):
    def handle(self):
        pass  # the server closes the connection when handle returns


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # many.c connects 1 000 sockets at once: no SYN retries.
    request_queue_size = 1024


class Server6(Server):
    address_family = socket.AF_INET6


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(host, handler):
    server = (Server6 if family(host) == socket.AF_INET6 else Server)((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def echo_client(host, port, total):
    sock = socket.create_connection((host, port))
    sent, received = hashlib.sha256(), hashlib.sha256()
    got = 0

    def reader():
        nonlocal got
        while True:
            data = sock.recv(1 << 16)
            if not data:
                return
            received.update(data)
            got += len(data)

    thread = threading.Thread(target=reader)
    thread.start()
    block = bytes((i * 7 + 3) % 251 for i in range(65536))
    left = total
    while left > 0:
        chunk = block[: min(left, len(block))]
        sock.sendall(chunk)
        sent.update(chunk)
        left -= len(chunk)
    sock.shutdown(socket.SHUT_WR)
    thread.join(timeout=120)
    sock.close()
    ok = got == total and sent.hexdigest() == received.hexdigest()
    print("echo-client", "ok" if ok else "MISMATCH", got, received.hexdigest(), flush=True)
    sys.exit(0 if ok else 1)


def main():
    if sys.argv[1] == "echo-client":
        echo_client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    host = sys.argv[1]
    ports = [serve(host, h) for h in (Echo, Sha, Closer)]
    probe = socket.socket(family(host))
    probe.bind((host, 0))
    closed = probe.getsockname()[1]
    probe.close()
    print("ports", *ports, closed, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
