//! Authentication and authorization, driving `Auth` directly against a stand-in
//! Stack Auth project (tests/support/jwt.rs).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::jwt::{SigningKey, TestIssuer, TokenOpts, PRIMARY_KID};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use actix_web::{web, FromRequest};
use jsonwebtoken::Algorithm;
use wa_supervisor::auth::AuthError;
use wa_supervisor::auth::{Auth, Principal, CREDENTIALS_FILE};
use wa_supervisor::config::Settings;
use wa_supervisor::domain::UserId;

const USER: &str = "3f2b8c1e-7d4a-4b9e-9a51-0c2d6e8f1a23";
const OTHER: &str = "9a8b7c6d-0000-4b9e-9a51-0c2d6e8f1a23";
const SERVICE_TOKEN: &str = "service-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const COOLDOWN: Duration = Duration::from_millis(300);

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn settings(data_dir: &Path, extra: &[&str]) -> Settings {
    let mut args = vec!["wa-supervisor".to_owned(), "--data-dir".to_owned()];
    args.push(data_dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Settings::from_args(args).unwrap()
}

/// An `Auth` with configured service/admin tokens and user tokens from `issuer`.
fn auth_for(issuer: &TestIssuer, dir: &Path) -> Auth {
    let mut extra = vec!["--api-token", SERVICE_TOKEN, "--admin-token", ADMIN_TOKEN];
    let issuer_args = issuer.settings_args();
    extra.extend(issuer_args.iter().map(String::as_str));
    Auth::from_settings(&settings(dir, &extra))
        .unwrap()
        .with_jwks_cooldown(COOLDOWN)
}

fn bearer(token: &str) -> HeaderMap {
    header(AUTHORIZATION, &format!("Bearer {token}"))
}

fn header(name: HeaderName, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_str(value).unwrap());
    h
}

fn unauthorized(r: Result<Principal, AuthError>) -> bool {
    matches!(r, Err(AuthError::Unauthorized))
}

// --- user tokens ------------------------------------------------------------------------------

#[actix_web::test]
async fn a_valid_user_token_is_its_subject() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    let token = issuer.token(USER, TokenOpts::default());
    assert_eq!(
        auth.authenticate(&bearer(&token)).await.unwrap(),
        Principal::User(uid(USER))
    );
    // The keys are cached: more requests, no more fetches.
    for _ in 0..5 {
        auth.authenticate(&bearer(&token)).await.unwrap();
    }
    assert_eq!(issuer.fetches(), 1);
}

#[actix_web::test]
async fn the_stack_access_token_header_is_accepted() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    let token = issuer.token(USER, TokenOpts::default());
    let h = header(HeaderName::from_static("x-stack-access-token"), &token);
    assert_eq!(
        auth.authenticate(&h).await.unwrap(),
        Principal::User(uid(USER))
    );
}

#[actix_web::test]
async fn expired_or_exp_less_tokens_are_refused() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    let expired = issuer.token(
        USER,
        TokenOpts {
            exp_offset: Some(-600),
            ..TokenOpts::default()
        },
    );
    assert!(unauthorized(auth.authenticate(&bearer(&expired)).await));
    let no_exp = issuer.token(
        USER,
        TokenOpts {
            exp_offset: None,
            ..TokenOpts::default()
        },
    );
    assert!(unauthorized(auth.authenticate(&bearer(&no_exp)).await));
    // A few seconds of clock skew are tolerated.
    let just_expired = issuer.token(
        USER,
        TokenOpts {
            exp_offset: Some(-5),
            ..TokenOpts::default()
        },
    );
    assert!(auth.authenticate(&bearer(&just_expired)).await.is_ok());
}

#[actix_web::test]
async fn a_token_for_another_audience_is_refused() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    let token = issuer.token(
        USER,
        TokenOpts {
            aud: Some("another-project".into()),
            ..TokenOpts::default()
        },
    );
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
}

#[actix_web::test]
async fn only_allowed_issuers_are_accepted() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    let evil = TokenOpts {
        iss: Some("https://evil.example/api/v1/projects/x".into()),
        ..TokenOpts::default()
    };
    let token = issuer.token(USER, evil.clone());
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));

    // STACK_ISSUERS replaces the default allow-list.
    let mut extra = issuer.settings_args();
    extra.extend([
        "--stack-issuers".into(),
        "https://evil.example/api/v1/projects/x".into(),
    ]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let custom = Auth::from_settings(&settings(dir.path(), &extra)).unwrap();
    assert!(custom.authenticate(&bearer(&token)).await.is_ok());
    let default_iss = issuer.token(USER, TokenOpts::default());
    assert!(unauthorized(
        custom.authenticate(&bearer(&default_iss)).await
    ));
}

