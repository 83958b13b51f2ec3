//! Who is calling, and what they may touch (SPEC §8).
//!
//! Three kinds of credentials arrive as `Authorization: Bearer …` or `x-stack-access-token: …`:
//! - the service token `API_TOKEN` ([`Principal::Service`]): any user's session routes;
//! - the admin token `ADMIN_TOKEN` ([`Principal::Admin`]): admin routes;
//! - a Stack Auth access token ([`Principal::User`]): an ES256 JWT whose key comes from the
//!   project's JWKS, enabled only when `STACK_PROJECT_ID` is set.
//!
//! Service and admin tokens that are not configured are generated once and kept in
//! `<DATA_DIR>/credentials` (mode 0600); no default secret exists. Browsers' `EventSource` cannot
//! send headers, so SSE uses short-lived single-use tickets instead of a token in the URL.
//!
//! Every refusal is [`ApiError::Unauthorized`] (no or bad credentials) or [`ApiError::Forbidden`]
//! (good credentials, not yours); the reason is logged at debug level, never a token.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use actix_web::{web, FromRequest, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng;
use serde::Deserialize;

use crate::config::{Settings, Token};
use crate::domain::UserId;
use crate::http::ApiError;

/// File under `DATA_DIR` holding the generated service/admin tokens.
pub const CREDENTIALS_FILE: &str = "credentials";
/// Shortest service/admin token accepted (configured or read from the credentials file).
pub const MIN_TOKEN_LEN: usize = 16;
/// Random bytes in a generated token or ticket (URL-safe base64, 43 chars).
const SECRET_BYTES: usize = 32;
/// How long an SSE ticket may wait to be redeemed.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Unredeemed tickets one user may hold; beyond that issuing answers 429 to that user only.
pub const MAX_OPEN_TICKETS_PER_USER: usize = 8;
/// Unredeemed tickets kept at most over all users: a memory bound that only a service token
/// minting for thousands of users at once could reach (user tokens stop at their own limit).
const MAX_OPEN_TICKETS: usize = 100_000;
/// At most one JWKS fetch per this interval, however many unknown `kid`s arrive.
pub const JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
/// Keys older than this are refetched on next use (a removed key stops working); if that fetch
/// fails the old keys stay in use.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_MAX_BYTES: usize = 64 * 1024;
/// Longer bearer values are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;
const MAX_KID_LEN: usize = 256;
/// Clock skew tolerated on `exp`/`nbf`.
const LEEWAY_SECS: u64 = 30;

const API_TOKEN_VAR: &str = "API_TOKEN";
const ADMIN_TOKEN_VAR: &str = "ADMIN_TOKEN";
const STACK_API_PROJECTS: &str = "https://api.stack-auth.com/api/v1/projects/";
const STACK_TOKEN_HEADER: &str = "x-stack-access-token";

/// Authentication at boot went wrong; the message names the variable or file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(String);

/// The caller, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A Stack Auth user: only their own sessions.
    User(UserId),
    /// `API_TOKEN`: any user's session routes.
    Service,
    /// `ADMIN_TOKEN`: everything.
    Admin,
}

impl Principal {
    /// May this caller act on `user`'s sessions? A user only on their own.
    pub fn authorize_user(&self, user: &UserId) -> Result<(), ApiError> {
        match self {
            Principal::User(me) if me == user => Ok(()),
            Principal::User(_) => Err(ApiError::Forbidden),
            Principal::Service | Principal::Admin => Ok(()),
        }
    }

    /// Admin routes: the admin token only.
    pub fn authorize_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::User(_) | Principal::Service => Err(ApiError::Forbidden),
        }
    }

    /// Who did it, for the audit trail: `user:<id>`, `service` or `admin`.
    pub fn audit_name(&self) -> String {
        match self {
            Principal::User(id) => format!("user:{id}"),
            Principal::Service => "service".to_owned(),
            Principal::Admin => "admin".to_owned(),
        }
    }
}

