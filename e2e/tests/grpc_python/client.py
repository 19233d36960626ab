#!/usr/bin/python3
"""A standard gRPC client (Debian's python3-grpcio) against tcpd, with defaults.

Used by e2e/tests/grpc_python.rs. No .proto file and no generated code: the
message types come from the daemon's server reflection. The reflection
request/response themselves are small enough to encode and decode by hand
(Debian packages no grpcio-reflection), as are google.rpc.Status and
google.rpc.ErrorInfo in the error details.

usage: client.py SOCKET_PATH ECHO_IP ECHO_PORT REFUSED_PORT
Prints one line per check ("ok: ...") and exits non-zero on the first failure.
"""

import queue
import sys
import urllib.parse

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SOCKET, ECHO_IP, ECHO_PORT, REFUSED_PORT = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
TIMEOUT = 20


def check(cond, what):
    if not cond:
        print("FAIL: " + what, flush=True)
        sys.exit(1)
    print("ok: " + what, flush=True)


# ---------------------------------------------------------- protobuf wire, by hand

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def parse(buf):
    """Yields (field number, value) of a message; value is int or bytes."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wire)
        yield number, value


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


# ---------------------------------------------------------- server reflection

def reflect(channel, request):
    """One grpc.reflection.v1 ServerReflectionInfo exchange."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=None, response_deserializer=None)
    responses = list(call(iter([request]), timeout=TIMEOUT))
    if len(responses) != 1:
        check(False, "reflection answers one response per request, not %d" % len(responses))
    fields = dict(parse(responses[0]))
    if 7 in fields:
        err = dict(parse(fields[7]))
        raise RuntimeError("reflection error: %r" % err)
    return fields


def list_services(channel):
    # ServerReflectionRequest.list_services = 7 (string)
    fields = reflect(channel, field_bytes(7, b""))
    services = []
    for number, service in parse(fields[6]):  # list_services_response
        if number == 1:
            services.append(dict(parse(service))[1].decode())
    return services


def load_symbol(channel, pool, symbol):
    # ServerReflectionRequest.file_containing_symbol = 4
    fields = reflect(channel, field_bytes(4, symbol.encode()))
    for number, data in parse(fields[4]):  # file_descriptor_response
        if number == 1:
            fdp = descriptor_pb2.FileDescriptorProto.FromString(data)
            try:
                pool.Add(fdp)
            except TypeError:
                pass  # already added


