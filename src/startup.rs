//! Builds the application from [`Settings`]: checks the folders, opens the store (migrations
//! run here), starts the actors' arbiter, binds the HTTP listener (port 0 works, for tests).

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use tokio::sync::broadcast;

use crate::actors::registry::{Limits, Registry, RegistryHandle, StartRate};
use crate::actors::session::SessionEnv;
use crate::auth::{Auth, AuthSetupError};
use crate::browser::process::reap_orphans;
use crate::browser::{ChromiumLauncher, FolderLock, PageConfig};
use crate::config::Settings;
use crate::domain::SessionsRoot;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::store::SessionRow;
use crate::store::{Store, StoreError};

/// Start-up failures: each names the setting at fault. `main` exits with code 2 on these.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("SESSIONS_DIR {path} is not usable")]
    SessionsDir {
        path: String,
        source: std::io::Error,
    },
    #[error("another wa-supervisor already runs on SESSIONS_DIR: {reason}")]
    Locked { reason: String },

    #[error("DATA_DIR {path} is not usable")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("DATABASE_URL {url}")]
    Database { url: String, source: StoreError },
    #[error("{0}")]
    Auth(AuthSetupError),
    #[error("WA-JS")]
    WaJs(#[from] crate::browser::wajs::WaJsError),
    #[error("{0}")]
    Browser(#[from] crate::browser::engine::EngineError),
    #[error("CLUSTER_TOKEN is set (cluster mode) but DATABASE_URL is not PostgreSQL: nodes share one PostgreSQL; SQLite stays single-node")]
    ClusterNeedsPostgres,
    #[error("nodes of a cluster use this database ({nodes}): set CLUSTER_TOKEN (and NODE_ID) to join them; a daemon outside the cluster would run their sessions a second time")]
    ClusterRunning { nodes: String },
    #[error("{0}")]
    Join(crate::cluster::JoinRefused),
    #[error("BIND_ADDR {addr}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Option<Server>,
    server_handle: actix_web::dev::ServerHandle,
    env: Arc<SessionEnv>,
    registry: RegistryHandle,
    _registry_arbiter: Arbiter,
    _daemon_lock: FolderLock,
    // Session actors live on this thread: long-lived, so a browser's parent-death signal (tied to
    // the spawning thread) only fires when the daemon dies.
    _arbiter: Arbiter,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let Ground {
            sessions,
            daemon_lock,
            store,
        } = Ground::prepare(&settings).await?;
        let cluster = match &settings.cluster_token {
            None => None,
            Some(_) if store.backend() != "postgres" => {
                return Err(StartupError::ClusterNeedsPostgres)
            }
            Some(token) => {
                let node = settings.node_id.clone().unwrap_or_else(host_name);
                log::info!(
                    "cluster mode: node {node}, lease TTL {} s",
                    settings.lease_ttl_secs
                );
                Some(Arc::new(crate::cluster::Cluster::new(
                    node.clone(),
                    token.clone(),
                    Duration::from_secs(settings.lease_ttl_secs),
                    Duration::from_secs(settings.snapshot_interval_secs),
                    store.clone(),
                    settings.max_sessions,
                )))
            }
        };
        let store = match &cluster {
            Some(c) => store.for_node(&c.node, &c.instance),
            None => store,
        };
        if let Some(c) = &cluster {
            let url = settings.node_url.clone().unwrap_or_default();
            c.join(&url).await.map_err(StartupError::Join)?;
        }
        if cluster.is_none() && store.backend() == "postgres" {
            let live = store
                .live_nodes(Duration::from_secs(60))
                .await
                .map_err(|source| StartupError::Database {
                    url: settings.database().to_string(),
                    source,
                })?;
            if !live.is_empty() {
                return Err(StartupError::ClusterRunning {
                    nodes: live.join(", "),
                });
            }
        }
        let auth = web::Data::new(Auth::from_settings(&settings).map_err(StartupError::Auth)?);
        let orphans = reap_orphans(sessions.path()).await;
        if orphans > 0 {
            log::warn!("killed {orphans} Chromium processes left on profiles by an earlier run");
        }
        let db = settings.database();
        let max_slots = settings.max_slots;
        log::info!("store: {} ({db})", store.backend());

        let binary =
            crate::browser::engine::resolve(settings.browser, settings.chromium_path.as_deref())
                .await?;
        match &binary {
            Ok((b, why)) => log::info!("browser: {} at {} ({why})", b.describe(), b.path.display()),
            Err(e) => log::warn!("{e}"),
        }
        let binary = binary.map(|(b, _)| b);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            log::warn!("running as root: Chromium runs without its sandbox; deploy/ runs the daemon as its own user");
        }
        let (events, _) = broadcast::channel(1024);
        let metrics = Arc::new(Metrics::default());
        let wa_js =
            crate::browser::wajs::load(&settings.wa_js_path(), settings.wa_js_sha256.as_deref())?;
        match &wa_js {
            Some(w) => log::info!("WA-JS {} ({}, sha256 {})", w.version, w.path.display(), w.sha256),
            None => log::warn!(
                "no WA-JS at {} (scripts/fetch-wa-js.sh installs it): sessions use the DOM signals only",
                settings.wa_js_path().display()
            ),
        }
        let wa_js_info = wa_js.as_ref().map(|w| w.info());
        let launcher = ChromiumLauncher {
            wa_js,
            binary: binary.clone(),
            page: PageConfig {
                url: settings.whatsapp_url.clone(),
                qr_selector: settings.qr_selector.clone(),
                reload_selector: settings.qr_reload_selector.clone(),
                linked_selector: settings.linked_selector.clone(),
                wid_keys: settings.wid_keys.clone(),
                unsupported_text: settings.unsupported_text.clone(),
            },
            startup_timeout: Duration::from_secs(30),
            memory_savers: crate::browser::MEMORY_SAVERS,
        };
        let service_webhook = match (&settings.webhook_url, &settings.webhook_secret) {
            (Some(url), Some(secret)) => Some(crate::webhooks::ServiceWebhook {
                url: reqwest::Url::parse(url).expect("WEBHOOK_URL was parsed"),
                secret: crate::webhooks::SigningSecret::parse(secret.expose())
                    .expect("WEBHOOK_SECRET was parsed"),
            }),
            _ => None,
        };
        let outbox = Arc::new(crate::events::Outbox::new(
            store.clone(),
            service_webhook.is_some(),
        ));
        let guard = Arc::new(crate::webhooks::Guard {
            allow_http: settings.webhook_allow_http,
            allow_networks: settings.webhook_allow_networks.clone(),
        });
        let media = Arc::new(
            crate::media::Media::open(
                store.clone(),
                crate::media::MediaSettings {
                    dir: settings.data_dir.join("media"),
                    in_database: cluster.is_some(),
                    base: settings.public_url.clone(),
                    ttl: Duration::from_secs(settings.media_url_ttl_secs),
                    max_bytes: settings.media_max_bytes.0,
                    quota: settings.media_quota_bytes_per_user.0,
                    retention_days: settings.media_retention_days,
                },
            )
            .await
            .map_err(|source| StartupError::Database {
                url: db.to_string(),
                source,
            })?,
        );
        // Before any session runs: what a daemon killed between storing a media and writing its
        // event left behind (docs/media.md).
        match media.sweep().await {
            Ok(0) => {}
            Ok(n) => log::info!("media: swept {n} contents no event names"),
            Err(e) => log::warn!("media: the sweep failed: {e}"),
        }
        outbox.set_media(media.clone());
        crate::webhooks::Dispatcher::new(outbox.clone(), service_webhook, guard.clone())
            .with_schedule(settings.webhook_retry_schedule.clone())
            .with_disable_after(settings.webhook_disable_after)
            .spawn();
        let intake = web::Data::new(crate::messaging::Intake::new(
            guard.clone(),
            settings.media_max_bytes.0,
            settings
                .ffmpeg_path
                .clone()
                .or_else(|| find_on_path("ffmpeg")),
        ));
        match intake.ffmpeg() {
            Some(path) => log::info!("voice notes: transcoded with {}", path.display()),
            None => log::warn!("voice notes: ffmpeg not found (install it, or set FFMPEG_PATH); only Ogg/Opus mono voice notes can be sent"),
        }
        let webhooks = crate::webhooks::Webhooks::new(store.clone(), guard, outbox.wake());
        spawn_retention(store.clone(), settings.event_retention_days, media.clone());
        let env = Arc::new(SessionEnv {
            sessions,
            launcher: Arc::new(launcher),
            browser: binary.ok(),
            wa_js: wa_js_info,
            wa_js_reported: Default::default(),
            memory: crate::actors::session::MemoryLimit {
                max_bytes: settings.session_memory_max.0,
                check_every: Duration::from_secs(settings.session_memory_check_secs),
            },
            qr_timeout: settings.qr_timeout(),
            page_ready_timeout: Duration::from_secs(settings.page_ready_timeout_secs),
            close_grace: Duration::from_secs(5),
            poll_every: Duration::from_secs(5),
            supervision: settings.supervision(),
            launches: tokio::sync::Semaphore::new(settings.launch_concurrency as usize),
            launch_concurrency: settings.launch_concurrency as usize,
            metrics: metrics.clone(),
            store: store.clone(),
            outbox,
            events,
            send_per_minute: settings.send_per_minute,
            cluster: cluster.clone(),
            media: Some(media.clone()),
        });

        // No browser survived the last run: rows left in running states are reset (intent kept,
        // so the sessions that should run are restored). In a cluster the rows are the other
        // nodes' too: read only, and the sweeper starts what this node can claim.
        let rows = match &cluster {
            None => reset_transient_rows(&store).await,
            Some(_) => store.list_sessions(None).await,
        }
        .map_err(|source| StartupError::Database {
            url: db.to_string(),
            source,
        })?;
        let arbiter = Arbiter::new();
        let registry_arbiter = Arbiter::new();
        let registry = {
            let (env, env_for_handle, sessions) = (env.clone(), env.clone(), arbiter.handle());
            let limits = Limits {
                max_sessions: settings.max_sessions,
                max_pending_per_user: settings.max_pending_per_user,
                start_rate: StartRate {
                    burst: f64::from(settings.start_burst),
                    per_minute: f64::from(settings.starts_per_minute),
                },
            };
            let addr = Registry::start_in_arbiter(
                &registry_arbiter.handle(),
                move |_: &mut actix::Context<Registry>| Registry::new(env, sessions, rows, limits),
            );
            RegistryHandle::new(addr, env_for_handle)
        };
        let state = web::Data::new(AppState {
            max_slots,
            metrics,
            streams: Default::default(),
            webhooks,
        });
        let listener =
            TcpListener::bind(settings.bind_addr).map_err(|source| StartupError::Bind {
                addr: settings.bind_addr.to_string(),
                source,
            })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        if let Some(c) = &cluster {
            let url = settings.node_url.clone().unwrap_or_else(|| {
                let ip = settings.bind_addr.ip();
                let host = if ip.is_unspecified() {
                    host_name()
                } else {
                    ip.to_string()
                };
                format!("http://{host}:{port}")
            });
            log::info!("cluster: this node answers at {url}");
            media.default_base(url.clone());
            c.set_url(url);
            let registry = registry.clone();
            let starter: crate::cluster::Starter = Arc::new(move |key| {
                let registry = registry.clone();
                Box::pin(async move { registry.adopt(key).await })
            });
            crate::cluster::spawn(c.clone(), starter, env.outbox.clone());
        }
        let cluster_data = web::Data::new(cluster.clone());
        let media_data = web::Data::from(media.clone());
        let ops_data = web::Data::new(crate::ops::Ops::new(
            settings.data_dir.clone(),
            max_slots,
            media.clone(),
        ));
        let data = state.clone();
        let registry_data = web::Data::new(registry.clone());
        let origins = settings.cors_origins.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    crate::cluster::forward::route,
                ))
                .wrap(crate::http::default_headers())
                .wrap(actix_web::middleware::from_fn(crate::http::count_requests))
                .wrap(crate::http::cors(&origins))
                .app_data(data.clone())
                .app_data(registry_data.clone())
                .app_data(auth.clone())
                .app_data(cluster_data.clone())
                .app_data(intake.clone())
                .app_data(media_data.clone())
                .app_data(ops_data.clone())
                .configure(crate::http::routes)
        })
        .workers(2)
        // Our own signal handling drains the sessions first (run_until_stopped); open SSE
        // streams must not hold the exit for long.
        .disable_signals()
        .shutdown_timeout(2)
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: settings.bind_addr.to_string(),
            source,
        })?
        .run();
        log::info!("listening on {}:{port}", settings.bind_addr.ip());
        let server_handle = server.handle();
        Ok(Application {
            port,
            server_handle,
            server: Some(server),
            env,
            registry,
            _registry_arbiter: registry_arbiter,
            _daemon_lock: daemon_lock,
            _arbiter: arbiter,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn registry(&self) -> RegistryHandle {
        self.registry.clone()
    }

    /// What the session actors share (tests reach the store and the event bus through it).
    pub fn sessions_env(&self) -> Arc<SessionEnv> {
        self.env.clone()
    }

    /// The arbiter the session actors run on.
    pub fn sessions_arbiter(&self) -> actix::ArbiterHandle {
        self._arbiter.handle()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully ([`Self::shutdown`]).
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        let mut server = actix_web::rt::spawn(server);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let name = tokio::select! {
            res = &mut server => return res.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let started = std::time::Instant::now();
        log::info!("{name}: shutting down");
        let closed = self.shutdown().await;
        let _ = server.await;
        log::info!(
            "shut down in {} ms ({closed} sessions closed)",
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// Stops accepting connections, closes every browser gracefully in parallel (rows: not
    /// connected, numbers and intent kept), then stops the server. Returns the sessions closed.
    pub async fn shutdown(&self) -> usize {
        self.server_handle.pause().await;
        if let Some(cluster) = &self.env.cluster {
            // No new sessions are placed here; the ones closed below are released to the others.
            if let Err(e) = cluster.store.set_draining(&cluster.node, true).await {
                log::warn!(
                    "cluster: could not mark {} draining: {}",
                    cluster.node,
                    crate::chain(&e)
                );
            }
        }
        let closed = self.registry.shutdown_all().await;
        if let Some(cluster) = &self.env.cluster {
            cluster.leave().await;
        }
        self.server_handle.stop(false).await;
        closed
    }

    /// Serves in the background of the current runtime (tests keep the `Application` to inspect).
    pub fn spawn_server(&mut self) {
        if let Some(server) = self.server.take() {
            actix_web::rt::spawn(server);
        }
    }
}

/// What every command of the binary stands on: the folders (checked writable), the lock on
/// `SESSIONS_DIR` (one daemon per folder) and the store (migrations run).
pub struct Ground {
    pub sessions: SessionsRoot,
    pub daemon_lock: FolderLock,
    pub store: Store,
}

impl Ground {
    pub async fn prepare(settings: &Settings) -> Result<Ground, StartupError> {
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
        // One daemon per SESSIONS_DIR: two would drive the same profiles.
        let daemon_lock =
            FolderLock::acquire(sessions.path()).map_err(|e| StartupError::Locked {
                reason: e.to_string(),
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
        Ok(Ground {
            sessions,
            daemon_lock,
            store,
        })
    }
}

async fn reset_transient_rows(store: &Store) -> Result<Vec<SessionRow>, StoreError> {
    let mut rows = store.list_sessions(None).await?;
    for row in rows.iter_mut().filter(|r| r.state.at_boot() != r.state) {
        log::info!(
            "{} was {} when the daemon stopped; now stopped",
            row.key,
            row.state
        );
        row.state = row.state.at_boot();
        row.is_connected = false;
        store.save_session(row.clone(), None).await?;
    }
    Ok(rows)
}

/// Drops stored events past the retention (and idempotency keys past a day), and media past
/// its own (docs/media.md), once an hour.
fn spawn_retention(store: Store, days: u32, media: Arc<crate::media::Media>) {
    const EVERY: Duration = Duration::from_secs(3600);
    tokio::spawn(async move {
        loop {
            let now = crate::store::now_ms();
            let before = now - i64::from(days) * 86_400_000;
            match store.prune(before, now - 86_400_000).await {
                Ok(0) => {}
                Ok(n) => log::info!("retention: dropped {n} events older than {days} days"),
                Err(e) => log::error!("retention: {}", crate::chain(&e)),
            }
            match media.expire().await {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "retention: removed {n} media delivered more than {} days ago",
                    media.retention_days
                ),
                Err(e) => log::error!("retention of media: {}", crate::chain(&e)),
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}

/// This machine's host name (the default `NODE_ID`).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_owned(),
        _ => "node".to_owned(),
    }
}

/// Creates the folder (0700) and proves we can write in it.
fn ensure_writable(dir: &Path) -> std::io::Result<()> {
    crate::files::private_dir(dir, true)?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// An executable called `name` in a folder of `PATH`.
fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| crate::browser::is_executable(path))
}
