//! A stand-in Stack Auth project: an ES256 key pair, its JWKS served on 127.0.0.1:0 (fetches
//! counted), and tokens signed the way Stack Auth signs them — or the ways an attacker would.
//!
//! ```ignore
//! let issuer = TestIssuer::start().await;
//! let token = issuer.token("user-1", TokenOpts::default());        // valid for 5 min
//! let expired = issuer.token("user-1", TokenOpts { exp_offset: Some(-600), ..TokenOpts::default() });
//! // settings: --stack-project-id {project_id()} --stack-jwks-url {jwks_url()}
//! //           --stack-issuers {issuer()}  (or the default issuer for that project id)
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// P-256 private keys (PKCS#8 DER, base64), made once with
/// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 | openssl pkcs8 -topk8 -nocrypt -outform DER`.
/// Embedded so tests need no key-generation crate. Test keys only: they sign nothing real.
const PRIMARY_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgoNXzU7RJTkGAGDhqa/9B7og0bptE1dXbT35KArZVWHihRANCAATjZgUbqf8kEfm6u4diYlh22uj5useJPxFTEe/DNTSO/0aeope4IDFg72d0Hkg14j7b59kqeC1M1gZsXY8pa5bD";
const SECONDARY_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7KH1C3yZRJ60ArEK+y9/U8UJFpDmX1pqgairzCpXhjGhRANCAAS9gAzLy5QH6Kbm8SBiRY4K1HiT8l6VQV8VFbrZeZ3ASU1LLM8QX25CAYSbTRhDC7k10OchYckccS68dKpYh408";
/// A key no JWKS ever serves: a forger's.
const FOREIGN_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjkhYsZ+EMyLtIrkTg5ZFvfOaJ599TQTa44qdYb9C6DWhRANCAARNtq3qC23H69k7xjgp2WZwhVaDnKmtUHcXdSBw/22q3TzmKBaHFoPJLb6B/VILeQhQ2q3nwhwDU7Tzw/CHUJ58";

pub const PRIMARY_KID: &str = "test-key-1";
pub const SECONDARY_KID: &str = "test-key-2";
pub const PROJECT_ID: &str = "5f7b9c1e-2d4a-4b8e-9a51-0c2d6e8f1a23";

/// Which private key signs a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// Served from the start under [`PRIMARY_KID`].
    Primary,
    /// Served under [`SECONDARY_KID`] only after [`TestIssuer::publish_secondary`] (a rotation).
    Secondary,
    /// Never served.
    Foreign,
}

/// How to deviate from a valid token. `TokenOpts::default()` is a valid one.
#[derive(Clone, Debug)]
pub struct TokenOpts {
    /// `exp` = now + this many seconds; `None` leaves `exp` out.
    pub exp_offset: Option<i64>,
    /// `None`: the project id.
    pub aud: Option<String>,
    /// `None`: [`TestIssuer::issuer`].
    pub iss: Option<String>,
    /// `None`: the signing key's own kid; `Some("")`: no `kid` header at all.
    pub kid: Option<String>,
    /// ES256 signs with `key`; an HMAC algorithm signs with the project id as the secret.
    pub alg: Algorithm,
    pub key: SigningKey,
}

impl Default for TokenOpts {
    fn default() -> Self {
        TokenOpts {
            exp_offset: Some(300),
            aud: None,
            iss: None,
            kid: None,
            alg: Algorithm::ES256,
            key: SigningKey::Primary,
        }
    }
}

/// The running stand-in project. Stops serving when dropped (or [`TestIssuer::stop`]).
pub struct TestIssuer {
    addr: SocketAddr,
    handle: ServerHandle,
    fetches: Arc<AtomicUsize>,
    served: Arc<RwLock<JwkSet>>,
}

