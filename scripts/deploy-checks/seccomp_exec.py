"""Loads the container seccomp profile (argv[1]) with libseccomp, then execs argv[2:]."""
import errno, json, os, sys
import seccomp
profile = json.load(open(sys.argv[1]))
assert profile["defaultAction"] == "SCMP_ACT_ALLOW", "profile must be a deny list"
flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for rule in profile["syscalls"]:
    assert rule["action"] == "SCMP_ACT_ERRNO", rule["action"]
    for name in rule["names"]:
        for banned in ("clone", "clone3", "unshare", "chroot", "seccomp", "prctl"):
            assert name != banned, f"{name} is needed by Chromium's sandbox"
        try:
            flt.add_rule(seccomp.ERRNO(rule.get("errnoRet", errno.EPERM)), name)
        except RuntimeError:
            pass  # not a syscall on this architecture (Docker skips those too)
flt.load()
os.execvp(sys.argv[2], sys.argv[2:])
