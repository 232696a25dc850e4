#!/usr/bin/python3
"""Smart HTTP Git server for the end-to-end tests: `git http-backend` behind a small
threaded HTTP/1.1 server on 127.0.0.1 (the standard library only).

    git-http-server.py --root DIR [--port N] [--cert PEM --key PEM]
                       [--auth USER:PASS] [--log FILE]

- Prints the port it listens on (useful with --port 0, the default) as the first line
  of stdout, then serves until killed.
- Every request runs `git http-backend` as a CGI program with GIT_PROJECT_ROOT=DIR and
  GIT_HTTP_EXPORT_ALL, so every repository under DIR is served read-only.
- Request bodies are streamed to the program: by Content-Length, or decoded from
  `Transfer-Encoding: chunked` (then the program reads to end of input). A
  `Content-Encoding: gzip` body is passed on as it is, with HTTP_CONTENT_ENCODING set:
  http-backend inflates it itself.
- Responses are streamed back with chunked transfer encoding.
- --cert/--key serve TLS; --auth demands Basic credentials (401 with WWW-Authenticate
  otherwise).
- --log FILE: one line per request, `METHOD PATH STATUS BODY BYTES`: BODY is how the
  request body came (`-` none, `length`, `chunked`, with `+gzip` when compressed),
  BYTES every byte written to the client for it (status line, headers, body and chunk
  framing).
"""

import argparse
import base64
import hmac
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG_LOCK = threading.Lock()
BLOCK = 64 * 1024


def backend_command():
    """`git http-backend`, as the git on PATH runs it."""
    git = shutil.which("git") or "git"
    return [git, "http-backend"]


class CountingWriter:
    """Wraps the handler's output file and counts the bytes written through it."""

    def __init__(self, inner):
        self.inner = inner
        self.count = 0

    def write(self, data):
        self.count += len(data)
        return self.inner.write(data)

    def flush(self):
        self.inner.flush()

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "berth-test-git-http/1"

    # Set on the class by main().
    root = "."
    auth = None
    log_path = None

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            # The handshake runs here, in the request's thread, not in accept().
            self.request.do_handshake()
        super().setup()
        self.wfile = CountingWriter(self.wfile)

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError, socket.timeout) as e:
            self.log_message("connection ended: %s", e)

    def log_request(self, code="-", size="-"):
        # Each request is logged once, with its byte count, by finish_request().
        pass

    def do_GET(self):
        self.serve()

    def do_POST(self):
        self.serve()

    def record(self, status, before):
        if self.log_path is None:
            return
        sent = self.wfile.count - before
        line = "%s %s %s %s %d\n" % (self.command, self.path, status, self.body_kind(), sent)
        with LOG_LOCK:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line)

    def body_kind(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            kind = "chunked"
        elif int(self.headers.get("Content-Length") or 0) > 0:
            kind = "length"
        else:
            return "-"
        encoding = self.headers.get("Content-Encoding")
        return kind + ("+" + encoding if encoding else "")

    def authorized(self):
        if self.auth is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, self.auth.encode())

    def deny(self, before):
        body = b"authentication required\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="berth-test-git"')
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        # The request's body (if any) was not read: this connection cannot be reused.
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
        self.record(401, before)

    def cgi_env(self, chunked):
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_SOFTWARE": self.server_version,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.server.server_address[1]),
            "REQUEST_METHOD": self.command,
            "PATH_INFO": urllib.parse.unquote(path),
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
        }
        if self.auth is not None:
            env["REMOTE_USER"] = self.auth.split(":", 1)[0]
            env["AUTH_TYPE"] = "Basic"
        content_type = self.headers.get("Content-Type")
        if content_type:
            env["CONTENT_TYPE"] = content_type
        length = self.headers.get("Content-Length")
        if length is not None and not chunked:
            env["CONTENT_LENGTH"] = length
        for name in ("Content-Encoding", "Git-Protocol", "User-Agent", "Accept"):
            value = self.headers.get(name)
            if value is not None:
                env["HTTP_" + name.upper().replace("-", "_")] = value
        return env

    def copy_body(self, sink, size):
        """Copies `size` bytes of the request body to `sink`."""
        while size:
            data = self.rfile.read(min(size, BLOCK))
            if not data:
                raise ConnectionError("request body cut short")
            sink.write(data)
            size -= len(data)

    def pump_body(self, sink, chunked):
        """Streams the request body into `sink` (the program's stdin), then closes it."""
        try:
            if chunked:
                while True:
                    line = self.rfile.readline(1024)
                    if not line:
                        break
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        # Trailers, up to the empty line.
                        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    self.copy_body(sink, size)
                    self.rfile.readline(16)
            else:
                self.copy_body(sink, int(self.headers.get("Content-Length") or 0))
        except (BrokenPipeError, ConnectionError, ValueError) as e:
            self.log_message("request body: %s", e)
            self.close_connection = True
        finally:
            try:
                sink.close()
            except BrokenPipeError:
                pass

    def send_chunk(self, data):
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def serve(self):
        before = self.wfile.count
        if not self.authorized():
            self.deny(before)
            return
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        proc = subprocess.Popen(
            backend_command(),
            env=self.cgi_env(chunked),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
        )
        pump = threading.Thread(target=self.pump_body, args=(proc.stdin, chunked))
        pump.start()
        status = 502
        try:
            # The CGI headers, up to the blank line.
            headers = []
            while True:
                line = proc.stdout.readline()
                if not line or line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
                headers.append((name.strip(), value.strip()))
            status = 200
            reason = None
            for name, value in headers:
                if name.lower() == "status":
                    code, _, reason = value.partition(" ")
                    status = int(code)
            self.send_response(status, reason or None)
            for name, value in headers:
                if name.lower() not in ("status", "content-length", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                data = proc.stdout.read1(BLOCK)
                if not data:
                    break
                self.send_chunk(data)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            pump.join()
            proc.stdout.close()
            proc.wait()
            self.record(status, before)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="the project root (GIT_PROJECT_ROOT)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", help="PEM certificate chain: serve TLS")
    p.add_argument("--key", help="PEM private key of --cert")
    p.add_argument("--auth", help="USER:PASS: demand Basic credentials")
    p.add_argument("--log", help="append `METHOD PATH STATUS BODY BYTES` per request")
    args = p.parse_args()
    if bool(args.cert) != bool(args.key):
        p.error("--cert and --key go together")

    Handler.root = os.path.abspath(args.root)
    Handler.auth = args.auth
    Handler.log_path = args.log
    server = Server(("127.0.0.1", args.port), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
