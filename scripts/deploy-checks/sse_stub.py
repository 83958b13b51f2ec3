"""A stub upstream on 127.0.0.1:argv[1]: one SSE event, 3 s pause, another; JSON elsewhere."""
import sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/api/events/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"event: session\ndata: {\"n\":1}\n\n"); self.wfile.flush()
            time.sleep(3)
            self.wfile.write(b"event: session\ndata: {\"n\":2}\n\n"); self.wfile.flush()
            self.close_connection = True
        else:
            body = b'{"status":"ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
