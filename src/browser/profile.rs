//! Exclusive ownership of a profile folder while a browser runs on it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Lock file inside the profile; Chromium ignores unknown files there.
const LOCK_FILE: &str = ".wa-supervisor.lock";

/// An advisory `flock` on `<profile>/.wa-supervisor.lock`, released on drop (or process death).
#[derive(Debug)]
pub struct ProfileLock {
    _file: File,
    dir: PathBuf,
}

impl ProfileLock {
    /// Creates the folder (0700: it holds the account's keys) and takes the lock, or fails at once.
    pub fn acquire(dir: &Path) -> std::io::Result<ProfileLock> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                err.kind(),
                format!(
                    "profile {} is in use by another process ({err})",
                    dir.display()
                ),
            ));
        }
        Ok(ProfileLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_profile_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u-slot1");
        let first = ProfileLock::acquire(&dir).unwrap();
        let err = ProfileLock::acquire(&dir).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        ProfileLock::acquire(&dir).unwrap();
    }
}
