//! Exclusive ownership of a folder: a profile while a browser runs on it, `SESSIONS_DIR` while a
//! daemon runs on it; and the hygiene of Chromium's own profile lock.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Lock file inside the folder; Chromium ignores unknown files in a profile.
const LOCK_FILE: &str = ".wa-supervisor.lock";

/// An advisory `flock` on `<folder>/.wa-supervisor.lock`, released on drop (or process death).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    dir: PathBuf,
}

impl FolderLock {
    /// Creates the folder (0700: a profile holds the account's keys) and takes the lock, or fails
    /// at once. Neither the folder nor the lock file may be a symbolic link. The lock file
    /// records the holder's pid for the error message of the next one.
    pub fn acquire(dir: &Path) -> std::io::Result<FolderLock> {
        crate::files::private_dir(dir, false)?;
        let file = crate::files::open_no_follow(&dir.join(LOCK_FILE))?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                err.kind(),
                format!(
                    "{} is in use by another process{}",
                    dir.display(),
                    std::fs::read_to_string(dir.join(LOCK_FILE))
                        .ok()
                        .filter(|pid| !pid.trim().is_empty())
                        .map(|pid| format!(" (pid {})", pid.trim()))
                        .unwrap_or_default()
                ),
            ));
        }
        // Record our pid for whoever finds the lock taken (best effort).
        let _ = file.set_len(0);
        let _ = std::io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes());
        Ok(FolderLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// True when `pid` is a live process (not a zombie) running Chromium on this very profile; a
/// pid reused by an unrelated process does not count.
fn owner_alive(pid: &str, profile: &Path) -> bool {
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let want = format!("--user-data-dir={}", profile.display());
    crate::procfs::alive(pid)
        && crate::procfs::cmdline(pid)
            .iter()
            .any(|arg| arg == want.as_bytes())
}

/// Chromium's own profile lock: `SingletonLock` is a symlink to `<hostname>-<pid>`.
const SINGLETON_FILES: [&str; 3] = ["SingletonLock", "SingletonSocket", "SingletonCookie"];

/// Removes Chromium's `Singleton*` files when the process they name is provably gone (same
/// host, pid not alive). A lock naming another host is left alone and reported: that host may
/// still use the folder (e.g. a shared volume).
pub fn clear_stale_singleton(profile: &Path) -> Result<(), String> {
    let Ok(target) = std::fs::read_link(profile.join("SingletonLock")) else {
        return Ok(()); // no lock
    };
    let target = target.to_string_lossy().into_owned();
    let Some((host, pid)) = target.rsplit_once('-') else {
        return Err(format!(
            "unreadable SingletonLock {target:?} in {}",
            profile.display()
        ));
    };
    if host != crate::procfs::hostname() {
        return Err(format!(
            "profile {} is locked by Chromium on host {host} (SingletonLock); remove it only if that host no longer uses this folder",
            profile.display()
        ));
    }
    if owner_alive(pid, profile) {
        return Err(format!(
            "profile {} is in use by a running Chromium (pid {pid})",
            profile.display()
        ));
    }
    for name in SINGLETON_FILES {
        match std::fs::remove_file(profile.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("could not remove stale {name}: {e}"))
            }
            _ => {}
        }
    }
    log::info!(
        "removed stale Chromium lock of pid {pid} in {}",
        profile.display()
    );
    Ok(())
}

/// Lock files in `profile` left by processes that are gone (docs/operations.md, the clean-up):
/// Chromium's `Singleton*` files naming a dead process of this host, and the daemon's own
/// `.wa-supervisor.lock` that nobody holds and whose recorded process is dead.
pub fn stale_locks(profile: &Path) -> Vec<PathBuf> {
    let mut stale = Vec::new();
    if let Ok(target) = std::fs::read_link(profile.join("SingletonLock")) {
        let target = target.to_string_lossy().into_owned();
        let dead = target.rsplit_once('-').is_some_and(|(host, pid)| {
            host == crate::procfs::hostname() && !owner_alive(pid, profile)
        });
        if dead {
            stale.extend(
                SINGLETON_FILES
                    .iter()
                    .map(|name| profile.join(name))
                    .filter(|p| std::fs::symlink_metadata(p).is_ok()),
            );
        }
    }
    let ours = profile.join(LOCK_FILE);
    if ours.is_file() && !crate::files::is_symlink(&ours) {
        let pid = std::fs::read_to_string(&ours).unwrap_or_default();
        let recorded_dead = pid
            .trim()
            .parse::<u32>()
            .map_or(true, |pid| !crate::procfs::alive(pid));
        if recorded_dead && !held(&ours) {
            stale.push(ours);
        }
    }
    stale
}

/// Whether a process holds the lock of `dir` (a daemon on `SESSIONS_DIR`, a browser on a
/// profile), without taking it or changing anything.
pub fn in_use(dir: &Path) -> bool {
    held(&dir.join(LOCK_FILE))
}

/// Whether a process holds the `flock` on `path` (tried and let go at once; the file is not
/// changed).
fn held(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    // SAFETY: plain syscalls on a descriptor we own.
    unsafe {
        if libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 {
            return true;
        }
        libc::flock(file.as_raw_fd(), libc::LOCK_UN);
    }
    false
}

/// Removes the stale lock files of `profile` found again now; how many went.
pub fn remove_stale_locks(profile: &Path) -> std::io::Result<usize> {
    let mut gone = 0;
    for path in stale_locks(profile) {
        if path.ends_with(LOCK_FILE) {
            // Held while it goes, so no launch takes it in between.
            let Ok(_held) = FolderLock::acquire(profile) else {
                continue;
            };
            std::fs::remove_file(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        gone += 1;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_locks_are_those_of_gone_processes_and_not_held() {
        let tmp = tempfile::tempdir().unwrap();
        let profile = tmp.path().join("u-slot1");
        std::fs::create_dir(&profile).unwrap();
        let host = crate::procfs::hostname();
        // A pid that is not alive: above the kernel's pid range.
        std::os::unix::fs::symlink(format!("{host}-4194399"), profile.join("SingletonLock"))
            .unwrap();
        std::os::unix::fs::symlink("x", profile.join("SingletonSocket")).unwrap();
        std::fs::write(profile.join(LOCK_FILE), "4194399").unwrap();
        let mut found = stale_locks(&profile);
        found.sort();
        assert_eq!(found.len(), 3, "{found:?}");
        let before = std::fs::read_to_string(profile.join(LOCK_FILE)).unwrap();
        assert_eq!(before, "4194399", "looking does not change the lock file");

        // Held by a live process (us), or naming another host: not stale.
        let held = FolderLock::acquire(&profile).unwrap();
        assert_eq!(stale_locks(&profile).len(), 2, "the held lock is not stale");
        drop(held);
        std::fs::write(profile.join(LOCK_FILE), "4194399").unwrap();
        std::fs::remove_file(profile.join("SingletonLock")).unwrap();
        std::os::unix::fs::symlink("elsewhere.example-1", profile.join("SingletonLock")).unwrap();
        assert_eq!(stale_locks(&profile), [profile.join(LOCK_FILE)]);
        assert_eq!(remove_stale_locks(&profile).unwrap(), 1);
        assert!(!profile.join(LOCK_FILE).exists());
        assert!(std::fs::symlink_metadata(profile.join("SingletonLock")).is_ok());
    }

    #[test]
    fn a_second_lock_on_the_same_profile_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u-slot1");
        let first = FolderLock::acquire(&dir).unwrap();
        let err = FolderLock::acquire(&dir).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        FolderLock::acquire(&dir).unwrap();
    }
}
