//! A webhook receiver on loopback for the tests: records every request (Standard Webhooks
//! headers and body), answers 200 unless told to fail, and verifies signatures with an
//! independent implementation (the `openssl` command).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// What the receiver answered.
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Behavior {
    /// Answer this status to the next `fail_next` requests (503 when unset).
    fail_next: usize,
    fail_status: Option<u16>,
    /// Answer every request with this status.
    always: Option<u16>,
    /// Answer every request with a redirect to this URL.
    redirect_to: Option<String>,
    /// Take this long before answering.
    delay: Option<Duration>,
}

pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    behavior: Arc<Mutex<Behavior>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let behavior: Arc<Mutex<Behavior>> = Arc::default();
        let (g, b) = (got.clone(), behavior.clone());
        let server = HttpServer::new(move || {
            let (g, b) = (g.clone(), b.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (g, b) = (g.clone(), b.clone());
                async move {
                    let delay = b.lock().unwrap().delay;
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    answer(&req, body, &g, &b)
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            port,
            got,
            behavior,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The next `n` requests get `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut b = self.behavior.lock().unwrap();
        b.fail_next = n;
        b.fail_status = Some(status);
    }

    /// Every request gets a 307 redirect to `url` (`None`: no more redirects).
    pub fn redirect(&self, url: Option<String>) {
        self.behavior.lock().unwrap().redirect_to = url;
    }

    /// Every answer takes `delay` (`None`: at once).
    pub fn slow(&self, delay: Option<Duration>) {
        self.behavior.lock().unwrap().delay = delay;
    }

    /// Every request gets `status` (`None`: 200 again).
    pub fn always(&self, status: Option<u16>) {
        self.behavior.lock().unwrap().always = status;
    }

    /// Waits until `pred` holds on what was received.
    pub async fn wait(&self, limit: Duration, what: &str, pred: impl Fn(&[Received]) -> bool) {
        crate::support::harness::eventually(limit, what, || async {
            pred(&self.received()).then_some(())
        })
        .await
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn answer(
    req: &HttpRequest,
    body: web::Bytes,
    got: &Mutex<Vec<Received>>,
    behavior: &Mutex<Behavior>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut b = behavior.lock().unwrap();
    let status = if b.redirect_to.is_some() {
        307
    } else if let Some(s) = b.always {
        s
    } else if b.fail_next > 0 {
        b.fail_next -= 1;
        b.fail_status.unwrap_or(503)
    } else {
        200
    };
    got.lock().unwrap().push(Received {
        status,
        at: std::time::Instant::now(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut res = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(to) = &b.redirect_to {
        res.insert_header(("Location", to.as_str()));
    }
    res.finish()
}

/// Whether `r`'s signature is right for `secret` (`whsec_…`), checked with `openssl` (an
/// implementation independent of the daemon's), and its timestamp within 5 minutes.
pub fn verify_with_openssl(secret: &str, r: &Received) -> bool {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let signed = format!("{}.{}.{}", r.id, r.timestamp, r.body);
    let mut child = std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{hex}"),
            "-binary",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), signed.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(out.stdout)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fresh = r
        .timestamp
        .parse::<i64>()
        .is_ok_and(|t| (now - t).abs() < 300);
    fresh && r.signature.split(' ').any(|s| s == expected)
}