/// Authenticates requests; built once at boot and shared as `web::Data<Auth>`.
pub struct Auth {
    service: Secret,
    admin: Secret,
    users: Option<UserTokens>,
    tickets: Mutex<HashMap<String, Ticket>>,
    ticket_ttl: Duration,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("user_tokens", &self.users.as_ref().map(|u| &u.jwks.url))
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Builds the authenticator from settings. `API_TOKEN` / `ADMIN_TOKEN` not configured are
    /// taken from `<DATA_DIR>/credentials`, or generated and stored there (mode 0600); the path is
    /// logged, never a token. User tokens are enabled only when `STACK_PROJECT_ID` is set.
    pub fn from_settings(settings: &Settings) -> Result<Auth, AuthSetupError> {
        // Before anything in this process builds a reqwest::Client (see the fn's doc).
        install_crypto_provider();
        let (service, admin) = service_tokens(settings)?;
        let users = match &settings.stack_project_id {
            Some(project) => Some(UserTokens::new(project, settings)?),
            None => {
                if settings.stack_jwks_url.is_some() || !settings.stack_issuers.is_empty() {
                    return Err(AuthSetupError(
                        "STACK_JWKS_URL / STACK_ISSUERS are set but STACK_PROJECT_ID is not; set it to enable user tokens".into(),
                    ));
                }
                log::info!("STACK_PROJECT_ID is not set: user tokens are disabled");
                None
            }
        };
        Ok(Auth {
            service,
            admin,
            users,
            tickets: Mutex::new(HashMap::new()),
            ticket_ttl: TICKET_TTL,
        })
    }

    /// Changes the minimum interval between two JWKS fetches (tests; default 30 s).
    pub fn with_jwks_cooldown(mut self, cooldown: Duration) -> Auth {
        if let Some(users) = &mut self.users {
            users.jwks.cooldown = cooldown;
        }
        self
    }

    /// Changes how long an SSE ticket lives (tests; default 60 s).
    pub fn with_ticket_ttl(mut self, ttl: Duration) -> Auth {
        self.ticket_ttl = ttl;
        self
    }

    /// Reads `Authorization: Bearer …` or `x-stack-access-token: …` and says who is calling.
    /// Every failure, including an unreachable JWKS, is [`ApiError::Unauthorized`].
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = presented_token(headers).ok_or_else(|| refused("no usable credentials"))?;
        // Both comparisons always run, so timing does not tell which one matched.
        let is_admin = self.admin.matches(token);
        let is_service = self.service.matches(token);
        if is_admin {
            return Ok(Principal::Admin);
        }
        if is_service {
            return Ok(Principal::Service);
        }
        match &self.users {
            Some(users) => users.verify(token).await,
            None => Err(refused(
                "not a service/admin token; user tokens are disabled",
            )),
        }
    }

    /// A single-use ticket for `?ticket=` on the SSE route, valid 60 s, bound to `user`.
    /// The caller must be allowed on `user` (checked here too).
    pub fn issue_ticket(&self, principal: &Principal, user: &UserId) -> Result<String, ApiError> {
        principal.authorize_user(user)?;
        let ticket = random_secret();
        let now = Instant::now();
        let mut open = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, t| t.expires > now);
        let users_open = open.values().filter(|t| &t.user == user).count();
        if users_open >= MAX_OPEN_TICKETS_PER_USER || open.len() >= MAX_OPEN_TICKETS {
            return Err(ApiError::RateLimited {
                retry_after_secs: self.ticket_ttl.as_secs().max(1),
            });
        }
        open.insert(
            ticket.clone(),
            Ticket {
                principal: principal.clone(),
                user: user.clone(),
                expires: now + self.ticket_ttl,
            },
        );
        Ok(ticket)
    }

    /// Redeems a ticket for `user`'s SSE route. Any attempt consumes it, so a ticket presented
    /// on another user's route is gone too. Unknown, expired, used or other user → Unauthorized.
    pub fn redeem_ticket(&self, ticket: &str, user: &UserId) -> Result<Principal, ApiError> {
        let found = self
            .tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(ticket)
            .ok_or_else(|| refused("unknown or used ticket"))?;
        if found.expires <= Instant::now() {
            return Err(refused("expired ticket"));
        }
        if &found.user != user {
            return Err(refused("ticket issued for another user"));
        }
        Ok(found.principal)
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Principal, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = req.app_data::<web::Data<Auth>>().cloned();
        let headers = req.headers().clone();
        Box::pin(async move {
            let auth = auth.ok_or_else(|| {
                ApiError::Internal("web::Data<Auth> is not registered on the app".into())
            })?;
            auth.authenticate(&headers).await
        })
    }
}

struct Ticket {
    principal: Principal,
    user: UserId,
    expires: Instant,
}

/// Logs why a request was refused (debug: refusals are routine) and returns the 401.
fn refused(why: &str) -> ApiError {
    log::debug!("credentials refused: {why}");
    ApiError::Unauthorized
}

/// The one credential of a request. `Authorization: Bearer` wins; another scheme is ignored.
/// A header repeated or not visible ASCII counts as absent.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = single_header(headers, &AUTHORIZATION).and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let token = match bearer {
        Some(token) => token,
        None => single_header(headers, &HeaderName::from_static(STACK_TOKEN_HEADER))?.trim(),
    };
    (!token.is_empty()).then_some(token)
}

fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name);
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

// ---------------------------------------------------------------------------------------------
// Service and admin tokens

/// A token compared in constant time; `Debug` never shows it.
struct Secret(Box<[u8]>);

impl Secret {
    fn matches(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), &self.0)
    }
}

/// Runs in time that depends only on `presented.len()`: neither the secret's content nor its
/// length leaks (unlike a plain `==`, or `subtle`'s slice `ct_eq`, which returns early on a
/// length mismatch).
fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    let mut diff = presented.len() ^ secret.len();
    for (i, byte) in presented.iter().enumerate() {
        diff |= usize::from(byte ^ secret[i % secret.len()]);
    }
    std::hint::black_box(diff) == 0
}

fn random_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

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

fn service_tokens(settings: &Settings) -> Result<(Secret, Secret), AuthSetupError> {
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

// ---------------------------------------------------------------------------------------------
// Stack Auth user tokens

struct UserTokens {
    validation: Validation,
    jwks: Jwks,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl UserTokens {
    fn new(project: &str, settings: &Settings) -> Result<UserTokens, AuthSetupError> {
        let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if project.is_empty() || project.len() > 128 || !project.bytes().all(plain) {
            return Err(AuthSetupError(
                "STACK_PROJECT_ID must be 1 to 128 characters of A-Z, a-z, 0-9, '-' or '_'".into(),
            ));
        }
        let url = settings
            .stack_jwks_url
            .clone()
            .unwrap_or_else(|| format!("{STACK_API_PROJECTS}{project}/.well-known/jwks.json"));
        let issuers: Vec<String> = if settings.stack_issuers.is_empty() {
            vec![format!("{STACK_API_PROJECTS}{project}")]
        } else {
            settings
                .stack_issuers
                .iter()
                .map(|i| i.trim().to_owned())
                .collect()
        };
        if issuers.iter().any(String::is_empty) {
            return Err(AuthSetupError("STACK_ISSUERS has an empty entry".into()));
        }

        let mut validation = Validation::new(Algorithm::ES256);
        validation.algorithms = vec![Algorithm::ES256];
        validation.set_audience(&[project]);
        validation.set_issuer(&issuers);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;

        log::info!(
            "user tokens enabled for project {project}: keys from {url}, issuers {}",
            issuers.join(", ")
        );
        Ok(UserTokens {
            validation,
            jwks: Jwks::new(url)?,
        })
    }

    async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(refused("token too long"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| refused("not a JWT we can read"))?;
        // Checked before any key lookup, so no other algorithm ever costs a JWKS fetch.
        if header.alg != Algorithm::ES256 {
            return Err(refused("JWT algorithm is not ES256"));
        }
        let kid = header.kid.ok_or_else(|| refused("JWT without kid"))?;
        if kid.is_empty() || kid.len() > MAX_KID_LEN {
            return Err(refused("JWT kid empty or too long"));
        }
        let key = self.jwks.key(&kid).await?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            log::debug!("credentials refused: user token: {e}");
            ApiError::Unauthorized
        })?;
        let user = UserId::parse(&data.claims.sub).map_err(|_| refused("sub is not a user id"))?;
        Ok(Principal::User(user))
    }
}

