"""compose.yaml has the services and keys deploy/README.md promises (argv[1]: the file).
Also imported by compose_cluster.py: the checks of PostgreSQL and of one daemon service."""
import json, os, re, sys
import yaml

def secs(v):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v or ""))
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0) if m and v else 0

def check_postgres(doc, need):
    pg = (doc.get("services") or {}).get("postgres") or {}
    need(str(pg.get("image", "")).startswith("postgres:15"), "postgres: image postgres:15")
    need("test" in (pg.get("healthcheck") or {}), "postgres: healthcheck")
    pg_vols = [str(v).split(":")[0] for v in pg.get("volumes") or []]
    named = set((doc.get("volumes") or {}).keys())
    need(any(v in named for v in pg_vols), "postgres: a named volume for its data")
    env = pg.get("environment") or {}
    need(all(k in env for k in ("POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD")), "postgres: user/db/password")

def mounts(svc):
    """{container path: source} of a service's volumes."""
    return {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes") or [] if ":" in str(v)}

def check_daemon(doc, name, wa, here, need, min_grace=30):
    """One wa-supervisor service `name` (its dict `wa`) of the file in folder `here`."""
    named = set((doc.get("volumes") or {}).keys())
    build = wa.get("build") or {}
    df = os.path.normpath(os.path.join(here, build.get("context", "."), build.get("dockerfile", "Dockerfile")))
    need(os.path.isfile(df) and df.endswith("deploy/Dockerfile"), f"{name}: build dockerfile {df}")
    need(os.path.isfile(os.path.join(here, build.get("context", "."), "Cargo.toml")), f"{name}: build context is the repo root")
    dep = (wa.get("depends_on") or {}).get("postgres") or {}
    need(dep.get("condition") == "service_healthy", f"{name}: depends_on postgres service_healthy")
    wenv = wa.get("environment") or {}
    url = str(wenv.get("DATABASE_URL", ""))
    need(url.startswith("postgres://") and "@postgres:5432/" in url, f"{name}: DATABASE_URL -> postgres service ({url})")
    need(str(wenv.get("BIND_ADDR", "")).startswith("0.0.0.0:"), f"{name}: BIND_ADDR 0.0.0.0")
    need(secs(wa.get("stop_grace_period")) >= min_grace, f"{name}: stop_grace_period >= {min_grace}s")
    need("healthz" in json.dumps((wa.get("healthcheck") or {}).get("test")), f"{name}: healthcheck on /healthz")
    m = mounts(wa)
    need({"/data", "/data/sessions"} <= set(m), f"{name}: volumes for /data and /data/sessions ({m})")
    need(all(src in named for src in m.values()), f"{name}: volumes are declared at the top level")
    sec = [str(s) for s in wa.get("security_opt") or []]
    prof = [s.split("=", 1)[1] for s in sec if s.startswith("seccomp=")]
    need(prof and os.path.isfile(os.path.join(here, prof[0])), f"{name}: seccomp profile file ({sec})")
    need(not any(s.endswith("unconfined") and s.startswith("seccomp") for s in sec), f"{name}: no seccomp=unconfined")
    ports = [str(p) for p in wa.get("ports") or []]
    need(all(p.startswith("127.0.0.1:") for p in ports), f"{name}: ports on loopback only ({ports})")
    need(not wa.get("privileged") and "SYS_ADMIN" not in (wa.get("cap_add") or []), f"{name}: no privileged / SYS_ADMIN")
    need("shm_size" not in wa, f"{name}: shm_size not needed (--disable-dev-shm-usage)")
    need(bool(wa.get("hostname")), f"{name}: a stable hostname (Chromium's profile locks name the host)")

def main(path):
    here = os.path.dirname(path)
    doc = yaml.safe_load(open(path))
    errors = []
    def need(cond, msg):
        if not cond: errors.append(msg)
    svcs = doc.get("services") or {}
    need(set(svcs) >= {"postgres", "wa-supervisor"}, f"services: {sorted(svcs)}")
    check_postgres(doc, need)
    check_daemon(doc, "wa-supervisor", svcs.get("wa-supervisor") or {}, here, need)
    if errors:
        print("\n".join(errors)); sys.exit(1)
    print("postgres:15 + wa-supervisor, healthchecks, service_healthy, volumes, stop_grace_period, seccomp, hostname")

if __name__ == "__main__":
    main(sys.argv[1])
