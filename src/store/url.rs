//! `DATABASE_URL` parsing: which backend, and where.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Parsed `DATABASE_URL`.
///
/// `postgres://…` or `postgresql://…` is PostgreSQL (kept verbatim for libpq); `sqlite://PATH`,
/// `sqlite:PATH` or a plain path is a SQLite file. Anything else is refused with a one-line reason.
/// Neither `Display` nor `Debug` ever shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Replaces the password with `***`.
const REDACTED: &str = "***";

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(
                "database URL is empty (expected postgres://… or a SQLite file path)".into(),
            );
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" => Ok(DatabaseUrl::Postgres(raw.to_owned())),
                "sqlite" => sqlite_path(&raw[scheme.len() + 3..]),
                other => Err(format!(
                    "unsupported database URL scheme {other:?} (expected postgres://, postgresql://, sqlite:// or a file path)"
                )),
            };
        }
        match raw.strip_prefix("sqlite:") {
            Some(path) => sqlite_path(path),
            None => sqlite_path(raw),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }
}

fn sqlite_path(path: &str) -> Result<DatabaseUrl, String> {
    if path.is_empty() {
        return Err("SQLite database URL has no file path".into());
    }
    // Every pooled connection would get its own private in-memory database.
    if path == ":memory:" || path.contains("mode=memory") {
        return Err(
            "an in-memory SQLite database cannot be shared by the pool; give a file path".into(),
        );
    }
    Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
}

/// `scheme://user:secret@host/db?password=x` → `scheme://user:***@host/db?password=***`.
fn redact_postgres(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The userinfo ends at the last '@' of the part before the path/query (passwords may hold '@').
    let mut out = format!("{scheme}://");
    match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host_and_path) = before_query.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:{REDACTED}")),
                None => out.push_str(userinfo),
            }
            out.push_str(host_and_path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={REDACTED}"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatabaseUrl::parse(s)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&redact_postgres(url)),
        }
    }
}

/// Hand-written so `{:?}` (config dumps, assertion failures) cannot leak the password either.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseUrl::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&redact_postgres(url))
                .finish(),
        }
    }
}
