//! Snapshots of a session's WhatsApp login, so the session can move to another host: the
//! profile's `Default/IndexedDB` and `Default/Local Storage` folders in one gzip-compressed tar,
//! which the caller stores in PostgreSQL (`session_snapshots`, docs/several-hosts.md).
//!
//! Only a closed browser is packed or restored: a copy of a LevelDB being written is not a
//! backup, and Chromium discards an IndexedDB it finds corrupt, which logs the session out.
//! The system's GNU tar does the archive work. An archive holds those two folders and nothing
//! else (no links, no other path), checked on both sides. Blocking: call from a blocking thread.

use std::fs::{DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::files::{PRIVATE_DIR_MODE, PRIVATE_FILE_MODE};

/// The folders of `Default` that hold the login; nothing else goes into a snapshot.
const FOLDERS: [&str; 2] = ["IndexedDB", "Local Storage"];

/// Packs `Default/IndexedDB` and `Default/Local Storage` of the closed browser's profile at
/// `profile` into one gzip-compressed tar. Folders that do not exist are skipped; a profile with
/// neither gives Ok(None).
pub fn pack(profile: &Path) -> io::Result<Option<Vec<u8>>> {
    let default = profile.join("Default");
    if crate::files::is_symlink(profile) || crate::files::is_symlink(&default) {
        return Err(invalid(format!(
            "{} or its Default folder is a symbolic link; not packed",
            profile.display()
        )));
    }
    let mut present = Vec::new();
    for name in FOLDERS {
        let path = default.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => present.push(Path::new("Default").join(name)),
            Ok(_) => {
                return Err(invalid(format!(
                    "{} is not a folder; not packed",
                    path.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if present.is_empty() {
        return Ok(None);
    }
    let mut cmd = tar();
    cmd.args(["--create", "--gzip", "--format=gnu", "--file=-", "-C"])
        .arg(profile)
        .arg("--")
        .args(&present);
    let archive = run(cmd, None, "pack")?;
    // A link or special file inside the folders would be refused on restore: refuse it now.
    check(&archive).map_err(|e| invalid(format!("{}: {e}; not packed", profile.display())))?;
    Ok(Some(archive))
}

/// Replaces `Default/IndexedDB` and `Default/Local Storage` of `profile` (the browser must be
/// closed) with the snapshot's. Extracts into a fresh temporary folder inside `profile` first,
/// then removes the old folders and renames the new ones in, so a failed extraction leaves the
/// profile as it was. Creates `profile` and `profile/Default` (mode 0700) if missing.
///
/// A folder the snapshot lacks is removed from the profile too: afterwards both are the
/// snapshot's. A snapshot holding anything but those two folders (links, other paths) is refused
/// with `InvalidData` before the profile is touched.
pub fn unpack(profile: &Path, snapshot: &[u8]) -> io::Result<()> {
    check(snapshot)?;
    crate::files::private_dir(profile, false)?;
    let tmp = TempDir::new(profile)?;
    let mut cmd = tar();
    cmd.args([
        "--extract",
        "--gzip",
        "--file=-",
        "--no-same-owner",
        "--no-same-permissions",
        "--no-overwrite-dir",
        "-C",
    ])
    .arg(&tmp.0);
    run(cmd, Some(snapshot), "unpack")?;
    let extracted = tmp.0.join("Default");
    for name in FOLDERS {
        let path = extracted.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => make_private(&path)?,
            Ok(_) => return Err(invalid(format!("{name} in the snapshot is not a folder"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let default = profile.join("Default");
    crate::files::private_dir(&default, false)?;
    swap(&default, &extracted, &tmp.0.join("old"))
}

/// Removes the login `profile` kept (the snapshot's folders; the browser must be closed): the
/// session was logged out on another node after this profile last ran.
pub fn forget(profile: &Path) -> io::Result<()> {
    for name in FOLDERS {
        match std::fs::remove_dir_all(profile.join("Default").join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Moves the profile's folders into `aside` and the extracted ones in; on failure puts
/// everything back (best effort). `aside` lies in the temporary folder, removed afterwards.
fn swap(default: &Path, extracted: &Path, aside: &Path) -> io::Result<()> {
    std::fs::create_dir(aside)?;
    let mut moved_aside = Vec::new();
    let mut moved_in = Vec::new();
    let mut moves = || -> io::Result<()> {
        for name in FOLDERS {
            if std::fs::symlink_metadata(default.join(name)).is_ok() {
                std::fs::rename(default.join(name), aside.join(name))?;
                moved_aside.push(name);
            }
        }
        for name in FOLDERS {
            if extracted.join(name).exists() {
                std::fs::rename(extracted.join(name), default.join(name))?;
                moved_in.push(name);
            }
        }
        Ok(())
    };
    let result = moves();
    if result.is_err() {
        for name in moved_in {
            let _ = std::fs::rename(default.join(name), extracted.join(name));
        }
        for name in moved_aside {
            let _ = std::fs::rename(aside.join(name), default.join(name));
        }
    }
    result
}

/// Refuses an archive with any entry other than the two folders and the folders and regular
/// files under them: absolute paths, `..`, links and special files are all refused.
fn check(archive: &[u8]) -> io::Result<()> {
    // One line per entry in both listings: the names (escaped, so no newline inside one), and
    // the verbose lines whose first character is the entry's type.
    let list = |verbose: bool| -> io::Result<Vec<String>> {
        let mut cmd = tar();
        cmd.args(["--list", "--gzip", "--file=-", "--quoting-style=escape"]);
        if verbose {
            cmd.arg("--verbose");
        }
        let out = run(cmd, Some(archive), "list").map_err(|e| invalid(e.to_string()))?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_owned)
            .collect())
    };
    let names = list(false)?;
    let types = list(true)?;
    if names.len() != types.len() {
        return Err(invalid("the snapshot's listings disagree".to_owned()));
    }
    if names.is_empty() {
        return Err(invalid("the snapshot is empty".to_owned()));
    }
    for (name, line) in names.iter().zip(&types) {
        let kind = line.chars().next().unwrap_or(' ');
        if !entry_allowed(name, kind) {
            return Err(invalid(format!(
                "the snapshot holds {name:?} (type {kind:?}); only the folders and files of \
                 Default/IndexedDB and Default/Local Storage are allowed"
            )));
        }
    }
    Ok(())
}

/// `Default/<folder>` itself as a folder, or a folder or regular file below it, spelled
/// without empty, `.` or `..` components.
fn entry_allowed(name: &str, kind: char) -> bool {
    let parts: Vec<&str> = name.strip_suffix('/').unwrap_or(name).split('/').collect();
    let clean = parts
        .iter()
        .all(|p| !p.is_empty() && *p != "." && *p != "..");
    let under = parts.len() >= 2 && parts[0] == "Default" && FOLDERS.contains(&parts[1]);
    let kind_ok = match parts.len() {
        2 => kind == 'd',
        _ => kind == 'd' || kind == '-',
    };
    clean && under && kind_ok
}

/// Folders 0700 and files 0600 below and including `path`, whatever the umask; anything else
/// (a link) is refused.
fn make_private(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        // Tighten (and make readable) first, then descend.
        std::fs::set_permissions(path, Permissions::from_mode(PRIVATE_DIR_MODE))?;
        for entry in std::fs::read_dir(path)? {
            make_private(&entry?.path())?;
        }
        Ok(())
    } else if meta.is_file() {
        std::fs::set_permissions(path, Permissions::from_mode(PRIVATE_FILE_MODE))
    } else {
        Err(invalid(format!(
            "{} is neither a folder nor a file",
            path.display()
        )))
    }
}

/// GNU tar, untouched by the caller's `TAR_OPTIONS`/`GZIP` and with C-locale listings.
fn tar() -> Command {
    let mut cmd = Command::new("tar");
    cmd.env_remove("TAR_OPTIONS")
        .env_remove("GZIP")
        .env("LC_ALL", "C");
    cmd
}

/// Runs `cmd` with `input` on its stdin (or none) and returns its stdout; a failure carries
/// tar's own message.
fn run(mut cmd: Command, input: Option<&[u8]>, what: &str) -> io::Result<Vec<u8>> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("tar could not be started: {e}")))?;
    let stdin = child.stdin.take();
    // Feed stdin from a second thread while this one drains stdout, or both pipes fill up.
    let output = std::thread::scope(|scope| {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            scope.spawn(move || {
                // tar stops reading on a bad archive; its exit status tells why.
                let _ = stdin.write_all(input);
            });
        }
        child.wait_with_output()
    })?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "tar ({what}) failed, {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A fresh 0700 folder `.snapshot-<pid>-<n>` inside the profile, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(profile: &Path) -> io::Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = profile.join(format!(".snapshot-{}-{n}", std::process::id()));
            match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&path) {
                Ok(()) => return Ok(TempDir(path)),
                // A leftover of a crashed daemon that had our pid: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Every entry below `root`: folders as None, files as their bytes, links as `-> target`.
    fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_symlink() {
                    let target = std::fs::read_link(&path).unwrap();
                    out.insert(rel, Some(format!("-> {}", target.display()).into_bytes()));
                } else if meta.is_dir() {
                    out.insert(rel, None);
                    walk(root, &path, out);
                } else {
                    out.insert(rel, Some(std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    /// A profile as Chromium leaves it, login folders and others.
    fn fake_profile(profile: &Path) {
        let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let idb = profile.join("Default/IndexedDB");
        write(
            &idb.join("https_web.whatsapp.com_0.indexeddb.leveldb/000003.log"),
            &binary,
        );
        write(
            &idb.join("https_web.whatsapp.com_0.indexeddb.blob/1/00/2"),
            b"blob",
        );
        write(&idb.join("with space.txt"), b"spaced\n");
        std::fs::create_dir_all(idb.join("empty")).unwrap();
        write(
            &profile.join("Default/Local Storage/leveldb/MANIFEST-000001"),
            &[0, 1, 2, 255, 0],
        );
        write(&profile.join("Default/Cookies"), b"cookies");
        write(&profile.join("Default/Cache/x"), b"cache");
        write(&profile.join("Default/Preferences"), b"{}");
        write(&profile.join("Local State"), b"{}");
    }

    /// Runs tar in `dir` with `args` and returns the archive it writes to stdout.
    fn tar_in(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("tar")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn round_trip_keeps_both_folders_byte_for_byte_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("source");
        fake_profile(&source);
        let snapshot = pack(&source).unwrap().expect("a snapshot");

        let target = tmp.path().join("hosts/other/profile");
        unpack(&target, &snapshot).unwrap();
        for folder in ["Default/IndexedDB", "Default/Local Storage"] {
            let (want, got) = (tree(&source.join(folder)), tree(&target.join(folder)));
            assert!(!want.is_empty());
            assert_eq!(got, want, "{folder}");
        }
        let all: Vec<PathBuf> = tree(&target).into_keys().collect();
        assert!(
            all.iter().all(|p| p.starts_with("Default/IndexedDB")
                || p.starts_with("Default/Local Storage")
                || p == Path::new("Default")),
            "only the login folders (no Cookies, Cache, Preferences, temporary folder): {all:?}"
        );
    }

    #[test]
    fn unpack_replaces_the_login_folders_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("source");
        write(&source.join("Default/IndexedDB/new"), b"new");
        let snapshot = pack(&source).unwrap().unwrap();

        let target = tmp.path().join("target");
        write(&target.join("Default/IndexedDB/old"), b"stale");
        write(&target.join("Default/Local Storage/leveldb/old"), b"stale");
        write(&target.join("Default/Preferences"), b"{\"kept\":1}");
        unpack(&target, &snapshot).unwrap();

        assert!(!target.join("Default/IndexedDB/old").exists());
        assert_eq!(
            std::fs::read(target.join("Default/IndexedDB/new")).unwrap(),
            b"new"
        );
        assert!(
            !target.join("Default/Local Storage").exists(),
            "a folder the snapshot lacks is not kept stale"
        );
        assert_eq!(
            std::fs::read(target.join("Default/Preferences")).unwrap(),
            b"{\"kept\":1}"
        );
        let names: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["Default"], "no temporary folder left behind");
    }

    #[test]
    fn a_profile_without_login_folders_packs_to_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(pack(tmp.path()).unwrap().is_none());
        assert!(pack(&tmp.path().join("missing")).unwrap().is_none());
        write(&tmp.path().join("Default/Cookies"), b"cookies");
        assert!(pack(tmp.path()).unwrap().is_none());
    }

    #[test]
    fn pack_refuses_links() {
        let tmp = tempfile::tempdir().unwrap();
        let inside = tmp.path().join("inside");
        write(&inside.join("Default/IndexedDB/a"), b"a");
        symlink("/etc/passwd", inside.join("Default/IndexedDB/link")).unwrap();
        let err = pack(&inside).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");

        let folder = tmp.path().join("folder");
        std::fs::create_dir_all(folder.join("Default")).unwrap();
        symlink(&inside, folder.join("Default/IndexedDB")).unwrap();
        let err = pack(&folder).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn malicious_archives_are_refused_and_leave_the_profile_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let stage = tmp.path().join("stage");
        write(&stage.join("evil"), b"evil");
        write(&stage.join("sub/.keep"), b"");
        write(&stage.join("Default/Preferences"), b"{\"evil\":1}");
        let abs = stage.join("evil");
        let with_link = tmp.path().join("with-link");
        write(&with_link.join("Default/IndexedDB/a"), b"a");
        symlink("/etc/passwd", with_link.join("Default/IndexedDB/link")).unwrap();
        let with_hard = tmp.path().join("with-hard");
        write(&with_hard.join("Default/IndexedDB/a"), b"a");
        std::fs::hard_link(
            with_hard.join("Default/IndexedDB/a"),
            with_hard.join("Default/IndexedDB/b"),
        )
        .unwrap();
        let as_file = tmp.path().join("as-file");
        write(&as_file.join("Default/IndexedDB"), b"not a folder");

        assert!(
            pack(&with_hard).is_err(),
            "a hard link is refused on pack too"
        );
        let mut truncated = {
            let ok = tmp.path().join("ok");
            write(&ok.join("Default/IndexedDB/a"), &[7; 10_000]);
            pack(&ok).unwrap().unwrap()
        };
        truncated.truncate(truncated.len() / 2);

        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "dot-dot",
                tar_in(&stage.join("sub"), &["-czPf", "-", "../evil"]),
            ),
            (
                "absolute",
                tar_in(&stage, &["-czPf", "-", abs.to_str().unwrap()]),
            ),
            (
                "other profile file",
                tar_in(&stage, &["-czf", "-", "Default/Preferences"]),
            ),
            (
                "dot-dot inside",
                tar_in(
                    &stage,
                    &[
                        "-czPf",
                        "-",
                        "--transform=s,^evil$,Default/IndexedDB/../../evil,",
                        "evil",
                    ],
                ),
            ),
            (
                "symlink",
                tar_in(&with_link, &["-czf", "-", "Default/IndexedDB"]),
            ),
            (
                "hard link",
                tar_in(&with_hard, &["-czf", "-", "Default/IndexedDB"]),
            ),
            (
                "folder as a file",
                tar_in(&as_file, &["-czf", "-", "Default/IndexedDB"]),
            ),
            ("not gzip", b"definitely not a tar".to_vec()),
            ("truncated", truncated),
        ];

        let target = tmp.path().join("target");
        write(&target.join("Default/IndexedDB/mine"), b"mine");
        write(&target.join("Default/Preferences"), b"{}");
        let before = tree(&target);
        for (what, archive) in cases {
            let err = unpack(&target, &archive).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
            assert_eq!(tree(&target), before, "{what}: the profile is unchanged");
            assert_eq!(
                std::fs::read(stage.join("evil")).unwrap(),
                b"evil",
                "{what}"
            );
            assert!(!tmp.path().join("evil").exists(), "{what}");
        }
        let missing = tmp.path().join("never-created");
        assert!(unpack(&missing, b"junk").is_err());
        assert!(!missing.exists(), "a refused snapshot creates no profile");
    }

    #[test]
    fn extracted_files_are_0600_and_folders_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("source");
        write(&source.join("Default/IndexedDB/db/open"), b"x");
        write(&source.join("Default/Local Storage/leveldb/LOG"), b"y");
        for (path, mode) in [
            ("Default/IndexedDB", 0o777),
            ("Default/IndexedDB/db", 0o755),
            ("Default/IndexedDB/db/open", 0o666),
            ("Default/Local Storage/leveldb/LOG", 0o444),
        ] {
            std::fs::set_permissions(source.join(path), Permissions::from_mode(mode)).unwrap();
        }
        let snapshot = pack(&source).unwrap().unwrap();

        let target = tmp.path().join("target");
        unpack(&target, &snapshot).unwrap();
        assert_eq!(mode(&target), 0o700);
        for (path, want) in tree(&target) {
            let want = if want.is_some() { 0o600 } else { 0o700 };
            assert_eq!(mode(&target.join(&path)), want, "{}", path.display());
        }
    }
}
