//! Files the daemon owns hold secrets (credentials, phone numbers, WhatsApp keys): folders are
//! 0700 and files 0600 whatever the umask, and nothing inside `SESSIONS_DIR` is reached through
//! a symbolic link (a link planted there must not make the daemon write or delete elsewhere).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const PRIVATE_DIR_MODE: u32 = 0o700;
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) 0700, or tightens an existing one to 0700. `dir` itself
/// may be a symlink only when `allow_link` (an operator's `DATA_DIR` or `SESSIONS_DIR`);
/// folders inside `SESSIONS_DIR` pass `false`.
pub fn private_dir(dir: &Path, allow_link: bool) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() && !allow_link => Err(refused_link(dir)),
        Ok(_) => {
            let meta = std::fs::metadata(dir)?;
            if !meta.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a folder", dir.display()),
                ));
            }
            tighten(dir, meta.permissions().mode(), PRIVATE_DIR_MODE)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(dir),
        Err(e) => Err(e),
    }
}

/// Creates `dir` (and missing parents) 0700 when it does not exist; an existing folder is left
/// as it is (the folder of a database file may be anybody's, e.g. `/tmp`).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Creates `path` 0600 if missing (never following a symlink), or tightens it to 0600.
pub fn private_file(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| link_or(e, path))?;
    tighten(
        path,
        file.metadata()?.permissions().mode(),
        PRIVATE_FILE_MODE,
    )
}

/// Opens (creating 0600) a file for writing without following a symlink at `path`.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| link_or(e, path))
}

/// True when `path` itself is a symbolic link (not followed).
pub fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn tighten(path: &Path, mode: u32, want: u32) -> io::Result<()> {
    if mode & 0o777 != want {
        std::fs::set_permissions(path, Permissions::from_mode(want))?;
    }
    Ok(())
}

/// Deletes the folder `dir` and everything in it; a symbolic link in its place is refused, never
/// followed or removed (links inside are removed as links). A missing folder is fine.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    if is_symlink(dir) {
        return Err(refused_link(dir));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The bytes of the regular files below `dir` (links are not followed); 0 when it is missing.
pub fn tree_size(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

fn refused_link(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link; refusing to follow it",
            path.display()
        ),
    )
}

/// `O_NOFOLLOW` on a symlink fails with ELOOP: say so in words.
fn link_or(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        refused_link(path)
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_0700_files_0600_and_links_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir, false).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir, false).unwrap();
        assert_eq!(mode(&dir), 0o700, "tightened");

        let file = dir.join("db");
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600, "tightened");

        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = private_dir(&link, false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        private_dir(&link, true).unwrap();

        let file_link = tmp.path().join("file-link");
        std::os::unix::fs::symlink(&file, &file_link).unwrap();
        assert!(open_no_follow(&file_link)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        assert!(private_file(&file_link).is_err());
    }
}
