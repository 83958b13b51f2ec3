"""compose.yaml has the services and keys deploy/README.md promises (argv[1]: the file)."""
import json, os, re, sys
import yaml
path = sys.argv[1]
here = os.path.dirname(path)
doc = yaml.safe_load(open(path))
errors = []
def need(cond, msg):
    if not cond: errors.append(msg)
def secs(v):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v or ""))
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0) if m and v else 0
svcs = doc.get("services") or {}
need(set(svcs) >= {"postgres", "wa-supervisor"}, f"services: {sorted(svcs)}")
pg = svcs.get("postgres") or {}
wa = svcs.get("wa-supervisor") or {}
need(str(pg.get("image", "")).startswith("postgres:15"), "postgres: image postgres:15")
need("test" in (pg.get("healthcheck") or {}), "postgres: healthcheck")
pg_vols = [str(v).split(":")[0] for v in pg.get("volumes") or []]
named = set((doc.get("volumes") or {}).keys())
need(any(v in named for v in pg_vols), "postgres: a named volume for its data")
env = pg.get("environment") or {}
need(all(k in env for k in ("POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD")), "postgres: user/db/password")
build = wa.get("build") or {}
df = os.path.normpath(os.path.join(here, build.get("context", "."), build.get("dockerfile", "Dockerfile")))
need(os.path.isfile(df) and df.endswith("deploy/Dockerfile"), f"wa-supervisor: build dockerfile {df}")
need(os.path.isfile(os.path.join(here, build.get("context", "."), "Cargo.toml")), "wa-supervisor: build context is the repo root")
dep = (wa.get("depends_on") or {}).get("postgres") or {}
need(dep.get("condition") == "service_healthy", "wa-supervisor: depends_on postgres service_healthy")
wenv = wa.get("environment") or {}
url = str(wenv.get("DATABASE_URL", ""))
need(url.startswith("postgres://") and "@postgres:5432/" in url, f"wa-supervisor: DATABASE_URL -> postgres service ({url})")
need(str(wenv.get("BIND_ADDR", "")).startswith("0.0.0.0:"), "wa-supervisor: BIND_ADDR 0.0.0.0")
need(secs(wa.get("stop_grace_period")) >= 30, "wa-supervisor: stop_grace_period >= 30s")
need("healthz" in json.dumps((wa.get("healthcheck") or {}).get("test")), "wa-supervisor: healthcheck on /healthz")
mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in wa.get("volumes") or [] if ":" in str(v)}
need({"/data", "/data/sessions"} <= set(mounts), f"wa-supervisor: volumes for /data and /data/sessions ({mounts})")
need(all(src in named for src in mounts.values()), "wa-supervisor: volumes are declared at the top level")
sec = [str(s) for s in wa.get("security_opt") or []]
prof = [s.split("=", 1)[1] for s in sec if s.startswith("seccomp=")]
need(prof and os.path.isfile(os.path.join(here, prof[0])), f"wa-supervisor: seccomp profile file ({sec})")
need(not any(s.endswith("unconfined") and s.startswith("seccomp") for s in sec), "no seccomp=unconfined")
ports = [str(p) for p in wa.get("ports") or []]
need(all(p.startswith("127.0.0.1:") for p in ports), f"wa-supervisor: ports on loopback only ({ports})")
need(not wa.get("privileged") and "SYS_ADMIN" not in (wa.get("cap_add") or []), "no privileged / SYS_ADMIN")
need("shm_size" not in wa, "shm_size not needed (--disable-dev-shm-usage)")
need(bool(wa.get("hostname")), "wa-supervisor: a stable hostname (Chromium's profile locks name the host)")
if errors:
    print("\n".join(errors)); sys.exit(1)
print("postgres:15 + wa-supervisor, healthchecks, service_healthy, volumes, stop_grace_period, seccomp, hostname")
