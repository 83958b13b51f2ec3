//! One typed [`Settings`], read from environment variables, each also a CLI flag.
//!
//! Nothing else in the crate reads the environment. Defaults make `wa-supervisor` with no
//! arguments run on a fresh machine, with everything under `./data/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::actors::session::Supervision;
use crate::browser::EngineChoice;
use crate::domain::{DEFAULT_MAX_SLOTS, SLOT_CEILING};
use crate::store::DatabaseUrl;

/// Default address: loopback only, so a fresh install is not exposed before it is configured.
pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_WHATSAPP_URL: &str = "https://web.whatsapp.com";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wa-supervisor",
    version,
    about = "Runs WhatsApp Web sessions, one headless Chromium per (userId, slot)."
)]
pub struct Settings {
    /// Address the HTTP API listens on.
    #[arg(long, env = "BIND_ADDR", value_name = "BIND_ADDR", default_value = DEFAULT_BIND_ADDR)]
    pub bind_addr: SocketAddr,

    /// Folder for the daemon's own files (SQLite database, generated credentials, lock file).
    #[arg(
        long,
        env = "DATA_DIR",
        value_name = "DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// `postgres://…` for PostgreSQL, otherwise a SQLite file path (default `<DATA_DIR>/wa-supervisor.db`).
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: Option<DatabaseUrl>,

