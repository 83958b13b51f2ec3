//! Who is calling, and what they may touch.
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
//! Every refusal is [`AuthError::Unauthorized`] (no or bad credentials) or [`AuthError::Forbidden`]
//! (good credentials, not yours); the reason is logged at debug level, never a token.

//!
//! Layout: principals, the authenticator and token comparison here; SSE tickets in
//! [`tickets`]; the credentials file read or written at boot in [`credentials`]; Stack Auth
//! tokens and their JWKS client in [`jwks`]. The HTTP extractor is `http/extract.rs`.

mod credentials;
mod jwks;
mod tickets;

use std::fmt;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::Rng;

use crate::config::Settings;
use crate::domain::UserId;

pub use credentials::{admin_token, CREDENTIALS_FILE, MIN_TOKEN_LEN};
pub use jwks::{install_crypto_provider, JWKS_REFETCH_COOLDOWN};
pub use tickets::{MAX_OPEN_TICKETS_PER_USER, TICKET_TTL};

/// Random bytes in a generated token or ticket (URL-safe base64, 43 chars).
const SECRET_BYTES: usize = 32;
const STACK_TOKEN_HEADER: &str = "x-stack-access-token";

/// Why credentials were not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No or bad credentials.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// Good credentials, not for this resource.
    #[error("these credentials do not give access to this resource")]
    Forbidden,
    /// Too many open tickets for this user.
    #[error("too many open tickets")]
    RateLimited { retry_after_secs: u64 },
}

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
    pub fn authorize_user(&self, user: &UserId) -> Result<(), AuthError> {
        match self {
            Principal::User(me) if me == user => Ok(()),
            Principal::User(_) => Err(AuthError::Forbidden),
            Principal::Service | Principal::Admin => Ok(()),
        }
    }

    /// Admin routes: the admin token only.
    pub fn authorize_admin(&self) -> Result<(), AuthError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::User(_) | Principal::Service => Err(AuthError::Forbidden),
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
    users: Option<jwks::UserTokens>,
    tickets: tickets::Tickets,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("user_tokens", &self.users.as_ref().map(|u| u.jwks_url()))
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
        let (service, admin) = credentials::service_tokens(settings)?;
        let users = match &settings.stack_project_id {
            Some(project) => Some(jwks::UserTokens::new(project, settings)?),
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
            tickets: tickets::Tickets::new(TICKET_TTL),
        })
    }

    /// Changes the minimum interval between two JWKS fetches (tests; default 30 s).
    pub fn with_jwks_cooldown(mut self, cooldown: Duration) -> Auth {
        if let Some(users) = &mut self.users {
            users.set_cooldown(cooldown);
        }
        self
    }

    /// Changes how long an SSE ticket lives (tests; default 60 s).
    pub fn with_ticket_ttl(mut self, ttl: Duration) -> Auth {
        self.tickets = tickets::Tickets::new(ttl);
        self
    }

    /// Reads `Authorization: Bearer …` or `x-stack-access-token: …` and says who is calling.
    /// Every failure, including an unreachable JWKS, is [`AuthError::Unauthorized`].
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
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
    pub fn issue_ticket(&self, principal: &Principal, user: &UserId) -> Result<String, AuthError> {
        principal.authorize_user(user)?;
        self.tickets.issue(principal, user, random_secret())
    }

    /// Redeems a ticket for `user`'s SSE route. Any attempt consumes it, so a ticket presented
    /// on another user's route is gone too. Unknown, expired, used or other user → Unauthorized.
    pub fn redeem_ticket(&self, ticket: &str, user: &UserId) -> Result<Principal, AuthError> {
        self.tickets.redeem(ticket, user)
    }
}

/// Logs why a request was refused (debug: refusals are routine): Unauthorized.
pub(crate) fn refused(why: &str) -> AuthError {
    log::debug!("credentials refused: {why}");
    AuthError::Unauthorized
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

/// A token compared in constant time; `Debug` never shows it.
pub(crate) struct Secret(Box<[u8]>);

impl Secret {
    fn matches(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), &self.0)
    }
}

/// Runs in time that depends only on `presented.len()`: neither the secret's content nor its
/// length leaks (unlike a plain `==`, or `subtle`'s slice `ct_eq`, which returns early on a
/// length mismatch).
pub(crate) fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    let mut diff = presented.len() ^ secret.len();
    for (i, byte) in presented.iter().enumerate() {
        diff |= usize::from(byte ^ secret[i % secret.len()]);
    }
    std::hint::black_box(diff) == 0
}

pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
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
}
