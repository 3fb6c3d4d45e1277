# The web pods' HTTP server: answers every GET with "hello from <pod> on <node>", so a
# client behind Service `web` can tell which endpoint served it. Port from argv[1].
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from multinode/{os.environ.get('HOSTNAME', '?')} on {os.environ.get('NODE_NAME', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Hello).serve_forever()