    /// Parent folder of the per-session Chromium profiles `<userId>-slot<n>`.
    #[arg(
        long,
        env = "SESSIONS_DIR",
        value_name = "SESSIONS_DIR",
        default_value = "./data/sessions"
    )]
    pub sessions_dir: PathBuf,

    /// Which browser runs the sessions: `auto` (chromium-headless-shell where installed, else
    /// chromium), `shell` or `chromium` (docs/browser-engines.md).
    #[arg(long, env = "BROWSER", value_name = "BROWSER", value_enum, default_value_t = EngineChoice::Auto)]
    pub browser: EngineChoice,

    /// The browser binary, explicitly (wins over BROWSER's search; its engine is BROWSER's, or
    /// guessed from the file name under `auto`).
    #[arg(long, env = "CHROMIUM_PATH", value_name = "CHROMIUM_PATH")]
    pub chromium_path: Option<PathBuf>,

    /// The most memory one session's browser may use (PSS of its whole process tree, e.g.
    /// `1GiB`, `768MiB`); above it the browser is recycled on its profile, no new scan. At least
    /// 128 MiB.
    #[arg(long, env = "SESSION_MEMORY_MAX", value_name = "SESSION_MEMORY_MAX", default_value = "1GiB",
          value_parser = parse_memory_max)]
    pub session_memory_max: ByteSize,

    /// Seconds between two readings of every browser's memory (one pass over /proc for all).
    #[arg(long, env = "SESSION_MEMORY_CHECK_SECS", value_name = "SESSION_MEMORY_CHECK_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub session_memory_check_secs: u64,

    /// The page each session's browser opens.
    #[arg(long, env = "WHATSAPP_URL", value_name = "WHATSAPP_URL", default_value = DEFAULT_WHATSAPP_URL, value_parser = parse_http_url)]
    pub whatsapp_url: String,

    /// Service token: any user's session routes, not admin routes.
    #[arg(
        long,
        env = "API_TOKEN",
        value_name = "API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<Token>,

    /// Admin token: /actors, /metrics.
    #[arg(
        long,
        env = "ADMIN_TOKEN",
        value_name = "ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<Token>,

    /// Stack Auth project id (enables user tokens).
    #[arg(long, env = "STACK_PROJECT_ID", value_name = "STACK_PROJECT_ID")]
    pub stack_project_id: Option<String>,

    /// JWKS URL for user tokens (default: Stack Auth's URL for STACK_PROJECT_ID).
    #[arg(long, env = "STACK_JWKS_URL", value_name = "STACK_JWKS_URL", value_parser = parse_http_url)]
    pub stack_jwks_url: Option<String>,

    /// Accepted `iss` values of user tokens, comma-separated (default: Stack Auth's issuer for
    /// STACK_PROJECT_ID).
    #[arg(
        long,
        env = "STACK_ISSUERS",
        value_name = "STACK_ISSUERS",
        value_delimiter = ','
    )]
    pub stack_issuers: Vec<String>,

    /// Comma-separated origins allowed to call the API from a browser
    /// (`https://app.example.com`; spaces around commas are fine).
    #[arg(
        long,
        env = "CORS_ORIGINS",
        value_name = "CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub cors_origins: Vec<String>,

    /// Slots per user.
    #[arg(long, env = "MAX_SLOTS", value_name = "MAX_SLOTS", default_value_t = DEFAULT_MAX_SLOTS,
          value_parser = clap::value_parser!(u16).range(1..=SLOT_CEILING as i64))]
    pub max_slots: u16,

    /// Running browsers allowed at once on this host.
    #[arg(long, env = "MAX_SESSIONS", value_name = "MAX_SESSIONS", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_sessions: u32,

    /// Browsers of one user not linked yet (starting, on a QR code, restarting without a
    /// number) allowed at once; the next start answers 429 `too_many_pending`.
    #[arg(long, env = "MAX_PENDING_PER_USER", value_name = "MAX_PENDING_PER_USER", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_pending_per_user: u32,

    /// Starts a user may make in a burst (per-user token bucket).
    #[arg(long, env = "START_BURST", value_name = "START_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub start_burst: u32,

    /// Starts per minute a user's bucket refills with.
    #[arg(long, env = "STARTS_PER_MINUTE", value_name = "STARTS_PER_MINUTE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub starts_per_minute: u32,

    /// Browsers launched at once (restores on boot wait their turn).
    #[arg(long, env = "LAUNCH_CONCURRENCY", value_name = "LAUNCH_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub launch_concurrency: u32,

    /// First relaunch delay after a browser crash, in milliseconds (doubles per crash, with jitter).
    #[arg(long, env = "RESTART_BACKOFF_MS", value_name = "RESTART_BACKOFF_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub restart_backoff_ms: u64,

    /// Longest relaunch delay, in seconds.
    #[arg(long, env = "RESTART_BACKOFF_MAX_SECS", value_name = "RESTART_BACKOFF_MAX_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub restart_backoff_max_secs: u64,

    /// Crashes tolerated within CRASH_WINDOW_SECS; one more and the session is `failed`.
    #[arg(long, env = "MAX_CRASHES", value_name = "MAX_CRASHES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_crashes: u32,

    /// The window crashes are counted in, in seconds (also: healthy this long resets the count).
    #[arg(long, env = "CRASH_WINDOW_SECS", value_name = "CRASH_WINDOW_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub crash_window_secs: u64,

    /// Seconds a launched browser may take to show a QR code or the chats; longer is handled
    /// like a crash (relaunch with backoff, then `failed`).
    #[arg(long, env = "PAGE_READY_TIMEOUT_SECS", value_name = "PAGE_READY_TIMEOUT_SECS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub page_ready_timeout_secs: u64,

    /// The WA-JS file injected into every page (default `<DATA_DIR>/wa-js/wppconnect-wa.js`, where
    /// `scripts/fetch-wa-js.sh` installs the pinned release). Missing: DOM signals only.
    #[arg(long, env = "WA_JS_PATH", value_name = "WA_JS_PATH")]
    pub wa_js_path: Option<PathBuf>,

    /// SHA-256 (hex) the WA-JS file must have, instead of the built-in pin (to use another
    /// release without a rebuild; docs/wa-js.md).
    #[arg(long, env = "WA_JS_SHA256", value_name = "WA_JS_SHA256", value_parser = parse_sha256)]
    pub wa_js_sha256: Option<String>,

    /// Messages one session may send per minute (WhatsApp bans bursts); beyond that 429.
    #[arg(long, env = "SEND_PER_MINUTE", value_name = "SEND_PER_MINUTE", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub send_per_minute: u32,

    /// The service webhook: the platform's bot backend, which gets every user's events
    /// (trusted: any address).
    #[arg(long, env = "WEBHOOK_URL", value_name = "WEBHOOK_URL", value_parser = parse_http_url, requires = "webhook_secret")]
    pub webhook_url: Option<String>,

    /// The service webhook's signing secret, `whsec_<base64>` (Standard Webhooks).
    #[arg(long, env = "WEBHOOK_SECRET", value_name = "WEBHOOK_SECRET", hide_env_values = true,
          value_parser = parse_webhook_secret)]
    pub webhook_secret: Option<Token>,

    /// Allow per-user webhooks on plain http:// (default: https only).
    #[arg(long, env = "WEBHOOK_ALLOW_HTTP", value_name = "WEBHOOK_ALLOW_HTTP", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub webhook_allow_http: bool,

    /// Comma-separated networks per-user webhooks may reach although they are not public
    /// (e.g. `10.20.0.0/16`).
    #[arg(long, env = "WEBHOOK_ALLOW_NETWORKS", value_name = "WEBHOOK_ALLOW_NETWORKS",
          value_delimiter = ',', value_parser = parse_network)]
    pub webhook_allow_networks: Vec<ipnet::IpNet>,

    /// The largest media a message may carry (e.g. `64MiB`, `16MiB`), by URL or base64; larger
    /// is refused with 413 before anything reaches the page (WhatsApp's own limits apply below).
    #[arg(long, env = "MEDIA_MAX_BYTES", value_name = "MEDIA_MAX_BYTES", default_value = "64MiB",
          value_parser = parse_media_max)]
    pub media_max_bytes: ByteSize,

    /// ffmpeg, which turns voice notes into Ogg/Opus (default: `ffmpeg` on PATH).
    #[arg(long, env = "FFMPEG_PATH", value_name = "FFMPEG_PATH")]
    pub ffmpeg_path: Option<PathBuf>,

    /// Seconds a media link in an event (or minted by `POST /api/media/…/url`) stays valid. A
    /// webhook or stream gets a fresh link each time it is sent (docs/media.md).
    #[arg(long, env = "MEDIA_URL_TTL_SECS", value_name = "MEDIA_URL_TTL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=7 * 86_400))]
    pub media_url_ttl_secs: u64,

    /// Days incoming media is kept once every webhook delivery of its event ended.
    #[arg(long, env = "MEDIA_RETENTION_DAYS", value_name = "MEDIA_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub media_retention_days: u32,

    /// The most incoming media one user's sessions keep (e.g. `1GiB`): the oldest delivered media
    /// goes first; with nothing deletable the new media's event says `media.error: "quota"`.
    #[arg(
        long,
        env = "MEDIA_QUOTA_BYTES_PER_USER",
        value_name = "MEDIA_QUOTA_BYTES_PER_USER",
        default_value = "1GiB"
    )]
    pub media_quota_bytes_per_user: ByteSize,

    /// The daemon's address as webhook receivers reach it (e.g. `https://wa.example.com`): media
    /// links are absolute with it. Unset: links are paths (`/api/media/…`) on the daemon's address
    /// (in cluster mode, `NODE_URL`).
    #[arg(long, env = "PUBLIC_URL", value_name = "PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,

    /// Delays between webhook attempts (`500ms`, `5s`, `5m`, `2h`, comma-separated); after the
    /// last one a delivery is `failed`.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", value_name = "WEBHOOK_RETRY_SCHEDULE",
          value_delimiter = ',', value_parser = parse_delay,
          default_value = "5s,5m,30m,2h,5h,10h,10h")]
    pub webhook_retry_schedule: Vec<Duration>,

    /// How long a webhook target may leave its owed deliveries undelivered (`48h`, `3d` is
    /// `72h`); past it a user's webhook is disabled with its owed deliveries failed (kept,
    /// re-queueable), and the service webhook's owed deliveries fail: a receiver that never
    /// recovers stops the backlog from growing.
    #[arg(long, env = "WEBHOOK_DISABLE_AFTER", value_name = "WEBHOOK_DISABLE_AFTER",
          value_parser = parse_delay, default_value = "48h")]
    pub webhook_disable_after: Duration,

    /// Days stored events (messages, acks, state changes) are kept for `GET /api/messages`.
    #[arg(long, env = "EVENT_RETENTION_DAYS", value_name = "EVENT_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub event_retention_days: u32,

    /// Seconds a QR may wait for a scan before the browser is closed.
    #[arg(long, env = "QR_TIMEOUT_SECS", value_name = "QR_TIMEOUT_SECS", default_value_t = 180,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub qr_timeout_secs: u64,

    /// The element holding the QR payload in its `data-ref` attribute.
    #[arg(
        long,
        env = "WA_QR_SELECTOR",
        value_name = "WA_QR_SELECTOR",
        default_value = "div[data-ref]"
    )]
    pub qr_selector: String,

    /// The button the page shows when it stops offering codes.
    #[arg(
        long,
        env = "WA_QR_RELOAD_SELECTOR",
        value_name = "WA_QR_RELOAD_SELECTOR",
        default_value = "div[data-ref] button"
    )]
    pub qr_reload_selector: String,

    /// An element only shown when linked (the chat list).
    #[arg(
        long,
        env = "WA_LINKED_SELECTOR",
        value_name = "WA_LINKED_SELECTOR",
        default_value = "#pane-side"
    )]
    pub linked_selector: String,

    /// Text of the page WhatsApp Web shows a browser it refuses (no QR, no app); seen, the
    /// session stops with `lastError: unsupported_browser: …`.
    #[arg(
        long,
        env = "WA_UNSUPPORTED_TEXT",
        value_name = "WA_UNSUPPORTED_TEXT",
        default_value = "WhatsApp works with Google Chrome"
    )]
    pub unsupported_text: String,

    /// localStorage keys holding the linked id, first match wins.
    #[arg(
        long,
        env = "WA_WID_KEYS",
        value_name = "WA_WID_KEYS",
        value_delimiter = ',',
        default_value = "last-wid-md,last-wid"
    )]
    pub wid_keys: Vec<String>,

    /// This node's name in a cluster (several daemons on one PostgreSQL); default: the host
    /// name. docs/several-hosts.md.
    #[arg(long, env = "NODE_ID", value_name = "NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// How the other nodes reach this one (`http://host:port`); default: the bound address.
    #[arg(long, env = "NODE_URL", value_name = "NODE_URL", value_parser = parse_http_url)]
    pub node_url: Option<String>,

    /// Turns cluster mode on: the secret every node-to-node call carries (16+ characters, the
    /// same on every node). Needs a PostgreSQL `DATABASE_URL`.
    #[arg(long, env = "CLUSTER_TOKEN", value_name = "CLUSTER_TOKEN", hide_env_values = true,
          value_parser = parse_cluster_token)]
    pub cluster_token: Option<Token>,

    /// Seconds a node's lease on a session lasts without renewal (renewed every third of it;
    /// trusted until 2 s before it ends, so below 6 a slow renewal loses it: the floor is 6).
    #[arg(long, env = "LEASE_TTL_SECS", value_name = "LEASE_TTL_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(6..=600))]
    pub lease_ttl_secs: u64,

    /// Seconds between snapshots of a linked session's login (cluster mode).
    #[arg(long, env = "SNAPSHOT_INTERVAL_SECS", value_name = "SNAPSHOT_INTERVAL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(10..=604_800))]
    pub snapshot_interval_secs: u64,

    /// Log filter (env_logger syntax). chromiumoxide's handler logs every closed DevTools socket
    /// (each browser crash) at ERROR; the daemon reports crashes itself, so it is off by default.
    #[arg(
        long = "log",
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info,chromiumoxide::handler=off"
    )]
    pub rust_log: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Adopt legacy profile folders `<userId>-slot<N>` in SESSIONS_DIR: create their missing
    /// rows (stopped, restored at the next boot). Idempotent. Run it while the daemon is stopped.
    ImportSessions {
        /// Report what would be adopted without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a backup of everything to FILE (docs/operations.md): asks the daemon running at
    /// BIND_ADDR (ADMIN_TOKEN), or, with the daemon stopped, reads SESSIONS_DIR and the
    /// database itself.
    Backup {
        /// The backup file (mode 0600; written as FILE.partial and renamed once complete).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Encrypt to this age recipient (`age1…`, from `age-keygen`); repeatable.
        #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
        encrypt_to: Vec<String>,
    },
    /// Restore a backup into an empty DATA_DIR, SESSIONS_DIR and database, the daemon stopped.
    /// The archive is checked whole first; a damaged one is refused and nothing is written.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The age key file (`AGE-SECRET-KEY-…`) of an encrypted backup.
        #[arg(long, value_name = "KEYFILE")]
        identity: Option<PathBuf>,
    },
    /// Clean up: list (or with --apply remove) sessions stopped and not linked for --idle-days,
    /// sessions logged out on WhatsApp's side, rows without a folder, folders without a row,
    /// stale lock files. Asks the running daemon, or works alone when it is stopped.
    Purge {
        /// Remove what is listed (default: a dry run).
        #[arg(long)]
        apply: bool,
        /// Days a stopped or failed session without a number must have been unchanged.
        #[arg(long, value_name = "DAYS", default_value_t = crate::ops::purge::DEFAULT_IDLE_DAYS)]
        idle_days: u32,
        /// Remove this session (`userId:slot`) whatever its state, logged out first; repeatable.
        #[arg(long = "session", value_name = "USER:SLOT")]
        sessions: Vec<String>,
    },
}

