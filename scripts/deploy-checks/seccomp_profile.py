"""The container seccomp profile (argv[1]) is a deny list for the native architecture."""
import json, sys
p = json.load(open(sys.argv[1]))
assert p["defaultAction"] == "SCMP_ACT_ALLOW"
names = [n for r in p["syscalls"] for n in r["names"]]
assert all(r["action"] in ("SCMP_ACT_ERRNO",) for r in p["syscalls"])
assert "architectures" not in p and "archMap" not in p, "native architecture only"
print(f"{len(names)} syscalls denied")
