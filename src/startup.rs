//! Builds the application from [`Settings`]: checks the folders, opens the store (migrations
//! run here), starts the actors' arbiter, binds the HTTP listener (port 0 works, for tests).

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use tokio::sync::broadcast;

use crate::actors::session::{SessionEnv, Supervision};
use crate::browser::{find_chromium, PageConfig};
use crate::config::Settings;
use crate::domain::SessionsRoot;
use crate::store::{Store, StoreError};

/// Start-up failures: each names the setting at fault. `main` exits with code 2 on these.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("SESSIONS_DIR {path} is not usable: {source}")]
    SessionsDir {
        path: String,
        source: std::io::Error,
    },
    #[error("DATA_DIR {path} is not usable: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("DATABASE_URL {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error("BIND_ADDR {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub store: Store,
    pub sessions: Arc<SessionEnv>,
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    // Session actors live on this thread: long-lived, so a browser's parent-death signal (tied to
    // the spawning thread) only fires when the daemon dies.
    _arbiter: Arbiter,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        ensure_writable(&settings.data_dir).map_err(|source| StartupError::DataDir {
            path: settings.data_dir.display().to_string(),
            source,
        })?;
        let sessions = SessionsRoot::create(&settings.sessions_dir)
            .and_then(|root| ensure_writable(root.path()).map(|()| root))
            .map_err(|source| StartupError::SessionsDir {
                path: settings.sessions_dir.display().to_string(),
                source,
            })?;

        let db = settings.database();
        let max_slots = settings.max_slots;
        let store = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || Store::open(&db, max_slots))
                .await
                .expect("store open does not panic")
        }
        .map_err(|source| StartupError::Database {
            url: db.to_string(),
            source,
        })?;
        log::info!("store: {} ({db})", store.backend());

        let chromium = find_chromium(settings.chromium_path.as_deref()).map_err(|e| e.to_string());
        match &chromium {
            Ok(path) => log::info!("chromium: {}", path.display()),
            Err(e) => log::warn!("{e}"),
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            log::warn!("running as root: Chromium runs without its sandbox; deploy/ runs the daemon as its own user");
        }
        let (events, _) = broadcast::channel(1024);
        let env = Arc::new(SessionEnv {
            sessions,
            chromium,
            page: PageConfig {
                url: settings.whatsapp_url.clone(),
                qr_selector: settings.qr_selector.clone(),
                reload_selector: settings.qr_reload_selector.clone(),
                linked_selector: settings.linked_selector.clone(),
                wid_keys: settings.wid_keys.clone(),
            },
            qr_timeout: settings.qr_timeout(),
            launch_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(5),
            poll_every: Duration::from_secs(5),
            supervision: Supervision::default(),
            store: store.clone(),
            events,
        });

        let arbiter = Arbiter::new();
        let state = web::Data::new(AppState {
            store,
            sessions: env,
        });
        let listener =
            TcpListener::bind(settings.bind_addr).map_err(|source| StartupError::Bind {
                addr: settings.bind_addr.to_string(),
                source,
            })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(crate::http::routes)
        })
        .workers(2)
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: settings.bind_addr.to_string(),
            source,
        })?
        .run();
        log::info!(
            "listening on {}",
            settings.bind_addr.ip().to_string() + ":" + &port.to_string()
        );
        Ok(Application {
            port,
            server,
            state,
            _arbiter: arbiter,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// The arbiter the session actors run on.
    pub fn sessions_arbiter(&self) -> actix::ArbiterHandle {
        self._arbiter.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Creates the folder and proves we can write in it.
fn ensure_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}
