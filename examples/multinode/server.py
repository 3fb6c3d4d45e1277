# The web pods' HTTP server: answers every GET with "hello from <pod> on <node>", so a
# client behind Service `web` can tell which endpoint served it. Port from argv[1].
# For the demo's L7 act: POST is answered like GET; /flaky/<n> fails the first n requests
# of each path with 503 (a backend a retry can hide).
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock

seen = {}
lock = Lock()


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200
        if self.path.startswith("/flaky/"):
            with lock:
                seen[self.path] = seen.get(self.path, 0) + 1
                n = seen[self.path]
            try:
                fail = int(self.path.split("/")[2].split("?")[0])
            except ValueError:
                fail = 0
            if n <= fail:
                status = 503
        body = f"hello from multinode/{os.environ.get('HOSTNAME', '?')} on {os.environ.get('NODE_NAME', '?')}\n".encode()
        if status != 200:
            body = f"503 from multinode/{os.environ.get('HOSTNAME', '?')} (failure {n} of {fail})\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0") or "0")
        if length:
            self.rfile.read(length)
        self.do_GET()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Hello).serve_forever()
