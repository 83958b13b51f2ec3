use std::fmt;

/// Longest accepted user id (the auth provider's ids are UUIDs, 36 chars).
pub const USER_ID_MAX_LEN: usize = 64;

/// The auth provider's user id: 1..=64 chars of `[A-Za-z0-9_-]`, first char alphanumeric.
///
/// The charset excludes `.`, `/`, `\`, `%`, NUL and every non-ASCII char, so a `UserId` can never
/// name a path other than a single plain folder-name component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user id must be 1 to {USER_ID_MAX_LEN} characters of A-Z, a-z, 0-9, '_' or '-', starting with a letter or digit")]
pub struct UserIdError;

impl UserId {
    pub fn parse(raw: &str) -> Result<UserId, UserIdError> {
        let bytes = raw.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= USER_ID_MAX_LEN
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
        if ok {
            Ok(UserId(raw.to_owned()))
        } else {
            Err(UserIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_plain_ids() {
        for ok in [
            "3f2b8c1e-7d4a-4b9e-9a51-0c2d6e8f1a23",
            "a",
            "A_b-9",
            "9",
            &"x".repeat(USER_ID_MAX_LEN),
        ] {
            assert_eq!(UserId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_hostile_ids() {
        let long = "x".repeat(USER_ID_MAX_LEN + 1);
        for bad in [
            "", ".", "..", "a/b", "a\\b", "%2e%2e", "a\0b", "\0", "-a", "_a", "a b", "a.b",
            "аdmin", // Cyrillic 'а'
            "ａ",    // full-width 'a'
            "é", "a\n", "a:b", &long,
        ] {
            assert_eq!(UserId::parse(bad), Err(UserIdError), "{bad:?}");
        }
    }
}
