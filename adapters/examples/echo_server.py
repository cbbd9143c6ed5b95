#!/usr/bin/env python3
"""Reference server for the broker's backend wire protocol (adapters/PROTOCOL.md).

Plays the `echo` server class: Echo -> EchoResponse with the same children, in the request
element's namespace; any other operation is a `Client` fault. Python 3 standard library only.

    echo_server.py              serve one broker on stdin/stdout (the process adapter);
                                exit when stdin closes
    echo_server.py --tcp PORT   serve brokers over TCP on 127.0.0.1:PORT (the tcp adapter),
                                one thread per connection; PORT 0 picks a free port, and the
                                bound port is printed as "listening on 127.0.0.1:PORT"
"""
import io
import socketserver
import struct
import sys
import xml.etree.ElementTree as ET

PROTOCOL = 1
MAX_FRAME = 16 * 1024 * 1024
SERVER = "echo_server.py (reference)"


def read_frame(stream):
    """Read one frame: (kind, id, headers, payload), or None when the peer closed cleanly."""
    prefix = stream.read(4)
    if not prefix:
        return None                                   # end of stream between frames
    if len(prefix) < 4:
        raise ValueError("stream closed inside a length prefix")
    (length,) = struct.unpack(">I", prefix)           # 4-byte big-endian length
    if length == 0 or length > MAX_FRAME:
        raise ValueError("bad frame length %d" % length)
    body = stream.read(length)
    if len(body) < length:
        raise ValueError("stream closed inside a frame")
    head, sep, payload = body.partition(b"\n\n")      # header block ends at the first empty line
    if not sep:
        raise ValueError("header block not terminated")
    lines = head.decode("utf-8").split("\n")
    kind, _, msg_id = lines[0].partition(" ")         # first line: "KIND ID"
    headers = {}
    for line in lines[1:]:
        key, colon, value = line.partition(":")
        if not colon:
            raise ValueError("bad header line %r" % line)
        headers[key.strip().lower()] = value.strip()
    return kind, int(msg_id), headers, payload


def write_frame(stream, kind, msg_id, headers, payload=b""):
    """Write one frame and flush it (the broker is waiting for it)."""
    head = "%s %d\n" % (kind, msg_id)
    for key, value in headers.items():
        value = str(value)
        if "\n" in value or "\r" in value:            # header values are single lines
            value = value.replace("\r", " ").replace("\n", " ")
        head += "%s: %s\n" % (key, value)
    body = (head + "\n").encode("utf-8") + payload
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def echo(payload):
    """<Echo>...</Echo> -> <EchoResponse>...</EchoResponse>, same namespace and prefixes."""
    # Register the document's prefixes so ElementTree writes them back instead of ns0, ns1.
    for _, (prefix, uri) in ET.iterparse(io.BytesIO(payload), events=("start-ns",)):
        ET.register_namespace(prefix, uri)
    root = ET.fromstring(payload)
    # ElementTree names a namespaced element "{uri}Echo": keep the "{uri}" part, change the rest.
    namespace, _, local = root.tag.rpartition("}")
    root.tag = namespace + ("}" if namespace else "") + local + "Response"
    return ET.tostring(root)                          # bytes, no XML declaration


def handle(kind, headers, payload):
    """Answer one message from the broker: (kind, headers, payload)."""
    if kind == "REQUEST":
        operation = headers.get("operation", "")
        if operation != "Echo":
            return "REPLY", {"status": "fault", "fault-code": "Client",
                             "fault-string": "unknown operation %s" % operation}, b""
        try:
            return "REPLY", {"status": "ok"}, echo(payload)
        except ET.ParseError as e:
            return "REPLY", {"status": "fault", "fault-code": "Client",
                             "fault-string": "the payload is not XML: %s" % e}, b""
    if kind == "DIALOG-ABORT":
        return "ACK", {}, b""                         # context-free: nothing to abort
    # PREPARE, COMMIT, ABORT, RECOVER: this class is not transactional.
    return "REPLY", {"status": "error", "reason": "echo is not transactional"}, b""


def serve(inp, out, log):
    """The whole server: handshake, then one message at a time until the stream closes."""
    first = read_frame(inp)
    if first is None:
        return
    kind, _, headers, _ = first
    offered = headers.get("versions", headers.get("protocol", "")).split(",")
    if kind != "HELLO" or str(PROTOCOL) not in [v.strip() for v in offered]:
        write_frame(out, "HELLO", 0, {"protocol": PROTOCOL, "server": SERVER,
                                      "error": "this server speaks protocol 1 only"})
        log.write("echo_server: handshake failed (%s %r)\n" % (kind, offered))
        return
    write_frame(out, "HELLO", 0, {"protocol": PROTOCOL, "server": SERVER})
    while True:
        frame = read_frame(inp)
        if frame is None:
            return                                    # stdin closed: the broker is gone
        kind, msg_id, headers, payload = frame
        reply_kind, reply_headers, reply_payload = handle(kind, headers, payload)
        write_frame(out, reply_kind, msg_id, reply_headers, reply_payload)


class Connection(socketserver.StreamRequestHandler):
    """One TCP connection = one worker slot of the broker's tcp adapter."""
    def handle(self):
        try:
            serve(self.rfile, self.wfile, sys.stderr)
        except (ValueError, OSError) as e:
            sys.stderr.write("echo_server: connection closed: %s\n" % e)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--tcp":
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.daemon_threads = True
        with socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[2])), Connection) as srv:
            print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
            srv.serve_forever()
    else:
        try:
            serve(sys.stdin.buffer, sys.stdout.buffer, sys.stderr)
        except ValueError as e:                       # a malformed frame: the stream is lost
            sys.stderr.write("echo_server: %s; exiting\n" % e)
            sys.exit(2)
