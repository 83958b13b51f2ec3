"""compose.cluster.yaml: PostgreSQL + three nodes of one image, each with its own NODE_ID,
NODE_URL, host name, port and volumes, all with the same CLUSTER_TOKEN, service/admin tokens and
DATABASE_URL; every variable the file requires is made by its header's commands (argv[1]: the file)."""
import os, re, sys
import yaml
from compose import check_daemon, check_postgres, mounts

path = sys.argv[1]
here = os.path.dirname(path)
text = open(path).read()
doc = yaml.safe_load(text)
errors = []
def need(cond, msg):
    if not cond: errors.append(msg)

svcs = doc.get("services") or {}
nodes = {k: v or {} for k, v in svcs.items() if k.startswith("wa-node-")}
need("postgres" in svcs, f"no postgres service: {sorted(svcs)}")
need(sorted(nodes) == ["wa-node-1", "wa-node-2", "wa-node-3"], f"nodes: {sorted(nodes)}, want wa-node-1..3")
need(set(svcs) == {"postgres"} | set(nodes), f"other services: {sorted(set(svcs) - {'postgres'} - set(nodes))}")
check_postgres(doc, need)
# A graceful stop closes the browsers and snapshots every linked login: more time than one node.
for name, svc in nodes.items():
    check_daemon(doc, name, svc, here, need, min_grace=45)

def env(svc, key):
    return str((svc.get("environment") or {}).get(key, ""))

def same(what, values):
    need(len(set(values.values())) == 1, f"{what} differs between nodes: {values}")

def distinct(what, values):
    need(len(set(values.values())) == len(values), f"{what} not distinct per node: {values}")

# The same daemon everywhere: one image from one build (one Chromium build: snapshots move).
same("image", {n: str(s.get("image")) for n, s in nodes.items()})
same("build", {n: repr(s.get("build")) for n, s in nodes.items()})
need(all(s.get("image") and s.get("build") for s in nodes.values()), "every node: build + image")
# Cluster mode on every node with one secret from deploy/.env, never a literal in the file.
tokens = {n: env(s, "CLUSTER_TOKEN") for n, s in nodes.items()}
same("CLUSTER_TOKEN", tokens)
need(all(re.fullmatch(r"\$\{CLUSTER_TOKEN:\?[^}]+\}", t) for t in tokens.values()),
     f"CLUSTER_TOKEN must be ${{CLUSTER_TOKEN:?...}} from deploy/.env: {tokens}")
# Any node answers any request: the service and admin tokens are one pair for all.
for key in ("API_TOKEN", "ADMIN_TOKEN"):
    vals = {n: env(s, key) for n, s in nodes.items()}
    same(key, vals)
    need(all(v.startswith("${") for v in vals.values()), f"{key}: set on every node from deploy/.env ({vals})")
# One database: PostgreSQL (SQLite refuses cluster mode), the postgres service.
urls = {n: env(s, "DATABASE_URL") for n, s in nodes.items()}
same("DATABASE_URL", urls)
# Each node: its own id, host name, URL (the others reach it by its service name and port).
ids = {n: env(s, "NODE_ID") for n, s in nodes.items()}
distinct("NODE_ID", ids)
need(all(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", i) for i in ids.values()), f"NODE_ID: 1-64 of [A-Za-z0-9._-] ({ids})")
distinct("hostname", {n: str(s.get("hostname")) for n, s in nodes.items()})
node_urls = {n: env(s, "NODE_URL") for n, s in nodes.items()}
distinct("NODE_URL", node_urls)
for n, s in nodes.items():
    port = env(s, "BIND_ADDR").rsplit(":", 1)[-1]
    need(node_urls[n] in (f"http://{n}:{port}", f"http://{s.get('hostname')}:{port}"),
         f"{n}: NODE_URL {node_urls[n]!r}, want http://{n}:{port} (reachable over the compose network)")
# Its own profiles and DATA_DIR: profiles are never shared between nodes.
distinct("sessions volume", {n: mounts(s).get("/data/sessions") for n, s in nodes.items()})
distinct("data volume", {n: mounts(s).get("/data") for n, s in nodes.items()})
published = [str(p).rsplit(":", 1)[0] for s in nodes.values() for p in s.get("ports") or []]
need(len(published) == len(set(published)), f"host ports published twice: {published}")
# The header's commands that write deploy/.env make every variable the file requires (${NAME:?...}).
lines = text.splitlines()
head = lines[:next((i for i, l in enumerate(lines) if not l.startswith("#")), len(lines))]
header = "\n".join(l for l in head if "deploy/.env" in l)
required = sorted(set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text)))
need(required, "no ${NAME:?...} variables: the secrets must come from deploy/.env")
for var in required:
    need(var in header, f"the header's commands do not make {var} (deploy/.env)")
need(any("docker compose -f deploy/compose.cluster.yaml up" in l for l in head), "header: the docker compose command")

if errors:
    print("\n".join(errors)); sys.exit(1)
print(f"postgres:15 + {len(nodes)} nodes of one image; distinct NODE_ID, NODE_URL, hostname, volumes;"
      f" one CLUSTER_TOKEN, API/ADMIN token and DATABASE_URL; deploy/.env makes {', '.join(required)}")
