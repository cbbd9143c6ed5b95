#!/usr/bin/env python3
"""Reference server for the broker's backend wire protocol (adapters/PROTOCOL.md).

Python 3 standard library only (Unix). One program plays three kinds of server class:

  Echo        context-free: <Echo>...</Echo> -> <EchoResponse> with the same children, in the
              request element's namespace.
  Put, Get    transactional key-value store: <Put><key>k</key><value>v</value></Put> and
              <Get><key>k</key></Get> -> <GetResponse><value>v</value></GetResponse> (no <value>
              when the key is absent). Under a transaction id, writes stay in this process's
              memory, visible to that transaction only, until COMMIT. PREPARE makes them durable
              in <state-dir>/prepared/<txid>.json (fsync) before voting yes; COMMIT applies them
              to <state-dir>/data.json (written to a temporary file, fsynced, renamed). COMMIT and
              ABORT are idempotent, and any process sharing the state directory can resolve a
              prepared transaction from its file; RECOVER lists those files. Without a
              transaction, Put commits at once. RollbackOnly (under a transaction) makes its
              PREPARE vote no. Writers are not locked against each other: the last commit wins.
  Count       context-sensitive: a dialog per session counting 1, 2, 3, ... (dialog-continue);
  CountEnd    ends it with dialog-end and the final count; DIALOG-ABORT discards it.
  Info        <InfoResponse> with this process's pid, the worker id the broker gave it, and the
              request's session, transaction and timeout-ms; <sleepMs>n</sleepMs> waits first.

Any other operation is a `Client` fault.

    echo_server.py [--state-dir DIR]              serve one broker on stdin/stdout (the process
                                                  adapter); exit when stdin closes
    echo_server.py --tcp PORT [--state-dir DIR]   serve brokers over TCP on 127.0.0.1:PORT (the
                                                  tcp adapter), one thread per connection; PORT 0
                                                  picks a free port, printed as
                                                  "listening on 127.0.0.1:PORT"

Every worker of one class must get the same --state-dir (default: a new temporary directory,
which suits a single worker only): the broker may resolve a transaction on any of them.
"""
import argparse
import fcntl
import io
import json
import os
import socketserver
import struct
import sys
import tempfile
import time
import urllib.parse
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
        headers[key.strip().lower()] = value.strip()  # unknown headers (timeout-ms...) are fine
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


def response(request, name, **children):
    """<{ns}name><child>text</child>...</name> in the request element's namespace."""
    ns = request.tag[:request.tag.index("}") + 1] if request.tag.startswith("{") else ""
    root = ET.Element(ns + name)
    for tag, value in children.items():
        if value is not None:
            ET.SubElement(root, ns + tag).text = str(value)
    return ET.tostring(root)


def child(element, name):
    """The text of a direct child, whatever its namespace (None when absent)."""
    for c in element:
        if c.tag.rpartition("}")[2] == name:
            return c.text or ""
    return None