impl Settings {
    /// Parses the process's arguments and environment.
    pub fn from_env() -> Result<Settings, clap::Error> {
        Settings::try_parse()
    }

    /// Settings from an explicit argument list and the process environment (tests).
    pub fn from_args<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Settings::try_parse_from(args)
    }

    pub fn database(&self) -> DatabaseUrl {
        self.database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::Sqlite(self.data_dir.join("wa-supervisor.db")))
    }

    pub fn wa_js_path(&self) -> PathBuf {
        self.wa_js_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("wa-js").join("wppconnect-wa.js"))
    }

    pub fn supervision(&self) -> Supervision {
        Supervision {
            backoff_first: Duration::from_millis(self.restart_backoff_ms),
            backoff_max: Duration::from_secs(self.restart_backoff_max_secs),
            max_crashes: self.max_crashes as usize,
            crash_window: Duration::from_secs(self.crash_window_secs),
        }
    }

    pub fn qr_timeout(&self) -> Duration {
        Duration::from_secs(self.qr_timeout_secs)
    }
}

/// A number of bytes, written `1GiB`, `768MiB`, `512M`, `2G` or plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const MIB: u64 = 1024 * 1024;

    pub fn mib(self) -> u64 {
        self.0 / Self::MIB
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(raw: &str) -> Result<ByteSize, String> {
        let raw = raw.trim();
        let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
        let (n, unit) = raw.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{raw:?}: expected e.g. 1GiB, 768MiB"))?;
        let factor = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1024,
            "m" | "mb" | "mib" => Self::MIB,
            "g" | "gb" | "gib" => 1024 * Self::MIB,
            _ => return Err(format!("{raw:?}: expected e.g. 1GiB, 768MiB")),
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("{raw:?} is too large"))
    }
}

