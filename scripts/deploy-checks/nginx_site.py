"""The nginx site has the SSE, TLS and header settings, and no CSP of its own (argv[1]: the site)."""
import re, sys
text = re.sub(r"#[^\n]*", "", open(sys.argv[1]).read())
def block(start):
    i = text.index(start)
    depth, j = 0, text.index("{", i)
    for k in range(j, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[j:k]
    raise ValueError(start)
errors = []
sse = block("location /api/events/")
for want in ["proxy_buffering off;", "gzip off;", "proxy_cache off;"]:
    if want not in sse: errors.append(f"/api/events/: missing {want}")
m = re.search(r"proxy_read_timeout\s+(\d+)(s|m|h)?;", sse)
secs = int(m.group(1)) * {"s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)] if m else 0
if secs < 300: errors.append("/api/events/: proxy_read_timeout must be long (>= 300s)")
for want, why in [
    (r"proxy_http_version\s+1\.1;", "HTTP/1.1 to the upstream"),
    (r"proxy_set_header\s+Connection\s+\"\";", "keep-alive upstream connections"),
    (r"return\s+301\s+https://", "HTTP -> HTTPS redirect"),
    (r"listen\s+443\s+ssl", "TLS on 443"),
    (r"ssl_certificate\s+/etc/letsencrypt/live/[^/]+/fullchain\.pem;", "certificate placeholder"),
    (r"ssl_certificate_key\s+/etc/letsencrypt/live/[^/]+/privkey\.pem;", "key placeholder"),
    (r"client_max_body_size\s+\d+[kKmM]?;", "a small body limit"),
    (r"add_header\s+Strict-Transport-Security", "HSTS"),
    (r"add_header\s+X-Content-Type-Options", "nosniff"),
    (r"server\s+127\.0\.0\.1:8080;", "upstream 127.0.0.1:8080"),
    (r"location\s+/\s*\{", "location /"),
]:
    if not re.search(want, text): errors.append(f"missing: {why}")
if re.search(r"add_header\s+Content-Security-Policy", text):
    errors.append("the site adds a Content-Security-Policy: the daemon sends its own, and two are both enforced (the console breaks)")
if errors:
    print("\n".join(errors)); sys.exit(1)
print("SSE location unbuffered, TLS, redirect, headers, body limit")