#[actix_web::test]
async fn hmac_tokens_are_refused_whatever_the_secret() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    // Load the real key first, so the refusal is not just "no keys yet".
    auth.authenticate(&bearer(&issuer.token(USER, TokenOpts::default())))
        .await
        .unwrap();
    let mut forged = vec![
        issuer.hs256_token(USER, issuer.project_id().as_bytes()),
        issuer.token(
            USER,
            TokenOpts {
                alg: Algorithm::HS512,
                ..TokenOpts::default()
            },
        ),
    ];
    for material in issuer.public_key_material() {
        forged.push(issuer.hs256_token(USER, &material));
    }
    for token in forged {
        assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
    }
    assert_eq!(issuer.fetches(), 1, "another algorithm never costs a fetch");
}

#[actix_web::test]
async fn alg_none_is_refused() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    let token = issuer.none_token(USER);
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
    // Also with a signature part that is not empty.
    let token = format!("{token}c2lnbmF0dXJl");
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
}

#[actix_web::test]
async fn a_forged_signature_under_a_real_kid_is_refused() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    let token = issuer.token(
        USER,
        TokenOpts {
            key: SigningKey::Foreign,
            kid: Some(PRIMARY_KID.into()),
            ..TokenOpts::default()
        },
    );
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
    // A valid token with its signature swapped for another valid token's is refused too.
    let a = issuer.token(USER, TokenOpts::default());
    let b = issuer.token(OTHER, TokenOpts::default());
    let spliced = format!(
        "{}.{}",
        b.rsplit_once('.').unwrap().0,
        a.rsplit_once('.').unwrap().1
    );
    assert!(unauthorized(auth.authenticate(&bearer(&spliced)).await));
}

#[actix_web::test]
async fn a_sub_that_is_not_a_user_id_or_a_missing_kid_is_refused() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    for sub in ["../etc", "", "a/b", "é"] {
        let token = issuer.token(sub, TokenOpts::default());
        assert!(
            unauthorized(auth.authenticate(&bearer(&token)).await),
            "{sub:?}"
        );
    }
    let no_kid = issuer.token(
        USER,
        TokenOpts {
            kid: Some(String::new()),
            ..TokenOpts::default()
        },
    );
    assert!(unauthorized(auth.authenticate(&bearer(&no_kid)).await));
}

#[actix_web::test]
async fn an_unknown_kid_refetches_at_most_once_per_cooldown() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    auth.authenticate(&bearer(&issuer.token(USER, TokenOpts::default())))
        .await
        .unwrap();
    assert_eq!(issuer.fetches(), 1);

    // Key rotation: a token signed with a newly published key is accepted after one refetch.
    issuer.publish_secondary();
    tokio::time::sleep(COOLDOWN).await;
    let rotated = issuer.token(
        USER,
        TokenOpts {
            key: SigningKey::Secondary,
            ..TokenOpts::default()
        },
    );
    assert_eq!(
        auth.authenticate(&bearer(&rotated)).await.unwrap(),
        Principal::User(uid(USER))
    );
    assert_eq!(issuer.fetches(), 2);

    // A flood of unknown kids, concurrent then sequential: at most one fetch per cooldown.
    tokio::time::sleep(COOLDOWN).await;
    let unknown = |n: usize| {
        issuer.token(
            USER,
            TokenOpts {
                kid: Some(format!("unknown-{n}")),
                ..TokenOpts::default()
            },
        )
    };
    let tokens: Vec<String> = (0..50).map(unknown).collect();
    let results = futures_util::future::join_all(
        tokens
            .iter()
            .map(|t| async { auth.authenticate(&bearer(t)).await }),
    )
    .await;
    assert!(results.into_iter().all(unauthorized));
    for n in 50..80 {
        assert!(unauthorized(auth.authenticate(&bearer(&unknown(n))).await));
    }
    assert_eq!(issuer.fetches(), 3);
    // Known keys keep working meanwhile, without fetching.
    assert!(auth.authenticate(&bearer(&rotated)).await.is_ok());
    assert_eq!(issuer.fetches(), 3);

    tokio::time::sleep(COOLDOWN).await;
    assert!(unauthorized(auth.authenticate(&bearer(&unknown(99))).await));
    assert_eq!(issuer.fetches(), 4);
}