def write_durably(path, data):
    """Write a JSON file atomically: a crash leaves the old file or the new one, never half."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)                              # make the rename itself durable
    finally:
        os.close(dir_fd)


class Store:
    """Committed data and prepared transactions in a directory shared by all workers."""
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "prepared"), exist_ok=True)

    def committed(self):
        try:
            with open(os.path.join(self.root, "data.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def apply(self, writes):
        # Read-modify-write under a lock file: other processes commit into the same data.json.
        with open(os.path.join(self.root, "lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.committed()
            data.update(writes)
            write_durably(os.path.join(self.root, "data.json"), data)

    def prepared_path(self, txid):
        # Transaction ids are tokens without whitespace, but may hold "/": quote them.
        return os.path.join(self.root, "prepared", urllib.parse.quote(txid, safe="") + ".json")

    def prepare(self, txid, writes):
        write_durably(self.prepared_path(txid), writes)

    def prepared(self, txid):
        try:
            with open(self.prepared_path(txid)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def forget(self, txid):
        try:
            os.remove(self.prepared_path(txid))
        except FileNotFoundError:
            pass

    def in_doubt(self):
        names = sorted(os.listdir(os.path.join(self.root, "prepared")))
        return [urllib.parse.unquote(n[:-5]) for n in names if n.endswith(".json")]


class Worker:
    """One broker connection: its open transactions and dialogs live here, in memory."""
    def __init__(self, store):
        self.store = store
        self.id = None            # the broker's name for us, from HELLO
        self.txns = {}            # txid -> {key: value} written, not yet prepared
        self.rollback_only = set()
        self.dialogs = {}         # session -> count

    def request(self, headers, payload):
        """REQUEST -> (reply headers, payload)."""
        operation = headers.get("operation", "")
        session, txid = headers.get("session"), headers.get("transaction")
        try:
            if operation == "Echo":
                return {"status": "ok"}, echo(payload)
            root = ET.fromstring(payload)
        except ET.ParseError as e:
            return fault("the payload is not XML: %s" % e)
        if txid is not None:
            self.txns.setdefault(txid, {})           # known from now on, even if it only reads
        if operation == "Put":
            key, value = child(root, "key"), child(root, "value")
            if key is None or value is None:
                return fault("Put needs <key> and <value>")
            if txid is None:
                self.store.apply({key: value})
            else:
                self.txns[txid][key] = value         # invisible to others until COMMIT
            return {"status": "ok"}, response(root, "PutResponse")
        if operation == "Get":
            key = child(root, "key")
            mine = self.txns.get(txid, {}) if txid is not None else {}
            value = mine[key] if key in mine else self.store.committed().get(key)
            return {"status": "ok"}, response(root, "GetResponse", value=value)
        if operation == "RollbackOnly" and txid is not None:
            self.rollback_only.add(txid)
            return {"status": "ok"}, response(root, "RollbackOnlyResponse")
        if operation in ("Count", "CountEnd"):
            if session is None:
                return fault("%s needs a session" % operation)
            dialog = headers.get("dialog", "none")
            if dialog == "continue" and session not in self.dialogs:
                return {"status": "dialog-abort"}, b""    # we hold no such dialog
            n = (0 if dialog == "begin" else self.dialogs.get(session, 0)) + 1
            if operation == "CountEnd":
                self.dialogs.pop(session, None)
                return {"status": "dialog-end"}, response(root, "CountEndResponse", n=n)
            self.dialogs[session] = n
            return {"status": "dialog-continue"}, response(root, "CountResponse", n=n)
        if operation == "Info":
            delay = child(root, "sleepMs") or "0"
            if not delay.isdigit():
                return fault("sleepMs is not a number")
            time.sleep(int(delay) / 1000)
            return {"status": "ok"}, response(
                root, "InfoResponse", pid=os.getpid(), worker=self.id, session=session,
                transaction=txid, timeoutMs=headers.get("timeout-ms"))
        return fault("unknown operation %s" % operation)

    def control(self, kind, headers):
        """PREPARE, COMMIT, ABORT, RECOVER, DIALOG-ABORT -> (kind, headers, payload)."""
        txid = headers.get("transaction", "")
        if kind == "PREPARE":
            if txid not in self.txns:                # never seen, or lost with a crash
                return "VOTE", {"transaction": txid, "vote": "no",
                                "reason": "unknown transaction"}, b""
            writes = self.txns.pop(txid)
            if txid in self.rollback_only:
                self.rollback_only.discard(txid)
                return "VOTE", {"transaction": txid, "vote": "no",
                                "reason": "marked rollback-only"}, b""
            self.store.prepare(txid, writes)         # durable before the yes: a promise
            return "VOTE", {"transaction": txid, "vote": "yes"}, b""
        if kind == "COMMIT":
            writes = self.txns.pop(txid, None)       # one-phase: straight from memory
            if writes is None:
                writes = self.store.prepared(txid)   # phase two, on any worker of the class
            if writes:
                self.store.apply(writes)
            self.store.forget(txid)                  # after applying: a crash between re-applies
            self.rollback_only.discard(txid)
            return "ACK", {"transaction": txid}, b""
        if kind == "ABORT":
            self.txns.pop(txid, None)
            self.rollback_only.discard(txid)
            self.store.forget(txid)
            return "ACK", {"transaction": txid}, b""
        if kind == "RECOVER":
            txids = self.store.in_doubt()
            return "RECOVERED", {"count": len(txids)}, "".join(t + "\n" for t in txids).encode()
        if kind == "DIALOG-ABORT":
            self.dialogs.pop(headers.get("session"), None)   # idempotent
            return "ACK", {}, b""
        return "REPLY", {"status": "error", "reason": "unknown message kind %s" % kind}, b""


def fault(text):
    return {"status": "fault", "fault-code": "Client", "fault-string": text}, b""


def serve(inp, out, log, store):
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
    worker = Worker(store)
    worker.id = headers.get("worker")
    while True:
        frame = read_frame(inp)
        if frame is None:
            return                                    # stdin closed: the broker is gone
        kind, msg_id, headers, payload = frame
        if kind == "REQUEST":
            reply_headers, reply_payload = worker.request(headers, payload)
            write_frame(out, "REPLY", msg_id, reply_headers, reply_payload)
        else:
            reply_kind, reply_headers, reply_payload = worker.control(kind, headers)
            write_frame(out, reply_kind, msg_id, reply_headers, reply_payload)


class Connection(socketserver.StreamRequestHandler):
    """One TCP connection = one worker slot of the broker's tcp adapter."""
    store = None

    def handle(self):
        try:
            serve(self.rfile, self.wfile, sys.stderr, self.store)
        except (ValueError, OSError) as e:
            sys.stderr.write("echo_server: connection closed: %s\n" % e)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="reference server for adapters/PROTOCOL.md")
    parser.add_argument("--tcp", type=int, metavar="PORT", help="serve over TCP on 127.0.0.1")
    parser.add_argument("--state-dir", help="durable transaction state, shared by the class")
    args = parser.parse_args()
    state = Store(args.state_dir or tempfile.mkdtemp(prefix="echo_server."))
    if args.tcp is not None:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.daemon_threads = True
        Connection.store = state
        with socketserver.ThreadingTCPServer(("127.0.0.1", args.tcp), Connection) as srv:
            print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
            srv.serve_forever()
    else:
        try:
            serve(sys.stdin.buffer, sys.stdout.buffer, sys.stderr, state)
        except ValueError as e:                       # a malformed frame: the stream is lost
            sys.stderr.write("echo_server: %s; exiting\n" % e)
            sys.exit(2)