/// The smallest `SESSION_MEMORY_MAX`: an idle session alone takes about 100 MiB.
pub const SESSION_MEMORY_FLOOR: ByteSize = ByteSize(128 * ByteSize::MIB);

fn parse_public_url(raw: &str) -> Result<String, String> {
    let url = raw.trim().trim_end_matches('/');
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && !url.contains(['?', '#', ' '])
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    ok.then(|| url.to_owned())
        .ok_or_else(|| format!("{raw:?} must be an http(s) URL without query or fragment"))
}

fn parse_media_max(raw: &str) -> Result<ByteSize, String> {
    let size: ByteSize = raw.parse()?;
    if !(1024..=(1u64 << 30)).contains(&size.0) {
        return Err(format!("{raw:?} must be 1 KiB to 1 GiB"));
    }
    Ok(size)
}

fn parse_memory_max(raw: &str) -> Result<ByteSize, String> {
    let size: ByteSize = raw.parse()?;
    if size.0 < SESSION_MEMORY_FLOOR.0 {
        return Err(format!(
            "{raw:?} is below {} MiB (an idle session alone takes about 100 MiB)",
            SESSION_MEMORY_FLOOR.mib()
        ));
    }
    Ok(size)
}

/// A secret setting (`API_TOKEN`, `ADMIN_TOKEN`): `Debug` never shows its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The value, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Token, Self::Err> {
        Ok(Token(s.to_owned()))
    }
}

