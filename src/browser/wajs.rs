//! The WA-JS file (npm `@wppconnect/wa-js`): pinned by version and hash in `wa-js.pin`, installed
//! by `scripts/fetch-wa-js.sh`, loaded from `WA_JS_PATH` at start and checked by SHA-256. An
//! operator can move to another release without a rebuild by pinning its hash (`WA_JS_SHA256`);
//! docs/wa-js.md says how.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The pin, compiled in: the same file the set-up scripts read.
const PIN: &str = include_str!("../../wa-js.pin");

/// One value of the pin file (`NAME=value` lines).
fn pinned(name: &str) -> &'static str {
    PIN.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("wa-js.pin has no {name}"))
}

/// The WA-JS release this build pins.
pub fn pinned_version() -> &'static str {
    pinned("WA_JS_VERSION")
}

/// The SHA-256 of that release's `wppconnect-wa.js`.
pub fn pinned_sha256() -> &'static str {
    pinned("WA_JS_SHA256")
}

/// The version shown for a file whose version neither its banner nor the pin tells (until a
/// page reports `WPP.version`).
pub const UNKNOWN_VERSION: &str = "unknown";

/// The loaded file: what every session's page gets before WhatsApp Web's own scripts.
#[derive(Debug, Clone)]
pub struct WaJs {
    pub source: Arc<str>,
    /// From the file's banner (`/*! wppconnect-team/wa-js v4.6.0 */`), else the pin's version
    /// when the hash is the pinned one, else [`UNKNOWN_VERSION`].
    pub version: String,
    pub sha256: String,
    pub path: PathBuf,
}

impl WaJs {
    /// What `/readyz` and `/actors` show.
    pub fn info(&self) -> WaJsInfo {
        WaJsInfo {
            version: self.version.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// The WA-JS in use, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WaJsInfo {
    #[schema(example = "4.6.0")]
    pub version: String,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WaJsError {
    #[error("WA_JS_PATH {path} cannot be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "WA_JS_PATH {path} has SHA-256 {got}, expected {want}; install the pinned WA-JS \
         (scripts/fetch-wa-js.sh), or set WA_JS_SHA256={got} to use this file (docs/wa-js.md)"
    )]
    Mismatch {
        path: PathBuf,
        got: String,
        want: String,
    },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads WA-JS from `path`. `Ok(None)` when there is no file (the sessions run on the DOM
/// signals); an error when the file's hash is neither the operator's pin nor the built-in one.
pub fn load(path: &Path, operator_sha256: Option<&str>) -> Result<Option<WaJs>, WaJsError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(WaJsError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let got = sha256_hex(&bytes);
    let want = operator_sha256.unwrap_or(pinned_sha256());
    if !got.eq_ignore_ascii_case(want) {
        return Err(WaJsError::Mismatch {
            path: path.to_owned(),
            got,
            want: want.to_owned(),
        });
    }
    let source = String::from_utf8_lossy(&bytes).into_owned();
    let version = banner_version(&source).unwrap_or_else(|| {
        if got == pinned_sha256() {
            pinned_version().to_owned()
        } else {
            UNKNOWN_VERSION.to_owned()
        }
    });
    Ok(Some(WaJs {
        source: source.into(),
        version,
        sha256: got,
        path: path.to_owned(),
    }))
}

/// `/*! wppconnect-team/wa-js v4.6.0 */` near the top of the file → `4.6.0`.
fn banner_version(source: &str) -> Option<String> {
    let head = &source[..source.len().min(2048)];
    let rest = head.split("wppconnect-team/wa-js v").nth(1)?;
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        .collect();
    (!version.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_complete() {
        assert_eq!(pinned_sha256().len(), 64);
        assert!(pinned_version().split('.').count() >= 3);
        assert!(pinned("WA_JS_INTEGRITY").starts_with("sha512-"));
    }

    #[test]
    fn a_file_loads_only_with_its_pinned_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("wa.js");
        assert!(load(&path, None).unwrap().is_none(), "missing: DOM mode");
        let text = "/*! wppconnect-team/wa-js v9.9.9 */ window.WPP = {};";
        std::fs::write(&path, text).unwrap();
        let err = load(&path, None).unwrap_err();
        assert!(matches!(err, WaJsError::Mismatch { .. }), "{err}");
        let own = sha256_hex(text.as_bytes());
        let loaded = load(&path, Some(&own)).unwrap().unwrap();
        assert_eq!(
            (loaded.version.as_str(), loaded.sha256.as_str()),
            ("9.9.9", own.as_str())
        );
    }
}
