#!/usr/bin/env python3
"""Kernel-socket peers for the libtcpd C tests.

usage: peer.py HOST
Listens on HOST with three servers and prints one line
"ports ECHO SHA CLOSER CLOSED": ECHO echoes everything, SHA reads to EOF
and answers the hex SHA-256 of what it read, CLOSER accepts and closes at
once, CLOSED is a port nobody listens on. Runs until killed.
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


def serve(host, handler):
    server = Server((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main():
    host = sys.argv[1]
    ports = [serve(host, h) for h in (Echo, Sha, Closer)]
    probe = socket.socket()
    probe.bind((host, 0))
    closed = probe.getsockname()[1]
    probe.close()
    print("ports", *ports, closed, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