#[actix_web::test]
async fn an_unreachable_jwks_fails_closed() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    let token = issuer.token(USER, TokenOpts::default());
    issuer.stop().await;
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
    tokio::time::sleep(COOLDOWN).await;
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
    assert_eq!(issuer.fetches(), 0);
    // Service tokens do not depend on the JWKS.
    assert_eq!(
        auth.authenticate(&bearer(SERVICE_TOKEN)).await.unwrap(),
        Principal::Service
    );
}

#[actix_web::test]
async fn a_url_that_serves_no_jwks_fails_closed() {
    // Any HTTP server that does not serve a JWKS: the test issuer's root path is a 404.
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong_url = issuer
        .jwks_url()
        .replace("/.well-known/jwks.json", "/nothing");
    let extra = [
        "--stack-project-id",
        issuer.project_id(),
        "--stack-jwks-url",
        &wrong_url,
    ];
    let auth = Auth::from_settings(&settings(dir.path(), &extra)).unwrap();
    let token = issuer.token(USER, TokenOpts::default());
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
}

#[actix_web::test]
async fn garbage_and_empty_credentials_are_refused() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_for(&issuer, dir.path());
    assert!(unauthorized(auth.authenticate(&HeaderMap::new()).await));
    for value in [
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic c2VydmljZTpwdw==",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer ..",
        "Bearer eyJhbGciOiJFUzI1NiJ9.e30.",
        &format!("Bearer {}", "A".repeat(20_000)),
        &format!("Token {SERVICE_TOKEN}"),
        SERVICE_TOKEN,
    ] {
        let h = header(AUTHORIZATION, value);
        assert!(unauthorized(auth.authenticate(&h).await), "{value:?}");
    }
    let stack = HeaderName::from_static("x-stack-access-token");
    for value in ["", " ", "garbage", "a.b.c"] {
        assert!(unauthorized(
            auth.authenticate(&header(stack.clone(), value)).await
        ));
    }
    // Two Authorization headers: ambiguous, refused even if one is right.
    let mut h = bearer(SERVICE_TOKEN);
    h.append(AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
    assert!(unauthorized(auth.authenticate(&h).await));
    // Not visible ASCII.
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer \xffservice").unwrap(),
    );
    assert!(unauthorized(auth.authenticate(&h).await));
}

// --- service and admin tokens -----------------------------------------------------------------

#[actix_web::test]
async fn service_and_admin_tokens_match_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::from_settings(&settings(
        dir.path(),
        &["--api-token", SERVICE_TOKEN, "--admin-token", ADMIN_TOKEN],
    ))
    .unwrap();
    assert_eq!(
        auth.authenticate(&bearer(SERVICE_TOKEN)).await.unwrap(),
        Principal::Service
    );
    assert_eq!(
        auth.authenticate(&bearer(ADMIN_TOKEN)).await.unwrap(),
        Principal::Admin
    );
    let stack = HeaderName::from_static("x-stack-access-token");
    assert_eq!(
        auth.authenticate(&header(stack, ADMIN_TOKEN))
            .await
            .unwrap(),
        Principal::Admin
    );
    let prefix = &SERVICE_TOKEN[..SERVICE_TOKEN.len() - 1];
    let longer = format!("{SERVICE_TOKEN}x");
    let mut flipped = SERVICE_TOKEN.as_bytes().to_vec();
    flipped[0] ^= 1;
    let flipped = String::from_utf8(flipped).unwrap();
    for wrong in [
        prefix,
        &longer,
        &flipped,
        "s",
        &SERVICE_TOKEN.to_uppercase(),
    ] {
        assert!(
            unauthorized(auth.authenticate(&bearer(wrong)).await),
            "{wrong}"
        );
    }
    // No credentials files when both tokens are configured; user tokens are off without a project.
    assert!(!dir.path().join(CREDENTIALS_FILE).exists());
    let issuer = TestIssuer::start().await;
    let token = issuer.token(USER, TokenOpts::default());
    assert!(unauthorized(auth.authenticate(&bearer(&token)).await));
    assert_eq!(issuer.fetches(), 0);
}

