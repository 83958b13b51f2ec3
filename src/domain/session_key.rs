use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::{Slot, UserId};

/// Between the user id and the slot number in a profile folder name: `<userId>-slot<slot>`
/// (the legacy layout of the Node backend, so its profiles keep working).
pub const PROFILE_SUFFIX: &str = "-slot";

/// The one name of a session: `(userId, slot)`. Registry key, DB key, profile folder, log prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    user_id: UserId,
    slot: Slot,
}

impl SessionKey {
    pub fn new(user_id: UserId, slot: Slot) -> SessionKey {
        SessionKey { user_id, slot }
    }

    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// `<userId>-slot<slot>`: the profile folder's name.
    pub fn folder_name(&self) -> String {
        format!("{}{}{}", self.user_id, PROFILE_SUFFIX, self.slot)
    }

    /// Reads a profile folder name back into a key (`None` when it is not one of ours).
    pub fn from_folder_name(name: &str, max_slots: u16) -> Option<SessionKey> {
        let (user, slot) = name.rsplit_once(PROFILE_SUFFIX)?;
        let key = SessionKey::new(
            UserId::parse(user).ok()?,
            Slot::parse(slot, max_slots).ok()?,
        );
        // Round trip, so e.g. "a-slot01" is not silently read as "a-slot1".
        (key.folder_name() == name).then_some(key)
    }
}

impl fmt::Display for SessionKey {
    /// `<userId>:<slot>`, the form used in every log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.user_id, self.slot)
    }
}

/// `SESSIONS_DIR`, made absolute: the only place profile paths come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionsRoot(PathBuf);

impl SessionsRoot {
    /// Creates the folder if needed (0700) and resolves it to an absolute, symlink-free path.
    pub fn create(dir: &Path) -> std::io::Result<SessionsRoot> {
        crate::files::private_dir(dir, true)?;
        Ok(SessionsRoot(dir.canonicalize()?))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The session's profile folder: `SESSIONS_DIR/<userId>-slot<slot>`, always a direct child.
    pub fn profile_dir(&self, key: &SessionKey) -> PathBuf {
        let dir = self.0.join(key.folder_name());
        assert!(
            self.is_profile_dir(&dir),
            "profile path escaped SESSIONS_DIR"
        );
        dir
    }

    /// True when `dir` is exactly one plain component below the root (checked before deleting).
    pub fn is_profile_dir(&self, dir: &Path) -> bool {
        let Ok(rest) = dir.strip_prefix(&self.0) else {
            return false;
        };
        let mut parts = rest.components();
        matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DEFAULT_MAX_SLOTS;

    fn key(user: &str, slot: u16) -> SessionKey {
        SessionKey::new(
            UserId::parse(user).unwrap(),
            Slot::new(slot.into(), 10).unwrap(),
        )
    }

    #[test]
    fn folder_name_is_the_legacy_layout() {
        let k = key("3f2b8c1e-7d4a-4b9e-9a51-0c2d6e8f1a23", 3);
        assert_eq!(
            k.folder_name(),
            "3f2b8c1e-7d4a-4b9e-9a51-0c2d6e8f1a23-slot3"
        );
        assert_eq!(k.to_string(), "3f2b8c1e-7d4a-4b9e-9a51-0c2d6e8f1a23:3");
        assert_eq!(SessionKey::from_folder_name(&k.folder_name(), 10), Some(k));
    }

    #[test]
    fn folder_names_that_are_not_ours_are_refused() {
        for bad in [
            "abc",
            "abc-slot",
            "abc-slot0",
            "abc-slot11",
            "abc-slot01",
            "-slot1",
            "..-slot1",
            "a.b-slot1",
            "abc-slot1 ",
        ] {
            assert_eq!(SessionKey::from_folder_name(bad, 10), None, "{bad:?}");
        }
        // A user id may itself contain "-slot": the last one separates.
        let k = SessionKey::from_folder_name("a-slot2-slot3", 10).unwrap();
        assert_eq!((k.user_id().as_str(), k.slot().get()), ("a-slot2", 3));
    }

    #[test]
    fn every_accepted_id_stays_a_direct_child() {
        let tmp = std::env::temp_dir().join(format!("wa-key-test-{}", std::process::id()));
        let root = SessionsRoot::create(&tmp).unwrap();
        // Every single-char id and a sample of longer shapes (the charset has no separators).
        let alphabet: Vec<char> = ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(['-', '_'])
            .collect();
        let mut ids: Vec<String> = Vec::new();
        for a in &alphabet {
            for b in &alphabet {
                ids.push(format!("{a}{b}"));
            }
        }
        ids.push("x".repeat(crate::domain::USER_ID_MAX_LEN));
        let mut checked = 0;
        for id in ids {
            let Ok(user) = UserId::parse(&id) else {
                continue;
            };
            for slot in 1..=DEFAULT_MAX_SLOTS {
                let k = SessionKey::new(user.clone(), Slot::new(slot.into(), 10).unwrap());
                let dir = root.profile_dir(&k);
                assert_eq!(dir.parent(), Some(root.path()));
                assert_eq!(dir.file_name().unwrap(), k.folder_name().as_str());
                checked += 1;
            }
        }
        assert!(checked > 30_000);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn only_direct_children_pass_the_check() {
        let root = SessionsRoot(PathBuf::from("/srv/sessions"));
        assert!(root.is_profile_dir(Path::new("/srv/sessions/a-slot1")));
        assert!(!root.is_profile_dir(Path::new("/srv/sessions")));
        assert!(!root.is_profile_dir(Path::new("/srv/sessions/a/b")));
        assert!(!root.is_profile_dir(Path::new("/srv/sessions/../etc")));
        assert!(!root.is_profile_dir(Path::new("/srv/other/a-slot1")));
    }
}
