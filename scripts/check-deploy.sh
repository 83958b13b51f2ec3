#!/usr/bin/env bash
# Validates deploy/ without Docker or a running systemd: the systemd unit
# (systemd-analyze verify + security, required/forbidden options), Chromium's sandbox under the
# unit's privilege settings and the container seccomp profile, the nginx site (nginx -t, then a
# real SSE round trip through it on loopback), compose.yaml and compose.cluster.yaml, the Dockerfile,
# env.example against src/config.rs, the README, and its nginx set-up for several nodes (nginx -t,
# then live in front of three stand-in nodes). One line per check; exits non-zero if any check fails.
# Runs from anywhere (works on the repository root), as root on Debian bookworm; idempotent.
# What it changes on the machine, said up front (and printed before it happens): it installs its
# tools with apt-get when missing (systemd, nginx, openssl, curl, util-linux, python3-yaml,
# python3-seccomp), and only during that install writes /usr/sbin/policy-rc.d (removed right
# after) so that installing nginx does not start the system's nginx on port 80. Everything else
# lives in a temp folder that is removed at exit; it leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

D=deploy
UNIT=$D/systemd/wa-supervisor.service
CHECKS=scripts/deploy-checks # the Python checks this script runs
SITE=$D/nginx/wa-supervisor.conf
PY=/usr/bin/python3 # Debian's python, where python3-yaml / python3-seccomp install

# ---- tools --------------------------------------------------------------------------------
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
{ [ -x "$PY" ] && "$PY" -c 'import yaml' 2>/dev/null; } || need+=(python3-yaml)
{ [ -x "$PY" ] && "$PY" -c 'import seccomp' 2>/dev/null; } || need+=(python3-seccomp)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "check-deploy: missing packages: ${need[*]} (run as root)" >&2
    exit 1
  fi
  echo "check-deploy: installing ${need[*]} with apt-get; a temporary /usr/sbin/policy-rc.d keeps nginx's service from starting during the install (removed after)"
  export DEBIAN_FRONTEND=noninteractive
  # Installing nginx must not start the system's nginx (port 80): forbid service starts
  # during the install, unless the machine already has a policy of its own.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; } || rc=$?
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { echo "check-deploy: apt-get failed ($rc)" >&2; exit 1; }
fi

# ---- harness ------------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/check-deploy.XXXXXX)
chmod 0755 "$TMP"
# Background processes (each the leader of its own process group, via setsid) are recorded in
# a file, not a variable: the checks run in subshells.
PIDFILE=$TMP/pids
: >"$PIDFILE"
track() { echo "$1" >>"$PIDFILE"; }
stop_tracked() {
  local p
  [ -s "$PIDFILE" ] || return 0
  while read -r p; do
    kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true
  done <"$PIDFILE"
  while read -r p; do
    for _ in $(seq 1 25); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$p" 2>/dev/null || true
  done <"$PIDFILE"
  : >"$PIDFILE"
}
cleanup() {
  stop_tracked
  rm -rf "$TMP"
}
trap cleanup EXIT

passed=0
failed=0
# check NAME COMMAND...: runs COMMAND with its output captured; one line per check.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    printf 'ok    %s%s\n' "$name" "${out:+ ($(printf '%s' "$out" | tail -n1))}"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$name"
    printf '%s\n' "$out" | sed 's/^/        /'
  fi
}
skip() { printf 'skip  %s (%s)\n' "$1" "$2"; }

# The unit's [Service] values of KEY, one per line (last wins in systemd, so print all).
unit_values() { sed -n "s/^[[:space:]]*$1=//p" "$UNIT"; }

# ---- files present ------------------------------------------------------------------------
files_present() {
  local f missing=0
  for f in "$UNIT" $D/systemd/wa-supervisor-backup.service $D/systemd/wa-supervisor-backup.timer $D/Dockerfile $D/Dockerfile.dockerignore $D/chromium-seccomp.json \
    $D/compose.yaml $D/compose.cluster.yaml "$SITE" $D/env.example $D/README.md; do
    [ -s "$f" ] || { echo "missing or empty: $f"; missing=1; }
  done
  return $missing
}
check "deploy/: every file present" files_present

