//! The service and admin tokens at boot: configured, or read from `<DATA_DIR>/credentials`, or
//! generated once and stored there (mode 0600). Boot code: nothing here runs per request.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{random_secret, AuthSetupError, Secret};
use crate::config::{Settings, Token};

/// File under `DATA_DIR` holding the generated service/admin tokens.
pub const CREDENTIALS_FILE: &str = "credentials";
/// Shortest service/admin token accepted (configured or read from the credentials file).
pub const MIN_TOKEN_LEN: usize = 16;
const API_TOKEN_VAR: &str = "API_TOKEN";
const ADMIN_TOKEN_VAR: &str = "ADMIN_TOKEN";

/// A token must be long enough to resist guessing and plain enough to travel in a header.
fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("must be at least {MIN_TOKEN_LEN} characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

pub(super) fn service_tokens(settings: &Settings) -> Result<(Secret, Secret), AuthSetupError> {
    let configured_api = settings.api_token.as_ref().map(Token::expose);
    let configured_admin = settings.admin_token.as_ref().map(Token::expose);
    for (var, value) in [
        (API_TOKEN_VAR, configured_api),
        (ADMIN_TOKEN_VAR, configured_admin),
    ] {
        if let Some(token) = value {
            check_token(token).map_err(|e| AuthSetupError(format!("{var} {e}")))?;
        }
    }
    let (api, admin) = match (configured_api, configured_admin) {
        (Some(api), Some(admin)) => (api.to_owned(), admin.to_owned()),
        (api, admin) => {
            let path = settings.data_dir.join(CREDENTIALS_FILE);
            let mut file = CredentialsFile::load(&path)?;
            let api = file.resolve(API_TOKEN_VAR, api)?;
            let admin = file.resolve(ADMIN_TOKEN_VAR, admin)?;
            file.save_if_changed()?;
            (api, admin)
        }
    };
    if api == admin {
        return Err(AuthSetupError(
            "API_TOKEN and ADMIN_TOKEN must differ (the service token would be an admin token)"
                .into(),
        ));
    }
    Ok((
        Secret(api.into_bytes().into()),
        Secret(admin.into_bytes().into()),
    ))
}

/// The admin token a running daemon takes: the configured one, else the one stored in
/// `<DATA_DIR>/credentials` (never generated here). The commands that ask the daemon send it.
pub fn admin_token(settings: &Settings) -> Result<Option<String>, AuthSetupError> {
    if let Some(token) = &settings.admin_token {
        return Ok(Some(token.expose().to_owned()));
    }
    let file = CredentialsFile::load(&settings.data_dir.join(CREDENTIALS_FILE))?;
    Ok(file.stored.get(ADMIN_TOKEN_VAR).cloned())
}

/// `<DATA_DIR>/credentials`: `NAME=value` lines for the tokens the operator did not configure.
struct CredentialsFile {
    path: PathBuf,
    stored: HashMap<String, String>,
    /// What the file should hold: the tokens taken from it or generated, not the configured ones.
    keep: Vec<(&'static str, String)>,
    generated: Vec<&'static str>,
}

impl CredentialsFile {
    fn load(path: &Path) -> Result<CredentialsFile, AuthSetupError> {
        let at_fault = |e: &dyn fmt::Display| AuthSetupError(format!("{}: {e}", path.display()));
        let stored = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(at_fault(&e)),
            Ok(meta) => {
                if !meta.is_file() {
                    return Err(at_fault(&"not a regular file"));
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(at_fault(&format_args!(
                        "readable by other users (mode {mode:o}); run chmod 600 on it"
                    )));
                }
                let text = fs::read_to_string(path).map_err(|e| at_fault(&e))?;
                parse_credentials(&text).map_err(|e| at_fault(&e))?
            }
        };
        Ok(CredentialsFile {
            path: path.to_owned(),
            stored,
            keep: Vec::new(),
            generated: Vec::new(),
        })
    }

    /// The configured token, else the stored one, else a new one.
    fn resolve(
        &mut self,
        var: &'static str,
        configured: Option<&str>,
    ) -> Result<String, AuthSetupError> {
        if let Some(token) = configured {
            return Ok(token.to_owned());
        }
        let token = match self.stored.get(var) {
            Some(token) => {
                check_token(token)
                    .map_err(|e| AuthSetupError(format!("{}: {var} {e}", self.path.display())))?;
                token.clone()
            }
            None => {
                self.generated.push(var);
                random_secret()
            }
        };
        self.keep.push((var, token.clone()));
        Ok(token)
    }

    fn save_if_changed(&self) -> Result<(), AuthSetupError> {
        let names = self.keep.iter().map(|(var, _)| *var).collect::<Vec<_>>();
        if self.generated.is_empty() {
            log::info!(
                "{} not configured: using the token(s) stored in {}",
                names.join(", "),
                self.path.display()
            );
            return Ok(());
        }
        let text: String = self
            .keep
            .iter()
            .map(|(var, token)| format!("{var}={token}\n"))
            .collect();
        write_private(&self.path, text.as_bytes())
            .map_err(|e| AuthSetupError(format!("cannot write {}: {e}", self.path.display())))?;
        log::info!(
            "{} not configured: generated {} and stored the token(s) in {} (mode 0600); clients read them there",
            names.join(", "),
            self.generated.join(", "),
            self.path.display()
        );
        Ok(())
    }
}

fn parse_credentials(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {} is not NAME=value", n + 1))?;
        out.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    Ok(out)
}

/// Writes `path` with mode 0600 from the start (never briefly readable), then renames it into
/// place so a crash leaves the old file or the new one.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_file_format() {
        let parsed = parse_credentials("# x\nAPI_TOKEN=a=b\n\n ADMIN_TOKEN = c \n").unwrap();
        assert_eq!(parsed["API_TOKEN"], "a=b");
        assert_eq!(parsed["ADMIN_TOKEN"], "c");
        assert!(parse_credentials("garbage\n").is_err());
    }
}
