//! The console at `/` in a real headless Chromium, against the running app and the stand-in
//! WhatsApp page: paste a token, generate a QR, watch it rotate live, see the number once scanned.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::harness::{spawn_app, uuid_like, TestApp, SERVICE_TOKEN};
use crate::support::nginx;
use crate::support::standin::StandInOptions;
use base64::Engine as _;
use chromiumoxide::error::CdpError;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;

const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const STEP: Duration = Duration::from_secs(20);
const LAUNCH: Duration = Duration::from_secs(45);
const PHONE: &str = "4915112345678";

async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Our own Chromium (the operator's), closed at the end of the test; killed on drop otherwise.
struct Operator {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Operator {
    /// `behind_tls`: the operator reaches the console through the nginx site (its host name
    /// mapped to loopback, its self-signed certificate accepted).
    async fn launch(behind_tls: bool) -> Operator {
        let profile = tempfile::tempdir().unwrap();
        let mut config = BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .new_headless_mode()
            .no_sandbox() // we run as root
            .arg("disable-gpu")
            .user_data_dir(profile.path());
        if behind_tls {
            config = config.arg("ignore-certificate-errors").arg((
                "host-resolver-rules",
                format!("MAP {} 127.0.0.1", nginx::HOST).as_str(),
            ));
        }
        let config = config.build().unwrap();
        let (browser, mut handler) = within("launch", STEP, Browser::launch(config))
            .await
            .unwrap();
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                match event {
                    Ok(()) | Err(CdpError::InvalidMessage(..)) => {}
                    Err(_) => break,
                }
            }
        });
        Operator {
            browser,
            handler,
            _profile: profile,
        }
    }

    async fn close(mut self) {
        let _ = within("close", STEP, self.browser.close()).await;
        within("browser exit", STEP, self.browser.wait())
            .await
            .unwrap();
        self.handler.abort();
    }
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    within(js, STEP, page.evaluate(js))
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Polls `js` in the page until `pred` holds on its value.
async fn wait_page<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    page: &Page,
    js: &str,
    limit: Duration,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let v: T = eval(page, js).await;
        if pred(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; last {v:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a `data:image/png;base64,…` URL's QR code says.
fn decode_data_url(url: &str) -> String {
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .unwrap_or_else(|| panic!("not a PNG data URL: {url:.40}"));
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_luma8();
    let (w, h) = img.dimensions();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
            img.get_pixel(x as u32, y as u32).0[0]
        });
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

const QR_SRC: &str = "document.querySelector('#slot-1 img.qr').getAttribute('src') || ''";

/// Waits until the page shows the QR code of the session's current payload; returns it.
async fn page_shows_current_qr(t: &TestApp, page: &Page, user: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + LAUNCH;
    loop {
        let src: String = eval(page, QR_SRC).await;
        let src = Some(src).filter(|s| !s.is_empty());
        let status = t.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
        let current = status.json["qr"]["payload"].as_str().map(str::to_owned);
        if let (Some(src), Some(current)) = (src, current) {
            let shown = decode_data_url(&src);
            if shown == current && Some(shown.as_str()) != not {
                return shown;
            }
        }
        if Instant::now() > deadline {
            panic!("the page never showed the current QR (not {not:?}); last status {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn console_app() -> TestApp {
    spawn_app(
        StandInOptions {
            rotation: Duration::from_millis(1500),
            rotations: 40,
        },
        &[],
    )
    .await
}

#[actix_web::test]
async fn the_console_shows_a_live_qr_and_then_the_number() {
    let t = console_app().await;
    console_flow(&t, &t.url(""), uuid_like(0xc0)).await;
}

/// The shipped nginx site in front of the daemon must not break the console (a second
/// Content-Security-Policy of its own would be enforced too and block the script and the QR
/// images).
#[actix_web::test]
async fn the_console_works_through_the_shipped_nginx_site() {
    let t = console_app().await;
    let proxy = nginx::Nginx::start(t.port);
    console_flow(&t, &proxy.base(), uuid_like(0xc1)).await;
}

/// Operates the console loaded from `base` (the app, or a proxy in front of it).
async fn console_flow(t: &TestApp, base: &str, user: String) {
    // The page and its assets: no auth, a strict CSP (no inline script), embedded.
    let page_reply = reqwest::get(t.url("/")).await.unwrap();
    assert_eq!(page_reply.status(), 200);
    let csp = page_reply.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("img-src 'self' data:"));
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = page_reply.text().await.unwrap();
    assert!(html.contains("<script src=\"/console.js\""));
    assert!(!html.contains("<script>") && !html.contains(" style="));

    let operator = Operator::launch(base.starts_with("https://")).await;
    let page = within(
        "open /",
        STEP,
        operator.browser.new_page(format!("{base}/")),
    )
    .await
    .unwrap();
    wait_page(
        &page,
        "document.body.dataset.ready === 'true' && document.querySelectorAll('.slot').length",
        STEP,
        "the console's slots",
        |n: &serde_json::Value| n == 10,
    )
    .await;

    within("type", STEP, async {
        page.find_element("#token")
            .await?
            .click()
            .await?
            .type_str(SERVICE_TOKEN)
            .await?;
        page.find_element("#user")
            .await?
            .click()
            .await?
            .type_str(&user)
            .await?;
        page.find_element("#slot-1 .start").await?.click().await?;
        Ok::<_, CdpError>(())
    })
    .await
    .unwrap();

    // The QR appears, and follows the rotation.
    let first = page_shows_current_qr(t, &page, &user, None).await;
    let second = page_shows_current_qr(t, &page, &user, Some(&first)).await;
    assert_ne!(first, second);
    let state: String = eval(
        &page,
        "document.querySelector('#slot-1 .state').textContent",
    )
    .await;
    assert_eq!(state, "qr");

    // Scanned: the slot shows the number (retry when the payload rotated under us).
    let deadline = Instant::now() + STEP;
    loop {
        let status = t.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN).await;
        let payload = status.json["qr"]["payload"].as_str().unwrap_or_default();
        if t.standin.scan(payload, PHONE).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "could not scan: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_page(
        &page,
        "document.querySelector('#slot-1 .number').textContent + ' ' + document.querySelector('#slot-1 .state').textContent",
        LAUNCH,
        "the number on the page",
        |s: &String| s == &format!("+{PHONE} connected"),
    )
    .await;
    let qr_hidden: bool = eval(&page, "document.querySelector('#slot-1 img.qr').hidden").await;
    assert!(qr_hidden);

    // Messages: an incoming one shows in the slot; one typed in the slot's form is sent.
    t.standin
        .incoming(PHONE, "4917600000042", "Hello console")
        .unwrap();
    wait_page(
        &page,
        "document.querySelector('#slot-1 .messages').textContent",
        STEP,
        "the message in the slot",
        |s: &String| s.contains("Hello console") && s.contains("4917600000042@c.us"),
    )
    .await;
    within("send from the page", STEP, async {
        page.find_element("#slot-1 form.send .to")
            .await?
            .click()
            .await?
            .type_str("4917600000042")
            .await?;
        page.find_element("#slot-1 form.send .text")
            .await?
            .click()
            .await?
            .type_str("Hi from the console")
            .await?;
        page.find_element("#slot-1 form.send button")
            .await?
            .click()
            .await?;
        Ok::<_, CdpError>(())
    })
    .await
    .unwrap();
    crate::support::harness::eventually(STEP, "the message sent", || async {
        t.standin
            .sent()
            .iter()
            .any(|m| m.body == "Hi from the console" && m.to == "4917600000042@c.us")
            .then_some(())
    })
    .await;

    // The token stayed out of every URL the page loaded (the open SSE stream, not listed
    // until it ends, went through a ticket).
    let urls: Vec<String> = eval(
        &page,
        "[location.href, ...performance.getEntriesByType('resource').map(e => e.name)]",
    )
    .await;
    assert!(urls.iter().any(|u| u.ends_with("/ticket")), "{urls:?}");
    assert!(urls.iter().all(|u| !u.contains(SERVICE_TOKEN)), "{urls:?}");
    let stored: String = eval(&page, "sessionStorage.getItem('wa-supervisor.token') || ''").await;
    assert_eq!(stored, SERVICE_TOKEN);

    // Stop from the page.
    within("stop", STEP, async {
        page.find_element("#slot-1 .stop").await?.click().await?;
        Ok::<_, CdpError>(())
    })
    .await
    .unwrap();
    t.wait_json(
        &format!("/api/status/{user}/1"),
        SERVICE_TOKEN,
        STEP,
        "stopped",
        |s| s["state"] == "stopped" && s["connectedNumber"] == PHONE,
    )
    .await;
    wait_page(
        &page,
        "document.querySelector('#slot-1 .state').textContent",
        STEP,
        "stopped on the page",
        |s: &String| s == "stopped",
    )
    .await;

    operator.close().await;
    t.assert_no_browsers_left().await;
}