/// Settings whose values are secret (or may carry one, like a URL with a password): a
/// refusal names the variable but never echoes the value.
const SECRET_VALUES: [&str; 6] = [
    "DATABASE_URL",
    "CLUSTER_TOKEN",
    "API_TOKEN",
    "ADMIN_TOKEN",
    "WEBHOOK_SECRET",
    "WEBHOOK_URL",
];

/// One line for a refused configuration, naming the variable; values of [`SECRET_VALUES`]
/// are replaced by `***`.
pub fn refusal_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let rendered = e.to_string();
    let mut line = rendered
        .lines()
        .next()
        .unwrap_or("error: invalid configuration")
        .to_owned();
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.as_str(),
        _ => "",
    };
    if let Some(ContextValue::String(value)) = e.get(ContextKind::InvalidValue) {
        if !value.is_empty() && SECRET_VALUES.iter().any(|var| arg.contains(var)) {
            line = line.replace(value.as_str(), "***");
        }
    }
    line
}

/// A browser origin: `http(s)://host[:port]`, nothing after it; surrounding spaces trimmed.
fn parse_origin(raw: &str) -> Result<String, String> {
    let origin = raw.trim();
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("an origin starts with http:// or https://")?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    if host_ok && port_ok {
        Ok(origin.to_owned())
    } else {
        Err(format!(
            "{origin:?} is not an origin (scheme://host[:port], no path or trailing slash)"
        ))
    }
}