/// The project's signing keys by `kid`, fetched lazily and refetched at most once per cooldown.
struct Jwks {
    url: String,
    client: reqwest::Client,
    cooldown: Duration,
    keys: RwLock<KeySet>,
    /// Held while fetching, so concurrent misses wait for one fetch instead of each starting one.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl Jwks {
    fn new(url: String) -> Result<Jwks, AuthSetupError> {
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| AuthSetupError(format!("STACK_JWKS_URL is not a URL: {e}")))?;
        let https = parsed.scheme() == "https";
        let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        let plain_loopback = parsed.scheme() == "http" && loopback;
        if !(https || plain_loopback) {
            return Err(AuthSetupError(
                "STACK_JWKS_URL must be https:// (plain http only on loopback)".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .connect_timeout(JWKS_TIMEOUT)
            .https_only(https)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| {
                AuthSetupError(format!(
                    "cannot set up the HTTP client for STACK_JWKS_URL: {e}"
                ))
            })?;
        Ok(Jwks {
            url,
            client,
            cooldown: JWKS_REFETCH_COOLDOWN,
            keys: RwLock::new(KeySet::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The key for `kid`, refetching the set when `kid` is unknown or the set is old, at most
    /// once per cooldown. No key (JWKS unreachable included) → Unauthorized: fail closed.
    async fn key(&self, kid: &str) -> Result<DecodingKey, ApiError> {
        if let Some(key) = self.cached(kid, true) {
            return Ok(key);
        }
        let _one_fetch = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid, true) {
            return Ok(key);
        }
        if self.may_fetch() {
            self.refresh().await;
        }
        self.cached(kid, false)
            .ok_or_else(|| refused("JWT kid not in the JWKS (or the JWKS is unreachable)"))
    }

    fn cached(&self, kid: &str, fresh_only: bool) -> Option<DecodingKey> {
        let set = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let fresh = set.fetched_at.is_some_and(|t| t.elapsed() < JWKS_MAX_AGE);
        if fresh_only && !fresh {
            return None;
        }
        set.by_kid.get(kid).cloned()
    }

    fn may_fetch(&self) -> bool {
        let set = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        set.last_attempt
            .is_none_or(|t| t.elapsed() >= self.cooldown)
    }

    async fn refresh(&self) {
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(by_kid) => {
                log::info!(
                    "loaded {} user-token key(s) from {}",
                    by_kid.len(),
                    self.url
                );
                let mut set = self.keys.write().unwrap_or_else(PoisonError::into_inner);
                set.by_kid = by_kid;
                set.fetched_at = Some(Instant::now());
            }
            Err(e) => log::warn!("cannot load user-token keys from {}: {e}", self.url),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let mut res = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err(format!("response larger than {JWKS_MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body)?;
        if keys.is_empty() {
            return Err("no ES256 (P-256) signing key with a kid".into());
        }
        Ok(keys)
    }
}

/// The usable keys of a JWKS document: P-256 EC keys with a `kid`, for signatures, ES256 if
/// they name an algorithm. Other keys are skipped, not fatal (the set may hold future kinds).
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let set: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut out = HashMap::new();
    for raw in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        let usable = matches!(&jwk.algorithm, AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256)
            && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::ES256))
            && matches!(
                jwk.common.public_key_use,
                None | Some(PublicKeyUse::Signature)
            );
        let Some(kid) = jwk.common.key_id.clone().filter(|_| usable) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            out.insert(kid, key);
        }
    }
    Ok(out)
}

/// reqwest is built with `rustls-no-provider` (ring instead of aws-lc, which needs a large C
/// build): a rustls crypto provider must be installed before any `reqwest::Client` is built in
/// the process — including test clients, since cargo unifies reqwest's features — or that build
/// panics. Idempotent; `Auth::from_settings` calls it; tests that build a client without having
/// built an `Auth` in their process must call it first.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_plain_equality() {
        let secret = b"0123456789abcdef";
        assert!(constant_time_eq(secret, secret));
        assert!(!constant_time_eq(b"0123456789abcdeX", secret));
        assert!(!constant_time_eq(b"0123456789abcde", secret));
        assert!(!constant_time_eq(b"0123456789abcdef0", secret));
        assert!(!constant_time_eq(b"", secret));
        assert!(!constant_time_eq(b"", b""));
        // Wrapping around a short secret must not make a repetition match.
        assert!(!constant_time_eq(b"abab", b"ab"));
    }

    #[test]
    fn bearer_and_stack_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(
            HeaderName::from_static(STACK_TOKEN_HEADER),
            "stack".parse().unwrap(),
        );
        assert_eq!(presented_token(&h), Some("stack"));
        h.insert(AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(presented_token(&h), Some("stack"));
        h.insert(AUTHORIZATION, "bearer  tok ".parse().unwrap());
        assert_eq!(presented_token(&h), Some("tok"));
        h.append(AUTHORIZATION, "Bearer other".parse().unwrap());
        assert_eq!(presented_token(&h), Some("stack"));
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(presented_token(&h), None);
    }

    #[test]
    fn credentials_file_format() {
        let parsed = parse_credentials("# x\nAPI_TOKEN=a=b\n\n ADMIN_TOKEN = c \n").unwrap();
        assert_eq!(parsed["API_TOKEN"], "a=b");
        assert_eq!(parsed["ADMIN_TOKEN"], "c");
        assert!(parse_credentials("garbage\n").is_err());
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let body = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"rsa"},
            {"kty":"EC","crv":"P-384","kid":"p384","x":"AAAA","y":"AAAA"},
            {"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"AAAA","y":"AAAA"},
            {"kty":"EC","crv":"P-256","kid":"ok","alg":"ES256","use":"sig","x":"AAAA","y":"AAAA"},
            {"something":"else"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["ok"]);
        assert!(parse_jwks(b"[]").is_err());
    }
}
