//! The seam's real implementation: Debian's Chromium — `chromium-headless-shell` or `chromium`
//! ([`super::engine`]) — one process group per session, DevTools over a pipe, the profile locked
//! while it runs.

use std::path::PathBuf;
use std::time::Duration;

use super::page::{PageProbe, WaPage};
use super::process::{BrowserProcess, LaunchSpec};
use super::profile::{clear_stale_singleton, FolderLock};
use super::{
    BoxFuture, Browser, BrowserError, Command, Launcher, Observation, ObservationSink, PageConfig,
    Source,
};

/// Launches Chromium with the configured page.
pub struct ChromiumLauncher {
    /// The binary found at boot, or why none was.
    pub binary: Result<super::BrowserBinary, String>,
    pub page: PageConfig,
    /// Injected into every page before WhatsApp Web's own scripts; `None`: DOM signals only.
    pub wa_js: Option<super::wajs::WaJs>,
    /// From spawn to a page that answers on DevTools.
    pub startup_timeout: Duration,
    /// [`super::process::MEMORY_SAVERS`], or a prefix of them for the memory benchmark.
    pub memory_savers: &'static [super::process::MemorySaver],
}

impl Launcher for ChromiumLauncher {
    fn launch(
        &self,
        profile: PathBuf,
        log_key: String,
        on_change: ObservationSink,
    ) -> BoxFuture<Result<Box<dyn Browser>, BrowserError>> {
        let binary = self.binary.clone();
        let page = self.page.clone();
        let wa_js = self.wa_js.as_ref().map(|w| w.source.clone());
        let startup_timeout = self.startup_timeout;
        let memory_savers = self.memory_savers;
        Box::pin(async move {
            let binary = binary.map_err(BrowserError::NotFound)?;
            let lock = acquire_lock(&profile).await?;
            clear_stale_singleton(&profile).map_err(BrowserError::ProfileInUse)?;
            let spec = LaunchSpec {
                executable: binary.path,
                engine: binary.engine,
                profile_dir: profile,
                log_key,
                startup_timeout,
                memory_savers,
            };
            let (process, page) = launch(&spec, page, wa_js, on_change).await?;
            Ok(Box::new(ChromiumBrowser {
                probe: page.probe(),
                page,
                process,
                lock,
            }) as Box<dyn Browser>)
        })
    }

    fn has_bridge(&self) -> bool {
        self.wa_js.is_some()
    }

    fn ready(&self) -> Result<(), String> {
        match &self.binary {
            Ok(b) if super::is_executable(&b.path) => Ok(()),
            Ok(b) => Err(format!("{} is gone", b.path.display())),
            Err(e) => Err(e.clone()),
        }
    }
}

/// How long a launch retries a profile lock that is briefly still referenced.
const LOCK_RETRY_FOR: Duration = Duration::from_secs(2);

/// Takes the profile's lock. A lock the previous browser of this session just released can
/// still be referenced for a moment by a process that another launch forked and that has not
/// reached `exec` yet (it holds copies of every descriptor until then): retry briefly before
/// calling the profile in use.
async fn acquire_lock(profile: &std::path::Path) -> Result<FolderLock, BrowserError> {
    let deadline = tokio::time::Instant::now() + LOCK_RETRY_FOR;
    loop {
        match FolderLock::acquire(profile) {
            Ok(lock) => return Ok(lock),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(source) => {
                return Err(BrowserError::Profile {
                    path: profile.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Spawns Chromium and opens the page; fails when the browser exits or does not answer within
/// `spec.startup_timeout`, or when the page cannot be loaded. On failure the whole process group
/// is gone before this returns.
async fn launch(
    spec: &LaunchSpec,
    page: PageConfig,
    wa_js: Option<std::sync::Arc<str>>,
    on_change: ObservationSink,
) -> Result<(BrowserProcess, WaPage), BrowserError> {
    let (process, ws) = BrowserProcess::spawn(spec).await?;
    let opened = tokio::select! {
        opened = tokio::time::timeout(
            spec.startup_timeout,
            WaPage::open(&ws, page, wa_js, spec.log_key.clone(), on_change),
        ) => opened.unwrap_or(Err(BrowserError::StartTimeout(spec.startup_timeout))),
        report = process.exited() => Err(BrowserError::ExitedEarly(report)),
    };
    match opened {
        Ok(page) => Ok((process, page)),
        Err(e) => {
            process.reap_group().await;
            Err(e)
        }
    }
}

/// A running Chromium: its page, its process group, its profile lock.
struct ChromiumBrowser {
    page: WaPage,
    probe: PageProbe,
    process: BrowserProcess,
    /// Released only once the whole group is gone.
    lock: FolderLock,
}

impl ChromiumBrowser {
    fn into_parts(self: Box<Self>) -> (WaPage, BrowserProcess, FolderLock) {
        (self.page, self.process, self.lock)
    }
}

impl Browser for ChromiumBrowser {
    fn pid(&self) -> Option<u32> {
        Some(self.process.pid())
    }

    fn exited(&self) -> BoxFuture<String> {
        Box::pin(self.process.exited())
    }

    fn observe(&self, source: Source) -> BoxFuture<Result<Observation, BrowserError>> {
        let probe = self.probe.clone();
        Box::pin(async move { probe.observe(source).await })
    }

    fn refresh_qr(&self, source: Source) -> BoxFuture<Result<(), BrowserError>> {
        let probe = self.probe.clone();
        Box::pin(async move {
            match source {
                Source::Dom => probe.click_reload().await,
                Source::Bridge => probe.command(Command::RefreshQr).await.map(drop),
            }
        })
    }

    fn page(&self) -> super::PageHandle {
        let probe = self.probe.clone();
        std::sync::Arc::new(move |command| {
            let probe = probe.clone();
            Box::pin(async move { probe.command(command).await })
        })
    }

    fn close(self: Box<Self>, grace: Duration) -> BoxFuture<()> {
        let (page, process, lock) = self.into_parts();
        Box::pin(async move {
            page.close().await;
            process.finish(grace).await;
            drop(lock);
        })
    }

    fn discard(self: Box<Self>) -> BoxFuture<()> {
        let (page, process, lock) = self.into_parts();
        Box::pin(async move {
            drop(page);
            // The main process is gone; helpers may linger: kill the group and wait for it.
            process.reap_group().await;
            drop(lock);
        })
    }
}
