//! Chromium, owned: the process and its group ([`process`]), the CDP connection and the
//! WhatsApp Web page protocol ([`page`]).
//!
//! The daemon launches Chromium itself (not `Browser::launch`) so it controls the process group
//! and the parent-death signal: a SIGKILLed daemon leaves no browser behind (NOTES-stack).

pub mod devtools;
pub mod page;
pub mod process;
pub mod profile;

use std::path::{Path, PathBuf};

pub use page::{Observation, PageConfig, PageProbe, WaPage};
pub use process::{BrowserProcess, LaunchSpec};
pub use profile::FolderLock;

/// Names tried on PATH when `CHROMIUM_PATH` is not set.
const CHROMIUM_NAMES: [&str; 4] = ["chromium", "chromium-browser", "google-chrome", "chrome"];

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("Chromium not found at {0}; install the `chromium` package or set CHROMIUM_PATH")]
    NotFound(String),
    #[error("could not start Chromium: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("Chromium exited during start-up ({0})")]
    ExitedEarly(String),
    #[error("Chromium did not answer on DevTools within {0:?}")]
    StartTimeout(std::time::Duration),
    #[error("DevTools protocol: {0}")]
    Cdp(String),
    #[error("{0}")]
    Profile(String),
    #[error("DevTools call {0} timed out")]
    Timeout(&'static str),
    /// The page could not be loaded at all (DNS, refused connection, proxy error).
    #[error("cannot load {url}: {error}")]
    Navigation { url: String, error: String },
}

/// Launches Chromium on the profile and opens the WhatsApp page in it; `on_change` hears every
/// change the page reports. Fails when the browser exits or does not answer within
/// `spec.startup_timeout`, or when the page cannot be loaded.
pub async fn launch(
    spec: &LaunchSpec,
    page: PageConfig,
    on_change: impl Fn(Observation) + Send + 'static,
) -> Result<(BrowserProcess, WaPage), BrowserError> {
    let (process, ws) = BrowserProcess::spawn(spec).await?;
    let opened = tokio::select! {
        opened = tokio::time::timeout(
            spec.startup_timeout,
            WaPage::open(&ws, page, spec.log_key.clone(), on_change),
        ) => opened.unwrap_or(Err(BrowserError::StartTimeout(spec.startup_timeout))),
        report = process.exited() => Err(BrowserError::ExitedEarly(report)),
    };
    match opened {
        Ok(page) => Ok((process, page)),
        Err(e) => {
            // The group goes before the profile is handed to anyone else.
            process.reap_group().await;
            Err(e)
        }
    }
}

/// Resolves the Chromium binary: the configured path, else the first known name on PATH.
///
/// Debian's `/usr/bin/chromium` is a shell wrapper; the real binary sits at
/// `/usr/lib/chromium/chromium`. Preferring it keeps our pid the browser's pid.
pub fn find_chromium(configured: Option<&Path>) -> Result<PathBuf, BrowserError> {
    if let Some(path) = configured {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(BrowserError::NotFound(path.display().to_string()))
        };
    }
    let debian = Path::new("/usr/lib/chromium/chromium");
    if is_executable(debian) {
        return Ok(debian.to_path_buf());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .flat_map(|dir| CHROMIUM_NAMES.iter().map(move |name| dir.join(name)))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| BrowserError::NotFound(format!("PATH ({})", CHROMIUM_NAMES.join(", "))))
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_chromium_says_what_to_do() {
        let err = find_chromium(Some(Path::new("/nonexistent/chromium"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Chromium not found at /nonexistent/chromium; install the `chromium` package or set CHROMIUM_PATH"
        );
    }
}
