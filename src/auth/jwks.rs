//! Stack Auth access tokens: ES256 JWTs verified with keys from the project's JWKS, fetched
//! over https (rustls with ring), cached, refetched at most once per cooldown.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{refused, AuthError, AuthSetupError, Principal};
use crate::config::Settings;
use crate::domain::UserId;

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
const STACK_API_PROJECTS: &str = "https://api.stack-auth.com/api/v1/projects/";

pub(super) struct UserTokens {
    validation: Validation,
    jwks: Jwks,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl UserTokens {
    /// Where the keys come from (for `Debug`).
    pub(super) fn jwks_url(&self) -> &str {
        &self.jwks.url
    }

    /// Changes the minimum interval between two JWKS fetches (tests).
    pub(super) fn set_cooldown(&mut self, cooldown: Duration) {
        self.jwks.cooldown = cooldown;
    }

    pub(super) fn new(project: &str, settings: &Settings) -> Result<UserTokens, AuthSetupError> {
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

    pub(super) async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
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
            AuthError::Unauthorized
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
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
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