/// A node name: 1–64 of `A-Z a-z 0-9 . _ -`.
fn parse_node_id(raw: &str) -> Result<String, String> {
    let id = raw.trim();
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(id.to_owned())
    } else {
        Err("1 to 64 letters, digits, '.', '_' or '-'".to_owned())
    }
}

fn parse_cluster_token(raw: &str) -> Result<Token, String> {
    let token = raw.trim();
    if token.len() < 16 {
        return Err("at least 16 characters".to_owned());
    }
    Ok(Token(token.to_owned()))
}

fn parse_webhook_secret(raw: &str) -> Result<Token, String> {
    crate::webhooks::SigningSecret::parse(raw.trim())?;
    Ok(Token(raw.trim().to_owned()))
}

/// `250ms`, `5s`, `5m`, `2h`.
fn parse_delay(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (n, unit) = raw.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{raw:?}: expected e.g. 5s, 5m, 2h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{raw:?}: expected e.g. 5s, 5m, 2h")),
    };
    if d.is_zero() || d > Duration::from_secs(7 * 86_400) {
        return Err(format!("{raw:?}: between 1 ms and 7 days"));
    }
    Ok(d)
}

fn parse_network(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{raw:?} is not a network (e.g. 10.0.0.0/8)"))
}

fn parse_sha256(raw: &str) -> Result<String, String> {
    let hex = raw.trim().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err("expected 64 hex digits".to_owned())
    }
}