impl TestIssuer {
    /// Serves the JWKS (the primary key only) at `http://127.0.0.1:PORT/.well-known/jwks.json`.
    pub async fn start() -> TestIssuer {
        let fetches = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(RwLock::new(JwkSet {
            keys: vec![public_jwk(SigningKey::Primary)],
        }));
        let (f, s) = (fetches.clone(), served.clone());
        let server = HttpServer::new(move || {
            let (f, s) = (f.clone(), s.clone());
            App::new().route(
                "/.well-known/jwks.json",
                web::get().to(move || {
                    let (f, s) = (f.clone(), s.clone());
                    async move {
                        f.fetch_add(1, Ordering::SeqCst);
                        let body = serde_json::to_string(&*s.read().unwrap()).unwrap();
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", 0))
        .expect("test issuer: bind 127.0.0.1:0");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        TestIssuer {
            addr,
            handle,
            fetches,
            served,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn project_id(&self) -> &'static str {
        PROJECT_ID
    }

    /// The `iss` of valid tokens: Stack Auth's default issuer for [`PROJECT_ID`], so settings
    /// need not list it.
    pub fn issuer(&self) -> String {
        format!("https://api.stack-auth.com/api/v1/projects/{PROJECT_ID}")
    }

    /// How many times the JWKS was served.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Rotation: the JWKS now also serves the secondary key.
    pub fn publish_secondary(&self) {
        self.served
            .write()
            .unwrap()
            .keys
            .push(public_jwk(SigningKey::Secondary));
    }

    /// CLI arguments enabling user tokens against this issuer.
    pub fn settings_args(&self) -> Vec<String> {
        vec![
            "--stack-project-id".into(),
            PROJECT_ID.into(),
            "--stack-jwks-url".into(),
            self.jwks_url(),
        ]
    }

    /// A token for `sub`, as described by `opts`.
    pub fn token(&self, sub: &str, opts: TokenOpts) -> String {
        let mut header = Header::new(opts.alg);
        header.kid = match opts.kid {
            None => Some(kid_of(opts.key).to_owned()),
            Some(k) if k.is_empty() => None,
            Some(k) => Some(k),
        };
        let mut claims = json!({
            "sub": sub,
            "aud": opts.aud.unwrap_or_else(|| PROJECT_ID.to_owned()),
            "iss": opts.iss.unwrap_or_else(|| self.issuer()),
            "iat": now(),
            "role": "authenticated",
        });
        if let Some(offset) = opts.exp_offset {
            claims["exp"] = json!(now() + offset);
        }
        let key = if opts.alg == Algorithm::ES256 {
            encoding_key(opts.key)
        } else {
            EncodingKey::from_secret(PROJECT_ID.as_bytes()).unwrap()
        };
        jsonwebtoken::encode(&header, &claims, &key).expect("sign test token")
    }

    /// The claims of a valid token for `sub`, signed HS256 with `secret` (e.g. the project id or
    /// the public key's bytes: the algorithm-confusion attack), with the primary key's kid.
    pub fn hs256_token(&self, sub: &str, secret: &[u8]) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(PRIMARY_KID.to_owned());
        jsonwebtoken::encode(
            &header,
            &self.valid_claims(sub),
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .expect("sign HS256 token")
    }

    /// The claims of a valid token for `sub`, unsigned: `alg: none`, empty signature.
    pub fn none_token(&self, sub: &str) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": PRIMARY_KID});
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(self.valid_claims(sub).to_string())
        )
    }

    /// Bytes an attacker might use as an HMAC secret: the primary public key as the uncompressed
    /// SEC1 point, and the JWKS document as served.
    pub fn public_key_material(&self) -> Vec<Vec<u8>> {
        let AlgorithmParameters::EllipticCurve(p) = public_jwk(SigningKey::Primary).algorithm
        else {
            unreachable!()
        };
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(&p.x).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(&p.y).unwrap());
        let jwks = serde_json::to_vec(&*self.served.read().unwrap()).unwrap();
        vec![point, jwks]
    }

    fn valid_claims(&self, sub: &str) -> serde_json::Value {
        json!({"sub": sub, "aud": PROJECT_ID, "iss": self.issuer(), "iat": now(), "exp": now() + 300})
    }

    /// Stops serving: later fetches fail to connect.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        // `stop` sends the command synchronously; the future only awaits completion.
        drop(self.handle.stop(false));
    }
}

fn kid_of(key: SigningKey) -> &'static str {
    match key {
        SigningKey::Primary => PRIMARY_KID,
        SigningKey::Secondary => SECONDARY_KID,
        SigningKey::Foreign => "foreign-key",
    }
}

fn encoding_key(key: SigningKey) -> EncodingKey {
    let pkcs8 = match key {
        SigningKey::Primary => PRIMARY_PKCS8,
        SigningKey::Secondary => SECONDARY_PKCS8,
        SigningKey::Foreign => FOREIGN_PKCS8,
    };
    EncodingKey::from_ec_der(&STANDARD.decode(pkcs8).unwrap())
}

fn public_jwk(key: SigningKey) -> Jwk {
    let jwk = Jwk::from_encoding_key(&encoding_key(key), Algorithm::ES256).expect("public JWK");
    Jwk {
        common: CommonParameters {
            key_id: Some(kid_of(key).to_owned()),
            key_algorithm: Some(KeyAlgorithm::ES256),
            public_key_use: Some(PublicKeyUse::Signature),
            ..jwk.common
        },
        algorithm: jwk.algorithm,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
