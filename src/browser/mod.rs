//! The browser seam: what a session needs of a browser ([`Launcher`], [`Browser`]), and its
//! one real implementation, Chromium ([`chromium`]): the process and its group ([`process`]),
//! DevTools over a pipe ([`devtools`]), the profile lock ([`profile`]) and the WhatsApp Web
//! page protocol ([`page`]). The supervision tests put a scripted fake behind the same traits
//! (docs/ARCHITECTURE.md, "The browser seam").
//!
//! The daemon launches Chromium itself (not chromiumoxide's `Browser::launch`) so it controls the
//! process group and the parent-death signal: a SIGKILLed daemon leaves no browser behind.

pub mod bridge;
pub mod chromium;
pub mod devtools;
pub mod engine;
pub mod page;
pub mod process;
pub mod profile;
pub mod wajs;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

pub use bridge::Command;
pub use chromium::ChromiumLauncher;
pub use engine::{BrowserBinary, Engine, EngineChoice};
pub use page::{Observation, PageConfig, Source};
pub use process::{BrowserProcess, LaunchSpec, MemorySaver, MEMORY_SAVERS};
pub use profile::{in_use, remove_stale_locks, stale_locks, FolderLock};

/// A boxed future, as the seam's methods return (they are called through `dyn`).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs commands on one browser's page ([`Browser::page`]).
pub type PageHandle = std::sync::Arc<
    dyn Fn(Command) -> BoxFuture<Result<serde_json::Value, BrowserError>> + Send + Sync,
>;

/// Where the page's observations go (the session actor's mailbox), with the watcher that saw
/// each.
pub type ObservationSink = Box<dyn Fn(Source, Observation) + Send + Sync + 'static>;

/// Starts browsers for sessions.
pub trait Launcher: Send + Sync + 'static {
    /// Launches a browser on the profile folder and opens the WhatsApp page in it; every change
    /// the page shows goes to `on_change`. The browser is the caller's once this resolves.
    fn launch(
        &self,
        profile: PathBuf,
        log_key: String,
        on_change: ObservationSink,
    ) -> BoxFuture<Result<Box<dyn Browser>, BrowserError>>;

    /// Whether launches can work at all right now (readiness); the reason when not.
    fn ready(&self) -> Result<(), String>;

    /// Whether the pages get WA-JS (else only the DOM watcher runs).
    fn has_bridge(&self) -> bool;
}

/// One running browser with the WhatsApp page open.
pub trait Browser: Send + 'static {
    /// The browser's process id, when it is a process.
    fn pid(&self) -> Option<u32>;
    /// Resolves when the browser has exited (at once if it already has), with how it ended.
    fn exited(&self) -> BoxFuture<String>;
    /// Reads the page now as `source` sees it (the safety-net poll beside the pushed observations).
    fn observe(&self, source: Source) -> BoxFuture<Result<Observation, BrowserError>>;
    /// Asks for new QR codes once the page stopped offering them: through WA-JS, or by clicking
    /// the page's reload button.
    fn refresh_qr(&self, source: Source) -> BoxFuture<Result<(), BrowserError>>;
    /// Runs a WA-JS command (one at a time per browser, with a timeout); its JSON answer.
    fn command(&self, command: Command) -> BoxFuture<Result<serde_json::Value, BrowserError>> {
        (self.page())(command)
    }
    /// A handle that runs commands on this browser's page for as long as it lives (after it,
    /// they fail): what a job outside the session actor (a send) holds.
    fn page(&self) -> PageHandle;
    /// Orderly close (the profile is flushed): resolves once the browser is gone and its
    /// profile is free; killed after `grace`.
    fn close(self: Box<Self>, grace: Duration) -> BoxFuture<()>;
    /// After an unexpected exit: kills whatever is left of it; resolves once all of it is gone.
    fn discard(self: Box<Self>) -> BoxFuture<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// No browser binary to launch; the sentence says what to install or set.
    #[error("{0}")]
    NotFound(String),
    #[error("could not start Chromium")]
    Spawn(#[source] std::io::Error),
    #[error("Chromium exited during start-up ({0})")]
    ExitedEarly(String),
    #[error("Chromium did not answer on DevTools within {0:?}")]
    StartTimeout(Duration),
    #[error("DevTools call {what} failed")]
    Cdp {
        what: &'static str,
        #[source]
        source: chromiumoxide::error::CdpError,
    },
    #[error("the page answered {what} with something unreadable")]
    Unreadable {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("profile folder {path}")]
    Profile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Chromium's own lock says another browser may use the profile.
    #[error("{0}")]
    ProfileInUse(String),
    #[error("DevTools call {0} timed out")]
    Timeout(&'static str),
    /// A WA-JS command answered with an error.
    #[error("WA-JS {what} failed: {message}")]
    Command { what: &'static str, message: String },
    /// The page could not be loaded at all (DNS, refused connection, proxy error).
    #[error("cannot load {url}: {error}")]
    Navigation { url: String, error: String },
}

impl BrowserError {
    /// Errors no relaunch can cure: the session fails instead of crash-looping.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            BrowserError::NotFound(_)
                | BrowserError::Profile { .. }
                | BrowserError::ProfileInUse(_)
        )
    }
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