# ---- systemd ------------------------------------------------------------------------------
# systemd-analyze verify needs ExecStart= to exist: verify a copy whose ExecStart points at a
# stub, everything else byte for byte. It exits 0 on unknown keys or bad values (only logs
# them), so any output at all is a failure.
systemd_verify() {
  mkdir -p "$TMP/unit"
  printf '#!/bin/sh\nexit 0\n' >"$TMP/unit/wa-supervisor"
  chmod 0755 "$TMP/unit/wa-supervisor"
  grep -q '^ExecStart=/usr/local/bin/wa-supervisor$' "$UNIT" ||
    { echo "ExecStart is not /usr/local/bin/wa-supervisor"; return 1; }
  sed "s#^ExecStart=/usr/local/bin/wa-supervisor#ExecStart=$TMP/unit/wa-supervisor#" "$UNIT" \
    >"$TMP/unit/wa-supervisor.service"
  local out
  out=$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no --generators=no \
    "$TMP/unit/wa-supervisor.service" 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  echo "no warnings"
}
check "systemd: systemd-analyze verify" systemd_verify

# The backup service and its timer: verified together, the binary in ExecStart a stub.
systemd_backup_verify() {
  mkdir -p "$TMP/backup-unit"
  local svc=$D/systemd/wa-supervisor-backup.service timer=$D/systemd/wa-supervisor-backup.timer
  grep -q 'exec /usr/local/bin/wa-supervisor backup --out' "$svc" ||
    { echo "ExecStart does not run wa-supervisor backup"; return 1; }
  cp "$svc" "$timer" "$TMP/backup-unit/"
  local out
  out=$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no --generators=no \
    "$TMP/backup-unit/wa-supervisor-backup.timer" "$TMP/backup-unit/wa-supervisor-backup.service" 2>&1) ||
    { echo "$out"; return 1; }
  # The binary itself is not installed here: only that line may be reported.
  out=$(printf '%s\n' "$out" | grep -v '^$' | grep -v 'wa-supervisor-backup.service:.*/usr/local/bin/wa-supervisor' || true)
  [ -z "$out" ] || { echo "$out"; return 1; }
  # The command line the shell runs, after systemd's own expansion ($$ -> $, %% -> %).
  local line
  line=$(sed -n 's/^ExecStart=\/bin\/sh -c //p' "$svc" | sed 's/\$\$/$/g; s/%%/%/g')
  mkdir -p "$TMP/backup-run/bin"
  printf '#!/bin/sh\nprintf "%%s\\n" "$@"\n' >"$TMP/backup-run/bin/wa-supervisor"
  chmod 0755 "$TMP/backup-run/bin/wa-supervisor"
  local args
  args=$(BACKUP_RECIPIENT=age1example sh -c "$(printf '%s' "${line:1:${#line}-2}" | sed "s#/usr/local/bin/wa-supervisor#$TMP/backup-run/bin/wa-supervisor#")")
  [[ "$args" == *$'backup\n--out\n/var/lib/wa-supervisor-backups/wa-supervisor-2'*$'.backup\n--encrypt-to\nage1example' ]] ||
    { echo "the shell runs: $args"; return 1; }
  args=$(sh -c "$(printf '%s' "${line:1:${#line}-2}" | sed "s#/usr/local/bin/wa-supervisor#$TMP/backup-run/bin/wa-supervisor#")")
  [[ "$args" != *encrypt* ]] || { echo "without BACKUP_RECIPIENT: $args"; return 1; }
  echo "service and timer verify; the command line expands as meant"
}
check "systemd: the backup service and timer" systemd_backup_verify

systemd_required() {
  local bad=0 v
  want() { # KEY REGEX WHY
    v=$(unit_values "$1" | tail -n1)
    [[ "$v" =~ $2 ]] || { echo "$1=${v:-<unset>}: $3"; bad=1; }
  }
  want User '^wa-supervisor$' "a dedicated user (Chromium's sandbox needs non-root)"
  want Group '^wa-supervisor$' "the dedicated group"
  want Restart '^on-failure$' "restart on failure"
  want KillMode '^mixed$' "SIGTERM to the daemon only, SIGKILL to leftovers"
  want KillSignal '^(SIGTERM)?$' "graceful stop is SIGTERM"
  want EnvironmentFile '^-?/etc/wa-supervisor/env$' "settings from /etc/wa-supervisor/env"
  want StateDirectory '^wa-supervisor$' "/var/lib/wa-supervisor for data"
  want NoNewPrivileges '^(yes|true)$' "hardening"
  want ProtectSystem '^strict$' "hardening"
  want ProtectHome '^(yes|true|read-only|tmpfs)$' "hardening"
  want PrivateTmp '^(yes|true)$' "hardening"
  want OOMPolicy '^continue$' "an OOM-killed browser must not stop every session"
  want ReadWritePaths '/var/www/whatsapp-sessions' "the legacy SESSIONS_DIR must stay writable"
  local stop nofile
  stop=$(unit_values TimeoutStopSec | tail -n1)
  [[ "$stop" =~ ^([0-9]+)s?$ ]] && [ "${BASH_REMATCH[1]}" -ge 30 ] ||
    { echo "TimeoutStopSec=${stop:-<unset>}: must be >= 30s (graceful shutdown takes up to 15 s)"; bad=1; }
  nofile=$(unit_values LimitNOFILE | tail -n1)
  [[ "$nofile" =~ ^[0-9]+$ ]] && [ "$nofile" -ge 8192 ] ||
    { echo "LimitNOFILE=${nofile:-<unset>}: must be >= 8192 for many browsers"; bad=1; }
  [ $bad = 0 ] && echo "user, restart, stop, env, state dir, limits, hardening"
  return $bad
}
check "systemd: required options" systemd_required

systemd_forbidden() {
  local bad=0 v
  v=$(unit_values RestrictNamespaces | tail -n1)
  [ -z "$v" ] || [ "$v" = no ] || [ "$v" = false ] ||
    { echo "RestrictNamespaces=$v blocks Chromium's user-namespace sandbox"; bad=1; }
  v=$(unit_values PrivateUsers | tail -n1)
  [ -z "$v" ] || [ "$v" = no ] || [ "$v" = false ] ||
    { echo "PrivateUsers=$v breaks Chromium's namespace sandbox"; bad=1; }
  v=$(unit_values MemoryDenyWriteExecute | tail -n1)
  [ -z "$v" ] || [ "$v" = no ] || [ "$v" = false ] ||
    { echo "MemoryDenyWriteExecute=$v breaks V8's JIT"; bad=1; }
  [ -z "$(unit_values SystemCallFilter)" ] ||
    { echo "SystemCallFilter= set: it must not deny clone/unshare/chroot (untestable here: drop it)"; bad=1; }
  [[ "$(unit_values Environment)" != *no-sandbox* ]] || { echo "--no-sandbox in the unit"; bad=1; }
  [ $bad = 0 ] && echo "no RestrictNamespaces/PrivateUsers/MemoryDenyWriteExecute/SystemCallFilter"
  return $bad
}
check "systemd: nothing that breaks Chromium's sandbox" systemd_forbidden

systemd_security() {
  # Exposure score on systemd's 0-10 scale; --threshold is in tenths. 4.5 = "OK" band.
  local out
  out=$(systemd-analyze security --offline=true --threshold=45 --no-pager \
    "$TMP/unit/wa-supervisor.service" 2>&1) || { echo "$out" | tail -n 3; return 1; }
  echo "$out" | grep -o 'Overall exposure level.*' | sed 's/ [^ ]*$//'
}
check "systemd: security exposure <= 4.5" systemd_security

# ---- Chromium's sandbox under the deploy settings -----------------------------------------
# The unit runs the daemon as a non-root user with NoNewPrivileges and an empty capability
# bounding set; the container runs it under deploy/chromium-seccomp.json. Launch Debian's
# Chromium the same way (as nobody, setpriv, the profile's denials loaded with libseccomp) and
# require its renderers to be sandboxed: in their own user namespace, under a seccomp filter
# of their own on top of ours.
# $1: the binary; the rest: its engine's own switches.
sandbox_body() {
  local chromium=$1 dir pid
  shift
  dir=$TMP/$(basename "$chromium")
  mkdir -p "$dir"
  chown 65534:65534 "$dir"
  setsid "$PY" "$CHECKS/seccomp_exec.py" "$D/chromium-seccomp.json" \
    setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
    --bounding-set=-all --inh-caps=-all \
    env -i HOME="$dir" PATH=/usr/bin:/bin "$chromium" "$@" --disable-gpu \
    --disable-dev-shm-usage --disable-breakpad --user-data-dir="$dir/profile" \
    --remote-debugging-port=0 'data:text/html,<p>sandbox</p>' >"$dir/log" 2>&1 </dev/null &
  pid=$!
  track "$pid"
  local host_ns p ok=0
  host_ns=$(readlink /proc/self/ns/user)
  for _ in $(seq 1 100); do
    # By process group (setsid made the browser its leader): the shell's renderers do not
    # carry --user-data-dir.
    for p in $(pgrep -u 65534 -g "$pid" || true); do
      [[ "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" == *--type=renderer* ]] || continue
      [ "$(readlink "/proc/$p/ns/user" 2>/dev/null)" != "$host_ns" ] || continue
      # Two filters: the profile's, then Chromium's own renderer policy.
      [ "$(sed -n 's/^Seccomp_filters:[[:space:]]*//p' "/proc/$p/status" 2>/dev/null)" -ge 2 ] 2>/dev/null || continue
      ok=1
    done
    [ $ok = 1 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  stop_tracked
  if [ $ok = 1 ]; then
    echo "renderer in its own user namespace under seccomp (NoNewPrivileges, no capabilities, profile loaded)"
  else
    echo "no sandboxed renderer appeared; Chromium's log:"
    grep -v 'dbus' "$dir/log" | tail -n 15
    return 1
  fi
}
sandbox_check() {
  local rc=0
  sandbox_body "$@" || rc=$?
  stop_tracked
  return $rc
}
if [ -x /usr/lib/chromium/chromium-headless-shell ]; then
  check "chromium-headless-shell: sandbox works under the unit's and the container's restrictions" \
    sandbox_check /usr/lib/chromium/chromium-headless-shell
else
  skip "chromium-headless-shell: sandbox under the deploy restrictions" "not installed (scripts/setup.sh installs it)"
fi
if [ -x /usr/lib/chromium/chromium ]; then
  check "chromium: sandbox works under the unit's and the container's restrictions" \
    sandbox_check /usr/lib/chromium/chromium --headless=new --no-first-run
else
  skip "chromium: sandbox under the deploy restrictions" "Debian chromium not installed (scripts/setup.sh installs it)"
fi

seccomp_json() {
  "$PY" "$CHECKS/seccomp_profile.py" "$D/chromium-seccomp.json"
}
check "container: seccomp profile is valid" seccomp_json

# ---- nginx --------------------------------------------------------------------------------
# A private prefix: the site with the placeholders replaced (self-signed certificate, temp log
# and webroot paths, and for the live test free loopback ports), included in a minimal
# nginx.conf. Nothing of the system's nginx is read or written.
nginx_prepare() { # PREFIX HTTP_PORT HTTPS_PORT UPSTREAM_PORT
  local px=$1
  mkdir -p "$px/cert" "$px/logs" "$px/www" "$px/tmp"
  if [ ! -s "$TMP/cert/privkey.pem" ]; then
    mkdir -p "$TMP/cert"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=wa.example.com" \
      -keyout "$TMP/cert/privkey.pem" -out "$TMP/cert/fullchain.pem" >/dev/null 2>&1
  fi
  sed -e "s#/etc/letsencrypt/live/wa.example.com/#$TMP/cert/#g" \
    -e "s#/var/log/nginx/#$px/logs/#g" \
    -e "s#/var/www/html#$px/www#g" \
    -e "s#listen 80;#listen 127.0.0.1:$2;#" -e "s#listen \[::\]:80;##" \
    -e "s#listen 443 ssl#listen 127.0.0.1:$3 ssl#" -e "s#listen \[::\]:443 ssl http2;##" \
    -e "s#server 127.0.0.1:8080;#server 127.0.0.1:$4;#" \
    "$SITE" >"$px/site.conf"
  cat >"$px/nginx.conf" <<EOF
pid $px/nginx.pid;
error_log $px/logs/error.log;
worker_processes 1;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    access_log $px/logs/access.log;
    client_body_temp_path $px/tmp/body;
    proxy_temp_path $px/tmp/proxy;
    fastcgi_temp_path $px/tmp/fastcgi;
    uwsgi_temp_path $px/tmp/uwsgi;
    scgi_temp_path $px/tmp/scgi;
    # Compression on, as on a typical host: the SSE location must switch it off.
    gzip on;
    gzip_types text/event-stream application/json;
    gzip_min_length 1;
    include $px/site.conf;
}
EOF
}

nginx_test() {
  # The site as shipped (ports 80/443 and 127.0.0.1:8080 kept: nginx -t binds nothing).
  local px=$TMP/nginx-t out
  nginx_prepare "$px" 80 443 8080
  # For -t, the site's listen lines exactly as written (only paths replaced).
  sed -e "s#/etc/letsencrypt/live/wa.example.com/#$TMP/cert/#g" \
    -e "s#/var/log/nginx/#$px/logs/#g" -e "s#/var/www/html#$px/www#g" "$SITE" >"$px/site.conf"
  out=$(/usr/sbin/nginx -t -q -p "$px" -e "$px/logs/error.log" -c "$px/nginx.conf" 2>&1) ||
    { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; } # warnings count as failures
  echo "$(/usr/sbin/nginx -v 2>&1 | sed 's/^nginx version: //'): syntax ok, no warnings"
}
check "nginx: nginx -t on the site" nginx_test

nginx_static() {
  "$PY" "$CHECKS/nginx_site.py" "$SITE"
}
check "nginx: site has the SSE, TLS and header settings" nginx_static

# Live: nginx from the private prefix on free loopback ports in front of a stub upstream that
# sends one SSE event, waits 3 s, sends another. Through a buffering or compressing proxy the
# first event only arrives with the second; here it must arrive at once, uncompressed, over
# Starts the prepared nginx in $1 and waits (5 s at most) until https on port $2 answers.
nginx_up() {
  local px=$1 https=$2
  setsid /usr/sbin/nginx -p "$px" -e "$px/logs/error.log" -c "$px/nginx.conf" -g 'daemon off;' \
    >"$px/logs/stdout.log" 2>&1 </dev/null &
  track "$!"
  for _ in $(seq 1 50); do
    curl -ksf --resolve "wa.example.com:$https:127.0.0.1" -o /dev/null \
      "https://wa.example.com:$https/healthz" 2>/dev/null && break
    sleep 0.1
  done
}

# TLS, and plain HTTP must redirect.
nginx_live_body() {
  local px=$TMP/nginx-live http https up
  read -r http https up < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
  nginx_prepare "$px" "$http" "$https" "$up"
  setsid "$PY" "$CHECKS/sse_stub.py" "$up" >"$px/logs/stub.log" 2>&1 </dev/null &
  track "$!"
  nginx_up "$px" "$https"
  local base="https://wa.example.com:$https" resolve=(--resolve "wa.example.com:$https:127.0.0.1")
  local out first code hdrs
  [[ "$(curl -ksf "${resolve[@]}" "$base/healthz" 2>&1)" == *'"ok"'* ]] ||
    { echo "GET /healthz through nginx failed"; tail -n 5 "$px/logs/error.log"; return 1; }
  # First SSE event: must show up well before the 3 s pause ends (with gzip requested).
  out=$(timeout 10 curl -ksN "${resolve[@]}" -H 'Accept-Encoding: gzip' -D "$px/sse-headers" \
    -w '\n%{time_starttransfer}\n' "$base/api/events/u1" 2>&1 | "$PY" -c '
import sys, time
t0 = time.monotonic()
for line in sys.stdin:
    if line.startswith("data:"):
        print(f"{time.monotonic() - t0:.2f}")
        break
' ) || true
  first=${out:-none}
  hdrs=$(tr -d '\r' <"$px/sse-headers" 2>/dev/null || true)
  grep -qi '^content-encoding: gzip' <<<"$hdrs" && { echo "SSE response was gzipped"; return 1; }
  grep -qi '^content-type: text/event-stream' <<<"$hdrs" || { echo "no SSE response: $hdrs"; return 1; }
  "$PY" -c "import sys; sys.exit(0 if '$first' != 'none' and float('$first') < 2.0 else 1)" ||
    { echo "first SSE event arrived after ${first}s: buffered"; return 1; }
  grep -qi '^strict-transport-security:' <<<"$hdrs" || { echo "no HSTS header on SSE"; return 1; }
  code=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: wa.example.com' \
    "http://127.0.0.1:$http/api/status/u1")
  [[ "$code" == "301 https://wa.example.com/api/status/u1" ]] ||
    { echo "HTTP redirect: $code"; return 1; }
  # A large body is refused by nginx before it reaches the daemon.
  code=$(head -c 100000 /dev/zero | curl -ks "${resolve[@]}" -o /dev/null -w '%{http_code}' \
    --data-binary @- "$base/api/start/u1/1")
  [ "$code" = 413 ] || { echo "100 kB body: $code, want 413"; return 1; }
  echo "first event after ${first}s, not gzipped; HTTPS, HSTS, 301 from HTTP, 413 on big bodies"
}
nginx_live() {
  local rc=0
  nginx_live_body || rc=$?
  stop_tracked
  return $rc
}
check "nginx: live SSE through the site is unbuffered" nginx_live

# Several nodes: the README's nginx block (upstreams over three nodes, SSE hashed on the user id)
# put into the site as the README says. nginx -t, then live in front of three stand-in nodes
# (servers of the same nginx answering with their name): a user's ticket request and event
# stream reach one node, users are spread, and the other routes are spread too.
cluster_site() { # OUT: the site with the README's block in place of its upstream
  "$PY" - "$D/README.md" "$SITE" "$1" <<'PYEOF'
import re, sys
readme, site = open(sys.argv[1]).read(), open(sys.argv[2]).read()
section = readme.split("\n## Several nodes", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```nginx\n(.*?)```", section, re.S)
if len(blocks) != 1:
    sys.exit(f"README, Several nodes: {len(blocks)} nginx blocks, want 1")
if "proxy_pass http://wa_supervisor_events;" not in section:
    sys.exit("README, Several nodes: does not say proxy_pass http://wa_supervisor_events;")
site, n = re.subn(r"upstream wa_supervisor \{[^}]*\}\n", lambda m: blocks[0], site, count=1)
events = re.search(r"location /api/events/ \{[^}]*\}", site)
if n != 1 or not events:
    sys.exit("the site has no upstream wa_supervisor {} or no location /api/events/ {}")
loc = events.group(0).replace("proxy_pass http://wa_supervisor;", "proxy_pass http://wa_supervisor_events;")
open(sys.argv[3], "w").write(site.replace(events.group(0), loc))
PYEOF
}
nginx_cluster_body() {
  local px=$TMP/nginx-cluster out http https n1 n2 n3
  mkdir -p "$px"
  cluster_site "$TMP/cluster-site.conf" || return 1
  # nginx -t on the site as the README makes it (ports as written: -t binds nothing).
  SITE=$TMP/cluster-site.conf nginx_prepare "$px" 80 443 8080
  sed -e "s#/etc/letsencrypt/live/wa.example.com/#$TMP/cert/#g" -e "s#/var/log/nginx/#$px/logs/#g" \
    -e "s#/var/www/html#$px/www#g" "$TMP/cluster-site.conf" >"$px/site.conf"
  out=$(/usr/sbin/nginx -t -q -p "$px" -e "$px/logs/error.log" -c "$px/nginx.conf" 2>&1) ||
    { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  # Live: free loopback ports for nginx and the three stand-in nodes.
  read -r http https n1 n2 n3 < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
  SITE=$TMP/cluster-site.conf nginx_prepare "$px" "$http" "$https" 0
  sed -i -e "s#server 127.0.0.1:8081;#server 127.0.0.1:$n1;#" -e "s#server 127.0.0.1:8082;#server 127.0.0.1:$n2;#" \
    -e "s#server 127.0.0.1:8083;#server 127.0.0.1:$n3;#" "$px/site.conf"
  local i=0 port
  for port in "$n1" "$n2" "$n3"; do
    i=$((i + 1))
    printf 'server { listen 127.0.0.1:%s; location / { return 200 "wa-node-%s\\n"; } }\n' "$port" "$i" >>"$px/site.conf"
  done
  nginx_up "$px" "$https"
  local base="https://wa.example.com:$https" resolve=(--resolve "wa.example.com:$https:127.0.0.1")
  local u ticket stream seen="" rest=""
  for u in $(seq 1 12); do
    ticket=$(curl -ksf "${resolve[@]}" -X POST "$base/api/events/user$u/ticket") ||
      { echo "POST /api/events/user$u/ticket through nginx failed"; tail -n 5 "$px/logs/error.log"; return 1; }
    stream=$(curl -ksf "${resolve[@]}" "$base/api/events/user$u?ticket=t$u") ||
      { echo "GET /api/events/user$u through nginx failed"; return 1; }
    [ "$ticket" = "$stream" ] || { echo "user$u: ticket from $ticket, stream to $stream"; return 1; }
    seen+="$ticket"$'\n'
    rest+="$(curl -ksf "${resolve[@]}" "$base/api/status/user$u")"$'\n'
  done
  local users spread
  users=$(sort -u <<<"$seen" | grep -c .)
  spread=$(sort -u <<<"$rest" | grep -c .)
  [ "$users" -ge 2 ] || { echo "every user's events went to one node"; return 1; }
  [ "$spread" = 3 ] || { echo "other routes reached $spread of 3 nodes"; return 1; }
  echo "nginx -t ok; 12 users: ticket and stream on one node each, users on $users nodes, other routes on 3"
}
nginx_cluster() {
  local rc=0
  nginx_cluster_body || rc=$?
  stop_tracked
  return $rc
}
check "nginx: README's several-nodes upstreams keep a user's SSE ticket and stream on one node" nginx_cluster

# ---- compose ------------------------------------------------------------------------------
compose_check() {
  "$PY" "$CHECKS/compose.py" "$D/compose.yaml"
}
check "compose: compose.yaml parses and has the expected services and keys" compose_check

compose_cluster_check() {
  "$PY" "$CHECKS/compose_cluster.py" "$D/compose.cluster.yaml"
}
check "compose: compose.cluster.yaml has postgres and three distinct nodes of one image, one cluster token" compose_cluster_check

secrets_ignored() {
  if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "not a git checkout; .gitignore not checked"
    return 0
  fi
  git check-ignore -q deploy/.env && git check-ignore -q deploy/wa-supervisor.env ||
    { echo ".gitignore must ignore deploy/.env and deploy/wa-supervisor.env (they hold secrets)"; return 1; }
  echo "deploy/.env and deploy/wa-supervisor.env are ignored"
}
check "compose: the secret files it writes are git-ignored" secrets_ignored

# ---- Dockerfile ---------------------------------------------------------------------------
dockerfile_check() {
  local f=$TMP/Dockerfile.joined bad=0 re
  # One instruction per line: join backslash continuations.
  sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*/ /; ta' $D/Dockerfile >"$f"
  while IFS='|' read -r re why; do
    grep -Eq "$re" "$f" || { echo "missing: $why"; bad=1; }
  done <<'EOF'
^FROM rust:1-bookworm AS builder|builder stage rust:1-bookworm
cargo build --release --locked|cargo build --release --locked
^FROM debian:bookworm-slim|runtime debian:bookworm-slim
apt-get install .*chromium-headless-shell|chromium-headless-shell installed (the default engine)
apt-get install .* chromium [a-z]|chromium installed (BROWSER=chromium)
apt-get install .*ffmpeg|ffmpeg installed (voice notes)
apt-get install .*ca-certificates|ca-certificates installed
apt-get install .*tini|tini installed
apt-get install .*curl|curl installed (HEALTHCHECK)
^USER [a-z]|a USER line
^HEALTHCHECK .*healthz|HEALTHCHECK on /healthz
^STOPSIGNAL SIGTERM|STOPSIGNAL SIGTERM
BIND_ADDR=0\.0\.0\.0:8080|BIND_ADDR=0.0.0.0:8080
^EXPOSE 8080|EXPOSE 8080
^VOLUME .*/data|VOLUME /data
^ENTRYPOINT \["/usr/bin/tini"|tini as ENTRYPOINT
EOF
  local user
  user=$(sed -n 's/^USER //p' "$f" | tail -n1)
  case "$user" in root | root:* | 0 | 0:*) echo "runs as root"; bad=1 ;; esac
  grep -q 'no-sandbox' "$f" && { echo "--no-sandbox in the image"; bad=1; }
  # Every COPY --from names a stage; every COPY source from the context is not ignored.
  grep -Eq '^\.?/?target/?$|^target$' $D/Dockerfile.dockerignore || { echo "dockerignore: target"; bad=1; }
  grep -Eq '^(Cargo\.toml|src)' $D/Dockerfile.dockerignore && { echo "dockerignore excludes the sources"; bad=1; }
  # The runtime packages exist in bookworm (this machine's release) when apt's lists are here.
  local pkgs pkg checked=""
  pkgs=$(sed -n 's/.*apt-get install -y --no-install-recommends \([a-z0-9 .+-]*\).*/\1/p' "$f" | sed 's/ &&.*//')
  [ -n "$pkgs" ] || { echo "no apt-get install -y --no-install-recommends line"; bad=1; }
  if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null && grep -q bookworm /etc/os-release; then
    for pkg in $pkgs; do
      apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 || { echo "no Debian package: $pkg"; bad=1; }
    done
    checked=", packages exist in bookworm"
  fi
  [ $bad = 0 ] && echo "multi-stage, non-root ($user), tini, healthcheck, stop signal$checked"
  return $bad
}
check "container: Dockerfile has the required instructions" dockerfile_check

# ---- env.example --------------------------------------------------------------------------
env_check() {
  local bad=0 v
  mapfile -t vars < <(grep -o 'env = "[A-Z0-9_]*"' src/config.rs | sed 's/env = "\(.*\)"/\1/' | sort -u)
  [ "${#vars[@]}" -gt 0 ] || { echo "no env = \"...\" found in src/config.rs"; return 1; }
  local -A known=()
  for v in "${vars[@]}"; do
    known[$v]=1
    grep -Eq "^#?[[:space:]]*$v=" $D/env.example || { echo "not in env.example: $v"; bad=1; }
  done
  while read -r v; do
    [ -n "${known[$v]:-}" ] || { echo "in env.example, not in src/config.rs: $v"; bad=1; }
  done < <(sed -n 's/^#\{0,1\}[[:space:]]*\([A-Z][A-Z0-9_]*\)=.*/\1/p' $D/env.example | sort -u)
  # An active line with an empty value sets an empty setting, not the default.
  if grep -En '^[A-Z][A-Z0-9_]*=[[:space:]]*$' $D/env.example; then
    echo "^ active empty assignments: comment them out"
    bad=1
  fi
  [ $bad = 0 ] && echo "${#vars[@]} settings of src/config.rs, no others"
  return $bad
}
check "env.example: documents every setting of src/config.rs" env_check

# ---- README -------------------------------------------------------------------------------
readme_check() {
  local bad=0 s
  for s in 'useradd' '/usr/local/bin/wa-supervisor' 'apt-get install' 'chromium' 'chromium-headless-shell' \
    'BROWSER=chromium' 'SESSION_MEMORY_MAX' '/etc/wa-supervisor/env' \
    'systemctl enable' 'certbot' 'docker compose' '/var/www/whatsapp-sessions' 'pm2 stop' \
    'import-sessions' '--dry-run' 'chown' '/healthz' '/readyz' '/actors' 'journalctl' 'RUST_LOG' \
    'backup' 'scripts/check-deploy.sh' 'compose.cluster.yaml' 'CLUSTER_TOKEN' 'NODE_URL' '/admin/nodes' \
    '/drain' 'LEASE_TTL_SECS' 'SNAPSHOT_INTERVAL_SECS' 'ticket'; do
    grep -qiF -- "$s" $D/README.md || { echo "README does not mention: $s"; bad=1; }
  done
  [ $bad = 0 ] && echo "install, compose, upgrade, PM2 migration, verify, backups, logs, several nodes"
  return $bad
}
check "README: covers install, migration, verification, backups, logs, several nodes" readme_check

echo "check-deploy: $passed passed, $failed failed"
[ "$failed" = 0 ]