def message_class(pool, name):
    desc = pool.FindMessageTypeByName(name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


class Api:
    """Unary calls of tcpd.v2, typed from the reflected descriptors."""

    def __init__(self, channel, pool):
        self.channel, self.pool = channel, pool

    def call(self, service, method, **fields):
        m = self.pool.FindServiceByName("tcpd.v2." + service).FindMethodByName(method)
        request = message_class(self.pool, m.input_type.full_name)(**fields)
        response = message_class(self.pool, m.output_type.full_name)
        rpc = self.channel.unary_unary(
            "/tcpd.v2.%s/%s" % (service, method),
            request_serializer=lambda msg: msg.SerializeToString(),
            response_deserializer=response.FromString)
        return rpc(request, timeout=TIMEOUT)

    def address(self, ip, port):
        cls = message_class(self.pool, "tcpd.v2.SocketAddress")
        return cls(ip=bytes(int(p) for p in ip.split(".")), port=port)


def stream_echo(channel, pool, api, label):
    """A Stream RPC (one connected socket's whole life) from grpcio's
    stream_stream: open by connecting, data up, data down, close -> OK."""
    Req = message_class(pool, "tcpd.v2.StreamRequest")
    Resp = message_class(pool, "tcpd.v2.StreamResponse")
    Open = message_class(pool, "tcpd.v2.StreamOpen")
    Connect = message_class(pool, "tcpd.v2.StreamConnect")
    Close = message_class(pool, "tcpd.v2.StreamClose")
    up = queue.Queue()

    def requests():
        while True:
            m = up.get()
            if m is None:
                return
            yield m

    call = channel.stream_stream(
        "/tcpd.v2.SocketService/Stream",
        request_serializer=lambda msg: msg.SerializeToString(),
        response_deserializer=Resp.FromString)
    responses = call(requests(), timeout=TIMEOUT)
    up.put(Req(open=Open(connect=Connect(remote=api.address(ECHO_IP, ECHO_PORT)))))
    first = next(responses)
    check(first.WhichOneof("frame") == "opened" and first.opened.handle != 0,
          "%s: Stream opened by connect, handle %d" % (label, first.opened.handle))
    up.put(Req(data=b"hello from grpcio"))
    got = b""
    while len(got) < 17:
        r = next(responses)
        if r.WhichOneof("frame") == "data":
            got += r.data
    check(got == b"HELLO FROM GRPCIO", "%s: Stream data came back: %r" % (label, got))
    up.put(Req(close=Close(consumed=len(got))))
    up.put(None)
    rest = list(responses)
    check(call_ok(responses), "%s: the Stream ends OK after close (%d more frames)" % (label, len(rest)))


def call_ok(call):
    return call.code() == grpc.StatusCode.OK


def error_info(err):
    """(reason, domain, metadata) of the google.rpc.ErrorInfo in a failed call."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = dict()
            details = []
            for number, v in parse(value):  # google.rpc.Status
                if number == 3:
                    details.append(dict(parse(v)))  # google.protobuf.Any
                else:
                    status[number] = v
            for any_ in details:
                if any_[1] == b"type.googleapis.com/google.rpc.ErrorInfo":
                    reason = domain = None
                    metadata = {}
                    for number, v in parse(any_[2]):
                        if number == 1:
                            reason = v.decode()
                        elif number == 2:
                            domain = v.decode()
                        elif number == 3:
                            entry = dict(parse(v))
                            metadata[entry[1].decode()] = entry[2].decode()
                    return reason, domain, metadata
    return None


def session(channel, label):
    services = list_services(channel)
    check("tcpd.v2.SocketService" in services and "tcpd.v2.AdminService" in services
          and "grpc.reflection.v1.ServerReflection" in services,
          "%s: reflection lists the services: %s" % (label, ", ".join(sorted(services))))
    pool = descriptor_pool.DescriptorPool()
    load_symbol(channel, pool, "tcpd.v2.SocketService")
    load_symbol(channel, pool, "tcpd.v2.AdminService")
    api = Api(channel, pool)

    status = api.call("AdminService", "Status")
    check(status.version != "" and status.tun_name != "",
          "%s: AdminService.Status: version %s, tun %s" % (label, status.version, status.tun_name))

    # A real connection to the kernel on the far side of the TUN.
    sock = api.call("SocketService", "Socket")
    check(sock.handle != 0, "%s: Socket -> handle %d" % (label, sock.handle))
    api.call("SocketService", "Connect", handle=sock.handle, address=api.address(ECHO_IP, ECHO_PORT))
    written = api.call("SocketService", "Write", handle=sock.handle, data=b"hello from grpcio")
    check(written.written == 17, "%s: Write 17 bytes" % label)
    got = b""
    while len(got) < 17:
        r = api.call("SocketService", "Read", handle=sock.handle, max_len=64)
        check(not r.eof, "%s: no EOF before the echo" % label)
        got += r.data
    check(got == b"HELLO FROM GRPCIO", "%s: the kernel peer's answer came back: %r" % (label, got))
    api.call("SocketService", "Close", handle=sock.handle)

    stream_echo(channel, pool, api, label)

    # A failing call: the details are a google.rpc.Status with an ErrorInfo.
    sock = api.call("SocketService", "Socket")
    try:
        api.call("SocketService", "Connect", handle=sock.handle,
                 address=api.address(ECHO_IP, REFUSED_PORT))
        check(False, "%s: connect to a closed port fails" % label)
    except grpc.RpcError as err:
        info = error_info(err)
        check(info is not None and info[0] == "ECONNREFUSED" and info[1] == "tcpd"
              and info[2].get("errno") == "111",
              "%s: refused connect -> %s, ErrorInfo %r" % (label, err.code(), info))
        check(err.code() != grpc.StatusCode.UNAVAILABLE,
              "%s: ECONNREFUSED is not UNAVAILABLE (retry policies must not retry it)" % label)
    api.call("SocketService", "Close", handle=sock.handle)
    try:
        api.call("SocketService", "Close", handle=sock.handle)
        check(False, "%s: closing twice fails" % label)
    except grpc.RpcError as err:
        info = error_info(err)
        check(info is not None and info[0] == "EBADF" and info[2].get("errno") == "9",
              "%s: second Close -> %s, ErrorInfo %r" % (label, err.code(), info))


def main():
    target = "unix:" + SOCKET
    print("grpcio " + grpc.__version__, flush=True)
    # 1. Defaults: whatever :authority this grpcio version sends.
    with grpc.insecure_channel(target) as channel:
        session(channel, "defaults")
    # 2. What grpc C-core >= 1.58 sends by default over a Unix socket (the
    #    percent-encoded path), and 3. what grpc-java sends (the raw path):
    #    forced here so the test covers them whatever grpcio Debian ships.
    for label, authority in (("percent-encoded authority", urllib.parse.quote(SOCKET, safe="")),
                             ("raw path authority", SOCKET)):
        with grpc.insecure_channel(target, options=[("grpc.default_authority", authority)]) as channel:
            session(channel, label)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
