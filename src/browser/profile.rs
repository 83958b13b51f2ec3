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

#[cfg(test)]
mod tests {
    use super::*;

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