#[test]
fn bad_configuration_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--api-token", "short", "--admin-token", ADMIN_TOKEN],
            "API_TOKEN",
        ),
        (
            &["--api-token", SERVICE_TOKEN, "--admin-token", ""],
            "ADMIN_TOKEN",
        ),
        (
            &[
                "--api-token",
                "has space 0123456789",
                "--admin-token",
                ADMIN_TOKEN,
            ],
            "API_TOKEN",
        ),
        (
            &["--api-token", ADMIN_TOKEN, "--admin-token", ADMIN_TOKEN],
            "must differ",
        ),
        (
            &[
                "--api-token",
                SERVICE_TOKEN,
                "--admin-token",
                ADMIN_TOKEN,
                "--stack-jwks-url",
                "https://x.example/jwks",
            ],
            "STACK_PROJECT_ID",
        ),
        (
            &[
                "--api-token",
                SERVICE_TOKEN,
                "--admin-token",
                ADMIN_TOKEN,
                "--stack-project-id",
                "a/../b",
            ],
            "STACK_PROJECT_ID",
        ),
        (
            &[
                "--api-token",
                SERVICE_TOKEN,
                "--admin-token",
                ADMIN_TOKEN,
                "--stack-project-id",
                "p1",
                "--stack-jwks-url",
                "http://jwks.example/keys",
            ],
            "STACK_JWKS_URL",
        ),
    ];
    for (args, needle) in cases {
        let err = Auth::from_settings(&settings(dir.path(), args))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

// --- generated credentials --------------------------------------------------------------------

fn read_credentials(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
            .to_owned()
    };
    (get("API_TOKEN"), get("ADMIN_TOKEN"))
}

#[actix_web::test]
async fn missing_tokens_are_generated_stored_0600_and_reused() {
    let log = crate::support::logs::captured();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let path = data_dir.join(CREDENTIALS_FILE);

    let first = Auth::from_settings(&settings(&data_dir, &[])).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (api, admin) = read_credentials(&path);
    assert!(api.len() >= 43 && admin.len() >= 43 && api != admin);
    assert_eq!(
        first.authenticate(&bearer(&api)).await.unwrap(),
        Principal::Service
    );
    assert_eq!(
        first.authenticate(&bearer(&admin)).await.unwrap(),
        Principal::Admin
    );

    // Next boot: same tokens, file untouched.
    let before = std::fs::read(&path).unwrap();
    let second = Auth::from_settings(&settings(&data_dir, &[])).unwrap();
    assert_eq!(
        second.authenticate(&bearer(&api)).await.unwrap(),
        Principal::Service
    );
    assert_eq!(
        second.authenticate(&bearer(&admin)).await.unwrap(),
        Principal::Admin
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A configured token wins over the stored one; the stored other one is still used.
    let third = Auth::from_settings(&settings(&data_dir, &["--api-token", SERVICE_TOKEN])).unwrap();
    assert!(unauthorized(third.authenticate(&bearer(&api)).await));
    assert_eq!(
        third.authenticate(&bearer(SERVICE_TOKEN)).await.unwrap(),
        Principal::Service
    );
    assert_eq!(
        third.authenticate(&bearer(&admin)).await.unwrap(),
        Principal::Admin
    );

    // A wrong token refused, logged at debug level, still without any token in the log.
    assert!(unauthorized(
        third.authenticate(&bearer("wrong-0123456789abcdef")).await
    ));

    let text = log.text();
    assert!(
        text.contains(&path.display().to_string()),
        "path logged: {text}"
    );
    for secret in [&api, &admin, SERVICE_TOKEN, "wrong-0123456789abcdef"] {
        assert!(!text.contains(secret), "a token reached the log");
    }
}

#[test]
fn an_unsafe_or_broken_credentials_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CREDENTIALS_FILE);
    std::fs::write(
        &path,
        "API_TOKEN=0123456789abcdefXYZ\nADMIN_TOKEN=abcdefghijklmnopqrst\n",
    )
    .unwrap();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Auth::from_settings(&settings(dir.path(), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("644"),
        "{err}"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Auth::from_settings(&settings(dir.path(), &[])).is_ok());

    std::fs::write(&path, "API_TOKEN=short\n").unwrap();
    let err = Auth::from_settings(&settings(dir.path(), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(CREDENTIALS_FILE) && err.contains("API_TOKEN"),
        "{err}"
    );
    assert!(
        !err.contains("short"),
        "the token itself is not in the error: {err}"
    );
}

// --- SSE tickets ------------------------------------------------------------------------------

fn plain_auth(dir: &Path) -> Auth {
    Auth::from_settings(&settings(
        dir,
        &["--api-token", SERVICE_TOKEN, "--admin-token", ADMIN_TOKEN],
    ))
    .unwrap()
}

#[test]
fn a_ticket_is_redeemed_once_for_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let auth = plain_auth(dir.path());
    let me = Principal::User(uid(USER));

    let ticket = auth.issue_ticket(&me, &uid(USER)).unwrap();
    assert!(ticket.len() >= 43 && !ticket.contains(SERVICE_TOKEN));
    assert_eq!(auth.redeem_ticket(&ticket, &uid(USER)).unwrap(), me);
    assert!(matches!(
        auth.redeem_ticket(&ticket, &uid(USER)),
        Err(AuthError::Unauthorized)
    ));

    // Bound to the user: presented for another, it is refused and gone.
    let ticket = auth.issue_ticket(&me, &uid(USER)).unwrap();
    assert!(matches!(
        auth.redeem_ticket(&ticket, &uid(OTHER)),
        Err(AuthError::Unauthorized)
    ));
    assert!(matches!(
        auth.redeem_ticket(&ticket, &uid(USER)),
        Err(AuthError::Unauthorized)
    ));

    // A user cannot get a ticket for someone else; the service can, and it stays the service.
    assert!(matches!(
        auth.issue_ticket(&me, &uid(OTHER)),
        Err(AuthError::Forbidden)
    ));
    let ticket = auth.issue_ticket(&Principal::Service, &uid(OTHER)).unwrap();
    assert_eq!(
        auth.redeem_ticket(&ticket, &uid(OTHER)).unwrap(),
        Principal::Service
    );

    for bogus in ["", "x", SERVICE_TOKEN] {
        assert!(matches!(
            auth.redeem_ticket(bogus, &uid(USER)),
            Err(AuthError::Unauthorized)
        ));
    }
    // Tickets are distinct.
    let a = auth.issue_ticket(&me, &uid(USER)).unwrap();
    let b = auth.issue_ticket(&me, &uid(USER)).unwrap();
    assert_ne!(a, b);
}