fn parse_http_url(raw: &str) -> Result<String, String> {
    let ok = (raw.starts_with("http://") || raw.starts_with("https://"))
        && raw.len() > "https://".len()
        && !raw.chars().any(char::is_whitespace);
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("expected an http:// or https:// URL".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_on_a_fresh_machine() {
        let s = Settings::from_args(["wa-supervisor"]).unwrap();
        assert_eq!(s.bind_addr.to_string(), DEFAULT_BIND_ADDR);
        assert_eq!(s.max_slots, DEFAULT_MAX_SLOTS);
        assert_eq!(s.qr_timeout(), Duration::from_secs(180));
        assert_eq!(s.wid_keys, ["last-wid-md", "last-wid"]);
        assert!(matches!(s.database(), DatabaseUrl::Sqlite(p) if p.ends_with("wa-supervisor.db")));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (args, var) in [
            (vec!["x", "--max-slots", "abc"], "MAX_SLOTS"),
            (vec!["x", "--max-slots", "0"], "MAX_SLOTS"),
            (vec!["x", "--bind-addr", "nowhere"], "BIND_ADDR"),
            (vec!["x", "--database-url", "mysql://x/y"], "DATABASE_URL"),
            (vec!["x", "--whatsapp-url", "ftp://x"], "WHATSAPP_URL"),
            (
                vec!["x", "--cors-origins", "http://a.example/app"],
                "CORS_ORIGINS",
            ),
            (vec!["x", "--cors-origins", "a.example"], "CORS_ORIGINS"),
            (vec!["x", "--browser", "firefox"], "BROWSER"),
            (
                vec!["x", "--session-memory-max", "100MiB"],
                "SESSION_MEMORY_MAX",
            ),
            (
                vec!["x", "--session-memory-max", "lots"],
                "SESSION_MEMORY_MAX",
            ),
            (
                vec!["x", "--cors-origins", "http://a.example:http"],
                "CORS_ORIGINS",
            ),
        ] {
            let err = Settings::from_args(args).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn memory_sizes_read_like_operators_write_them() {
        let s = Settings::from_args(["x"]).unwrap();
        assert_eq!(s.session_memory_max, ByteSize(1 << 30));
        assert_eq!(s.browser, EngineChoice::Auto);
        for (raw, bytes) in [
            ("768MiB", 768u64 << 20),
            ("2G", 2 << 30),
            ("128m", 128 << 20),
            ("134217728", 128 << 20),
        ] {
            let s = Settings::from_args(["x", "--session-memory-max", raw]).unwrap();
            assert_eq!(s.session_memory_max, ByteSize(bytes), "{raw}");
        }
        assert!(Settings::from_args(["x", "--session-memory-max", "127MiB"]).is_err());
    }

    #[test]
    fn the_default_retry_schedule_is_the_dispatchers() {
        let s = Settings::from_args(["x"]).unwrap();
        assert_eq!(s.webhook_retry_schedule, crate::webhooks::SCHEDULE);
        let s = Settings::from_args(["x", "--webhook-retry-schedule", "250ms, 2s,1m"]).unwrap();
        assert_eq!(
            s.webhook_retry_schedule,
            [
                Duration::from_millis(250),
                Duration::from_secs(2),
                Duration::from_secs(60)
            ]
        );
        assert!(Settings::from_args(["x", "--webhook-retry-schedule", "5x"]).is_err());
        assert!(Settings::from_args(["x", "--webhook-url", "https://h.example.com"]).is_err());
    }

    #[test]
    fn origins_are_trimmed_at_parse_time() {
        let s = Settings::from_args([
            "x",
            "--cors-origins",
            "http://a.example, https://b.example:8443 ,http://[::1]:3000",
        ])
        .unwrap();
        assert_eq!(
            s.cors_origins,
            [
                "http://a.example",
                "https://b.example:8443",
                "http://[::1]:3000"
            ]
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_and_refusals() {
        let s = Settings::from_args([
            "x",
            "--api-token",
            "api-secret-0123456789",
            "--admin-token",
            "admin-secret-0123456789",
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("api-secret") && !debug.contains("admin-secret"),
            "{debug}"
        );
        assert!(debug.contains("Token(***)"));

        let e =
            Settings::from_args(["x", "--database-url", "mysql://bob:hunter2@db/x"]).unwrap_err();
        let line = refusal_line(&e);
        assert!(
            line.contains("DATABASE_URL") && !line.contains("hunter2"),
            "{line}"
        );
    }
}