#[test]
fn a_ticket_expires() {
    let dir = tempfile::tempdir().unwrap();
    let auth = plain_auth(dir.path()).with_ticket_ttl(Duration::from_millis(100));
    let me = Principal::User(uid(USER));
    let ticket = auth.issue_ticket(&me, &uid(USER)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(matches!(
        auth.redeem_ticket(&ticket, &uid(USER)),
        Err(AuthError::Unauthorized)
    ));
}

// --- authorization ----------------------------------------------------------------------------

#[test]
fn the_authorization_matrix() {
    let (me, other) = (uid(USER), uid(OTHER));
    let user = Principal::User(me.clone());
    assert!(user.authorize_user(&me).is_ok());
    assert!(matches!(
        user.authorize_user(&other),
        Err(AuthError::Forbidden)
    ));
    assert!(matches!(user.authorize_admin(), Err(AuthError::Forbidden)));

    assert!(Principal::Service.authorize_user(&me).is_ok());
    assert!(Principal::Service.authorize_user(&other).is_ok());
    assert!(matches!(
        Principal::Service.authorize_admin(),
        Err(AuthError::Forbidden)
    ));

    assert!(Principal::Admin.authorize_user(&other).is_ok());
    assert!(Principal::Admin.authorize_admin().is_ok());

    assert_eq!(user.audit_name(), format!("user:{USER}"));
    assert_eq!(Principal::Service.audit_name(), "service");
    assert_eq!(Principal::Admin.audit_name(), "admin");
}

#[actix_web::test]
async fn the_extractor_uses_the_registered_auth() {
    let dir = tempfile::tempdir().unwrap();
    let auth = web::Data::new(plain_auth(dir.path()));
    let req = actix_web::test::TestRequest::default()
        .insert_header((AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}")))
        .app_data(auth.clone())
        .to_http_request();
    assert_eq!(Principal::extract(&req).await.unwrap(), Principal::Admin);

    let req = actix_web::test::TestRequest::default()
        .app_data(auth)
        .to_http_request();
    assert!(matches!(
        Principal::extract(&req).await,
        Err(wa_supervisor::http::ApiError::Unauthorized)
    ));

    let req = actix_web::test::TestRequest::default()
        .insert_header((AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}")))
        .to_http_request();
    assert!(matches!(
        Principal::extract(&req).await,
        Err(wa_supervisor::http::ApiError::Internal(_))
    ));
}

#[test]
fn the_default_stack_urls_build_an_https_client() {
    // Exercises the rustls (ring) provider and the platform verifier without any network.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--api-token",
        SERVICE_TOKEN,
        "--admin-token",
        ADMIN_TOKEN,
        "--stack-project-id",
        "p1",
    ];
    assert!(Auth::from_settings(&settings(dir.path(), &args)).is_ok());
}
