//! The console at `/` in a real headless Chromium, against the running app and the stand-in
//! WhatsApp page: paste a token, generate a QR, watch it rotate live, see the number once scanned;
//! and, on real screenshots (`target/console-screenshots/`), every state read at a glance.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::harness::{spawn_app, uuid_like, TestApp, SERVICE_TOKEN};
use crate::support::nginx;
use crate::support::standin::StandInOptions;
use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
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
        Operator::launch_with(behind_tls, Viewport::default()).await
    }

    async fn launch_with(behind_tls: bool, viewport: Viewport) -> Operator {
        let profile = tempfile::tempdir().unwrap();
        let mut config = BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .window_size(viewport.width, viewport.height)
            .viewport(viewport)
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

/// Polls `js` in the page until `pred` holds on its value (`Ok`), or `limit` passed (`Err` with
/// the last value).
async fn poll_page<T: serde::de::DeserializeOwned>(
    page: &Page,
    js: &str,
    limit: Duration,
    mut pred: impl FnMut(&T) -> bool,
) -> Result<T, T> {
    let deadline = Instant::now() + limit;
    loop {
        let v: T = eval(page, js).await;
        if pred(&v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reloads the console and shows `user` again (what it shows then comes from stored events).
async fn reopen(page: &Page, user: &str) {
    within("reload", STEP, page.reload()).await.unwrap();
    wait_page(
        page,
        "document.body.dataset.ready === 'true'",
        STEP,
        "the console again",
        |ready: &bool| *ready,
    )
    .await;
    within("show the user again", STEP, async {
        page.find_element("#user")
            .await?
            .click()
            .await?
            .type_str(user)
            .await?;
        page.find_element("#open").await?.click().await?;
        Ok::<_, CdpError>(())
    })
    .await
    .unwrap();
}

/// Polls `js` in the page until `pred` holds on its value.
async fn wait_page<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    page: &Page,
    js: &str,
    limit: Duration,
    what: &str,
    pred: impl FnMut(&T) -> bool,
) -> T {
    poll_page(page, js, limit, pred)
        .await
        .unwrap_or_else(|v| panic!("timed out waiting for {what}; last {v:?}"))
}

/// What a `data:image/png;base64,…` URL's QR code says.
/// Waits for the console's slots, types the service token and `user`, then clicks `then`.
async fn sign_in(page: &Page, user: &str, then: &str) {
    wait_page(
        page,
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
            .type_str(user)
            .await?;
        page.find_element(then).await?.click().await?;
        Ok::<_, CdpError>(())
    })
    .await
    .unwrap();
}

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
            ..Default::default()
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
    sign_in(&page, &user, "#slot-1 .start").await;

    // The QR appears, and follows the rotation.
    let first = page_shows_current_qr(t, &page, &user, None).await;
    let second = page_shows_current_qr(t, &page, &user, Some(&first)).await;
    assert_ne!(first, second);
    let state: (String, String) = eval(
        &page,
        "[document.querySelector('#slot-1').dataset.state, \
          document.querySelector('#slot-1 .state').textContent]",
    )
    .await;
    assert_eq!(state, ("qr".into(), "Waiting for scan".into()));

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
        "document.querySelector('#slot-1 .state').textContent",
        LAUNCH,
        "the number on the page",
        |s: &String| s == &format!("Connected as +{PHONE}"),
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
        |s: &String| s.contains("Hello console") && s.contains("From +4917600000042"),
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
    // It shows in the slot as sent (and the slot's layout settles before the next click).
    wait_page(
        &page,
        "document.querySelector('#slot-1 .messages').textContent",
        STEP,
        "the sent message in the slot",
        |s: &String| s.contains("To +4917600000042") && s.contains("Hi from the console"),
    )
    .await;
    // A file from the page: a PNG goes as an image with its caption, and shows as sent.
    let png: Vec<u8> = {
        let img =
            image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let bytes = serde_json::to_string(&png).unwrap();
    let _: bool = eval(
        &page,
        &format!(
            "(() => {{ const dt = new DataTransfer(); \
             dt.items.add(new File([new Uint8Array({bytes})], 'menu.png', {{ type: 'image/png' }})); \
             document.querySelector('#slot-1 form.send .file').files = dt.files; \
             document.querySelector('#slot-1 form.send .text').value = 'Our menu'; return true; }})()"
        ),
    )
    .await;
    within("send a file from the page", STEP, async {
        page.find_element("#slot-1 form.send button")
            .await?
            .click()
            .await?;
        Ok::<_, CdpError>(())
    })
    .await
    .unwrap();
    let image = crate::support::harness::eventually(STEP, "the image sent", || async {
        t.standin
            .sent()
            .into_iter()
            .find(|m| m.kind == "image" && m.body == "Our menu")
    })
    .await;
    assert_eq!(image.media_bytes(&t.standin).unwrap(), png);
    assert_eq!(image.extra["media"]["filename"], "menu.png");
    wait_page(
        &page,
        "document.querySelector('#slot-1 .messages').textContent",
        STEP,
        "the sent image in the slot",
        |s: &String| s.contains("[image] Our menu"),
    )
    .await;
    // The sent image shows too, once its event comes with the stored media (the slot's layout
    // then settles before the next click).
    wait_page(
        &page,
        "(() => { const i = document.querySelector('#slot-1 .messages img.media'); \
         return !!(i && !i.hidden && i.naturalWidth === 16); })()",
        STEP,
        "the sent image shown in the slot",
        |shown: &bool| *shown,
    )
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
        |s: &String| s == "Stopped",
    )
    .await;

    operator.close().await;
    t.assert_no_browsers_left().await;
}

/// Where the screenshot test leaves its pictures for a human to look at:
/// `target/console-screenshots/<state>.png`.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots")
}

/// An opaque colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Rgb([u8; 3]);

impl Rgb {
    /// A colour as `getComputedStyle` gives it: `rgb(r, g, b)`, or `rgba(…)` (opaque only).
    fn css(s: &str) -> Option<Rgb> {
        let inner = s
            .strip_prefix("rgba(")
            .or_else(|| s.strip_prefix("rgb("))?
            .strip_suffix(')')?;
        let parts: Vec<f64> = inner
            .split(',')
            .map(|p| p.trim().parse().ok())
            .collect::<Option<_>>()?;
        match parts.as_slice() {
            [r, g, b] => Some(Rgb([*r as u8, *g as u8, *b as u8])),
            [r, g, b, a] if *a >= 1.0 => Some(Rgb([*r as u8, *g as u8, *b as u8])),
            _ => None,
        }
    }

    fn distance(self, other: Rgb) -> u32 {
        (0..3)
            .map(|i| u32::from(self.0[i].abs_diff(other.0[i])))
            .sum()
    }

    /// WCAG 2 relative luminance.
    fn luminance(self) -> f64 {
        let linear = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * linear(self.0[0]) + 0.7152 * linear(self.0[1]) + 0.0722 * linear(self.0[2])
    }

    /// WCAG 2 contrast ratio (1 to 21; 4.5 is AA for normal text).
    fn contrast(self, other: Rgb) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        (a.max(b) + 0.05) / (a.min(b) + 0.05)
    }
}

/// What the screenshot test found wrong, reported together at the end: one run shows every
/// problem (and every screenshot gets taken).
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("console: {what}");
            self.0.push(what);
        }
    }
}

/// Slot 1's state badge, as the page lays it out.
#[derive(Debug, serde::Deserialize)]
struct Badge {
    text: String,
    /// Inside a live region (a screen reader announces a change).
    live: bool,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    dpr: f64,
    vw: f64,
    vh: f64,
    bg: String,
    fg: String,
    card: String,
}

const BADGE: &str = r#"(() => {
  const b = document.querySelector('#slot-1 .state');
  const r = b.getBoundingClientRect();
  const style = getComputedStyle(b);
  return {
    text: b.textContent.replace(/\s+/g, ' ').trim(),
    live: !!b.closest('[aria-live], [role=status]'),
    x: r.left, y: r.top, w: r.width, h: r.height,
    dpr: window.devicePixelRatio, vw: window.innerWidth, vh: window.innerHeight,
    bg: style.backgroundColor, fg: style.color,
    card: getComputedStyle(b.closest('.slot')).backgroundColor,
  };
})()"#;

/// Every image on screen that shows no picture (a broken-image icon, or an empty box).
const BROKEN_IMAGES: &str = r#"[...document.images]
  .filter((i) => i.checkVisibility({ visibilityProperty: true, opacityProperty: true }))
  .filter((i) => !(i.complete && i.naturalWidth > 0))
  .map((i) => (i.closest('.slot') || document.body).id + ' img.' + i.className
    + ' src=' + (i.getAttribute('src') || '(none)').slice(0, 24))"#;

/// Elements marked `hidden` that a style shows anyway (e.g. the send form of a slot not linked).
const SHOWN_HIDDEN: &str = r#"[...document.querySelectorAll('[hidden]')]
  .filter((e) => e.checkVisibility())
  .map((e) => (e.closest('.slot') || document.body).id + ' ' + e.tagName.toLowerCase()
    + (e.className ? '.' + e.className : ''))
  .slice(0, 12)"#;

/// Looks at the console in `state`: no broken image, the badge's `word`, its colour on screen
/// (and its text's contrast); saves the screenshot as `<state>.png`. Returns the badge's colour
/// as the screenshot shows it.
async fn look(page: &Page, state: &str, word: &str, found: &mut Findings) -> Rgb {
    let broken: Vec<String> = eval(page, BROKEN_IMAGES).await;
    found.check(broken.is_empty(), || {
        format!("{state}: images shown without a picture: {broken:?}")
    });
    let shown_hidden: Vec<String> = eval(page, SHOWN_HIDDEN).await;
    found.check(shown_hidden.is_empty(), || {
        format!("{state}: elements marked hidden are shown: {shown_hidden:?}")
    });
    let b: Badge = eval(page, BADGE).await;
    found.check(b.text == word, || {
        format!("{state}: the badge says {:?}, not {word:?}", b.text)
    });
    found.check(b.live, || {
        format!("{state}: the badge is in no live region")
    });
    let (bg, fg, card) = (Rgb::css(&b.bg), Rgb::css(&b.fg), Rgb::css(&b.card));
    match (bg, fg, card) {
        (Some(bg), Some(fg), Some(card)) => {
            found.check(bg.contrast(fg) >= 4.5, || {
                format!(
                    "{state}: badge text {} on {} has a contrast of {:.2} (< 4.5)",
                    b.fg,
                    b.bg,
                    bg.contrast(fg)
                )
            });
            found.check(bg.distance(card) >= 60, || {
                format!(
                    "{state}: the badge ({}) hardly stands out from its card ({})",
                    b.bg, b.card
                )
            });
        }
        _ => found.check(false, || {
            format!(
                "{state}: badge colours not opaque: {} on {} in {}",
                b.fg, b.bg, b.card
            )
        }),
    }

    let png = within(
        "screenshot",
        STEP,
        page.screenshot(
            ScreenshotParams::builder()
                .format(CaptureScreenshotFormat::Png)
                .build(),
        ),
    )
    .await
    .unwrap();
    let path = screenshot_dir().join(format!("{state}.png"));
    std::fs::write(&path, &png).unwrap();
    let shot = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    let px = |css: f64| (css * b.dpr).round() as u32;
    assert_eq!(
        shot.dimensions(),
        (px(b.vw), px(b.vh)),
        "{}: the screenshot is the viewport at {}x",
        path.display(),
        b.dpr
    );
    let colours: std::collections::HashSet<[u8; 3]> =
        shot.pixels().step_by(7).map(|p| p.0).collect();
    assert!(
        colours.len() > 16,
        "{}: a blank screenshot ({} colours)",
        path.display(),
        colours.len()
    );

    // The badge's pixels (inset from its rounded corners): mostly its background colour.
    assert!(
        b.w > 8.0
            && b.h > 8.0
            && b.x >= 0.0
            && b.y >= 0.0
            && b.x + b.w <= b.vw
            && b.y + b.h <= b.vh,
        "{state}: the badge is not on screen: {b:?}"
    );
    let inset = 3.0;
    let mut counts = std::collections::HashMap::<[u8; 3], usize>::new();
    for y in px(b.y + inset)..px(b.y + b.h - inset) {
        for x in px(b.x + inset)..px(b.x + b.w - inset) {
            *counts.entry(shot.get_pixel(x, y).0).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    let (shown, n) = counts.into_iter().max_by_key(|&(_, n)| n).unwrap();
    let shown = Rgb(shown);
    if let Some(bg) = bg {
        found.check(shown.distance(bg) <= 12 && n * 2 >= total, || {
            format!(
                "{state}: on screen the badge is mostly {shown:?} ({n} of {total} pixels), not its \
                 colour {bg:?}"
            )
        });
    }
    shown
}

/// A message in slot 1's list of last messages.
#[derive(Debug, serde::Deserialize)]
struct ListedMessage {
    out: bool,
    text: String,
    time: String,
    ack: String,
    visible: bool,
}

const LISTED_MESSAGES: &str = r#"[...document.querySelectorAll('#slot-1 .messages li')].map((li) => ({
  out: li.classList.contains('out'),
  text: li.textContent.replace(/\s+/g, ' ').trim(),
  time: ((li.querySelector('time') || {}).textContent || '').trim(),
  ack: li.dataset.ack || '',
  visible: li.checkVisibility(),
}))"#;

/// `HH:MM`, after the day when not today.
fn is_clock_time(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(b) = b.get(b.len().saturating_sub(5)..).filter(|b| b.len() == 5) else {
        return false;
    };
    b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit())
}

/// A pairing code's letters and digits, as entered on the phone.
fn code_letters(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_uppercase()
}

async fn post_json(t: &TestApp, path: &str, body: serde_json::Value) -> serde_json::Value {
    let res = reqwest::Client::new()
        .post(t.url(path))
        .bearer_auth(SERVICE_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let json: serde_json::Value = res.json().await.unwrap();
    assert!(status == 201 || status == 202, "{path}: {status} {json}");
    json
}

const SLOT_STATE: &str = "document.querySelector('#slot-1').dataset.state || ''";

/// The finish a user expects, in a real Chromium and on real screenshots: through every state a
/// slot goes through (nothing started, waiting for a scan, a pairing code, connected with its last
/// messages, stopped) the badge says the state in words and shows it in a colour of its own,
/// no image is ever shown broken, the pairing code is large and grouped, the last messages
/// readable. The screenshots stay in `target/console-screenshots/` for a human to look at.
#[actix_web::test]
async fn the_console_reads_at_a_glance_in_every_state() {
    const CONTACT: &str = "4917600000042";
    const INCOMING: &str = "Hello, is slot one there?";
    const OUTGOING: &str = "Yes, answering from slot one";
    // Slow rotation: the screenshots show one QR code and one pairing code.
    let t = spawn_app(
        StandInOptions {
            rotation: Duration::from_secs(20),
            rotations: 6,
            ..Default::default()
        },
        &[],
    )
    .await;
    let user = uuid_like(0xc2);
    std::fs::create_dir_all(screenshot_dir()).unwrap();
    let mut found = Findings::default();
    let mut colours = Vec::new();

    let operator = Operator::launch_with(
        false,
        Viewport {
            width: 1280,
            height: 900,
            device_scale_factor: Some(2.0),
            ..Viewport::default()
        },
    )
    .await;
    let page = within("open /", STEP, operator.browser.new_page(t.url("/")))
        .await
        .unwrap();
    sign_in(&page, &user, "#open").await;
    wait_page(
        &page,
        "document.querySelector('#status').textContent",
        STEP,
        "the user's slots loaded",
        |s: &String| s.starts_with("Live") || s.starts_with("Loaded"),
    )
    .await;

    // Nothing started: no QR code yet, and no broken image in its place.
    colours.push(("none", look(&page, "none", "Not started", &mut found).await));

    // Waiting for a scan: the QR code, loaded.
    within("generate a QR", STEP, async {
        page.find_element("#slot-1 .start").await?.click().await?;
        Ok::<_, CdpError>(())
    })
    .await
    .unwrap();
    page_shows_current_qr(&t, &page, &user, None).await;
    wait_page(&page, SLOT_STATE, STEP, "state qr", |s: &String| s == "qr").await;
    let (loaded, visible): (bool, bool) = poll_page(
        &page,
        "(() => { const i = document.querySelector('#slot-1 img.qr'); \
         return [i.complete && i.naturalWidth > 0, i.checkVisibility()]; })()",
        STEP / 4,
        |&(loaded, visible)| loaded && visible,
    )
    .await
    .unwrap_or_else(|v| v);
    found.check(loaded && visible, || {
        format!("qr: the QR image is not shown loaded (loaded {loaded}, visible {visible})")
    });
    colours.push((
        "qr",
        look(&page, "qr", "Waiting for scan", &mut found).await,
    ));

    // Linking by phone number instead: the code WhatsApp gave, as the phone expects it.
    let paired = post_json(
        &t,
        &format!("/api/pair/{user}/1"),
        serde_json::json!({ "phoneNumber": PHONE }),
    )
    .await;
    let code = match paired["pairingCode"].as_str() {
        Some(code) => code.to_owned(),
        None => t
            .wait_json(
                &format!("/api/status/{user}/1"),
                SERVICE_TOKEN,
                STEP,
                "a pairing code",
                |s| s["pairingCode"].is_string(),
            )
            .await["pairingCode"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    let shown: String = wait_page(
        &page,
        "document.querySelector('#slot-1').dataset.state === 'pairing' \
         ? document.querySelector('#slot-1 .code').textContent.trim() : ''",
        STEP,
        "the pairing code on the page",
        |s: &String| code_letters(s) == code_letters(&code),
    )
    .await;
    let letters = code_letters(&code);
    let grouped = format!("{}-{}", &letters[..4], &letters[4..]);
    found.check(shown == grouped, || {
        format!("pairing: the code reads {shown:?}, not {grouped:?}")
    });
    let (font, size, select): (String, f64, String) = eval(
        &page,
        "(() => { const s = getComputedStyle(document.querySelector('#slot-1 .code')); \
         return [s.fontFamily, parseFloat(s.fontSize), s.userSelect]; })()",
    )
    .await;
    found.check(font.contains("monospace") && size >= 24.0, || {
        format!("pairing: the code is set in {size}px {font}, not large and monospace")
    });
    found.check(select != "none", || {
        "pairing: the code cannot be selected".into()
    });
    colours.push((
        "pairing",
        look(&page, "pairing", "Enter code on the phone", &mut found).await,
    ));

    // Linked with the code; a contact writes, the session answers, the contact reads it.
    t.standin.enter_code(&code, PHONE).await.unwrap();
    wait_page(
        &page,
        SLOT_STATE,
        LAUNCH,
        "state connected",
        |s: &String| s == "connected",
    )
    .await;
    t.standin.incoming(PHONE, CONTACT, INCOMING).unwrap();
    let sent = post_json(
        &t,
        &format!("/api/messages/{user}/1"),
        serde_json::json!({ "to": CONTACT, "text": OUTGOING }),
    )
    .await;
    t.standin.read(PHONE, sent["id"].as_str().unwrap());
    wait_page(
        &page,
        "document.querySelector('#slot-1 .messages').textContent",
        STEP,
        "both messages in the slot",
        |s: &String| s.contains(INCOMING) && s.contains(OUTGOING),
    )
    .await;
    let listed = poll_page(
        &page,
        LISTED_MESSAGES,
        STEP / 2,
        |l: &Vec<ListedMessage>| l.iter().any(|m| m.out && m.ack == "read"),
    )
    .await
    .unwrap_or_else(|l| l);
    let incoming = listed.iter().find(|m| m.text.contains(INCOMING));
    found.check(
        incoming.is_some_and(|m| {
            !m.out && m.visible && m.text.contains(&format!("+{CONTACT}")) && is_clock_time(&m.time)
        }),
        || format!("connected: the incoming message does not read as such: {incoming:?}"),
    );
    let outgoing = listed.iter().find(|m| m.text.contains(OUTGOING));
    found.check(
        outgoing.is_some_and(|m| m.out && m.visible && is_clock_time(&m.time) && m.ack == "read"),
        || format!("connected: the sent message does not read as sent and read: {outgoing:?}"),
    );
    colours.push((
        "connected",
        look(
            &page,
            "connected",
            &format!("Connected as +{PHONE}"),
            &mut found,
        )
        .await,
    ));

    // Stopped (still linked).
    assert_eq!(t.stop(&user, 1).await, 200);
    wait_page(&page, SLOT_STATE, STEP, "state stopped", |s: &String| {
        s == "stopped"
    })
    .await;
    colours.push((
        "stopped",
        look(&page, "stopped", "Stopped", &mut found).await,
    ));

    // Opened again: the last messages (and how far the sent one got) come from the stored events.
    reopen(&page, &user).await;
    let reread = poll_page(
        &page,
        LISTED_MESSAGES,
        STEP / 2,
        |l: &Vec<ListedMessage>| {
            l.iter().any(|m| !m.out && m.text.contains(INCOMING))
                && l.iter()
                    .any(|m| m.out && m.text.contains(OUTGOING) && m.ack == "read")
        },
    )
    .await;
    found.check(reread.is_ok(), || {
        format!("reopened: the last messages are not listed as before: {reread:?}")
    });

    // A colour of its own for every state.
    for (i, (a, ca)) in colours.iter().enumerate() {
        for (b, cb) in &colours[i + 1..] {
            found.check(ca.distance(*cb) >= 60, || {
                format!("the badges of {a} ({ca:?}) and {b} ({cb:?}) look alike")
            });
        }
    }

    operator.close().await;
    t.assert_no_browsers_left().await;
    assert!(
        found.0.is_empty(),
        "the console does not read at a glance (screenshots in {}):\n- {}",
        screenshot_dir().display(),
        found.0.join("\n- ")
    );
}

/// A small real PNG (`w`×`h`).
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(11), (y as u8).wrapping_mul(13), 99])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Half a second of a 440 Hz tone: 8 kHz mono 16-bit PCM in a WAV file, which Chromium plays.
fn wav() -> Vec<u8> {
    const RATE: u32 = 8000;
    let samples: Vec<i16> = (0..RATE / 2)
        .map(|i| {
            let t = f64::from(i) / f64::from(RATE);
            ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
        })
        .collect();
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Slot 1's received image and voice note as the page shows them.
#[derive(Debug, serde::Deserialize)]
struct ShownMedia {
    /// The `<img>`: loaded, its natural width, visible, and its `src` scheme.
    img_loaded: bool,
    img_width: u32,
    img_visible: bool,
    img_src: String,
    /// The `<audio controls>`: its `src` scheme, its duration once its metadata loaded.
    audio_src: String,
    audio_controls: bool,
    audio_duration: f64,
    text: String,
}

const SHOWN_MEDIA: &str = r#"(() => {
  const img = document.querySelector('#slot-1 .messages li img.media');
  const audio = document.querySelector('#slot-1 .messages li audio.media');
  return {
    img_loaded: !!img && img.complete && img.naturalWidth > 0,
    img_width: img ? img.naturalWidth : 0,
    img_visible: !!img && img.checkVisibility(),
    img_src: img ? (img.getAttribute('src') || '').split(':')[0] : '',
    audio_src: audio ? (audio.getAttribute('src') || '').split(':')[0] : '',
    audio_controls: !!audio && audio.controls && audio.checkVisibility(),
    audio_duration: audio && audio.readyState >= 1 && Number.isFinite(audio.duration) ? audio.duration : 0,
    text: document.querySelector('#slot-1 .messages').textContent,
  };
})()"#;

/// Received media in the slot's last messages (docs/media.md): an image shows as the picture, a
/// voice note as a player, both from the bytes the console fetched with its own token (blob:
/// URLs its Content-Security-Policy allows, no signed link); a location, a contact and a poll
/// read as what they are. Again after a reload, from the stored events.
#[actix_web::test]
async fn the_console_shows_received_images_and_voice_notes() {
    const CONTACT: &str = "4917600000043";
    let t = spawn_app(
        StandInOptions {
            rotation: Duration::from_secs(60),
            ..Default::default()
        },
        &[],
    )
    .await;
    let user = uuid_like(0xc3);

    // The policy lets the page show blob: images and media, and nothing else new.
    let reply = reqwest::get(t.url("/")).await.unwrap();
    let csp = reply.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for want in [
        "default-src 'none'",
        "img-src 'self' data: blob:",
        "media-src blob:",
        "connect-src 'self'",
        "script-src 'self'",
    ] {
        assert!(directives.contains(&want), "{want}: {csp}");
    }

    t.link(&user, 1, PHONE).await;
    let operator = Operator::launch(false).await;
    let page = within("open /", STEP, operator.browser.new_page(t.url("/")))
        .await
        .unwrap();
    sign_in(&page, &user, "#open").await;
    wait_page(
        &page,
        "document.querySelector('#status').textContent",
        STEP,
        "the event stream",
        |s: &String| s.starts_with("Live"),
    )
    .await;

    let (w, h) = (24, 18);
    let photo = png(w, h);
    t.standin
        .incoming_media(
            PHONE,
            CONTACT,
            "image",
            photo,
            "image/png",
            None,
            Some("the view"),
        )
        .unwrap();
    t.standin
        .incoming_media(PHONE, CONTACT, "ptt", wav(), "audio/wav", None, None)
        .unwrap();
    t.standin
        .incoming_location(
            PHONE,
            CONTACT,
            52.516_3,
            13.377_7,
            Some("Brandenburger Tor"),
            Some("Pariser Platz, Berlin"),
        )
        .unwrap();
    t.standin
        .incoming_vcard(
            PHONE,
            CONTACT,
            "Erika Mustermann",
            "BEGIN:VCARD\nVERSION:3.0\nFN:Erika Mustermann\nTEL:+4917600000099\nEND:VCARD",
        )
        .unwrap();
    t.standin
        .incoming_poll(PHONE, CONTACT, "Lunch?", &["Pizza", "Sushi"], 1)
        .unwrap();

    let shown_as_expected = |m: &ShownMedia| {
        m.img_loaded
            && m.img_visible
            && m.img_src == "blob"
            && m.audio_src == "blob"
            && m.audio_controls
            && m.audio_duration > 0.0
            && m.text.contains("📊 Lunch?")
    };
    let shown: ShownMedia = wait_page(
        &page,
        SHOWN_MEDIA,
        STEP,
        "the image and the voice note in the slot",
        shown_as_expected,
    )
    .await;
    assert_eq!(shown.img_width, w, "{shown:?}");
    assert!(
        (shown.audio_duration - 0.5).abs() < 0.05,
        "the voice note's duration: {shown:?}"
    );
    for want in [
        "[image] the view",
        "[ptt]",
        "📍 Brandenburger Tor — Pariser Platz, Berlin",
        "👤 Erika Mustermann",
        "📊 Lunch?",
    ] {
        assert!(shown.text.contains(want), "{want}: {:?}", shown.text);
    }
    assert!(!shown.text.contains("BEGIN:VCARD"), "{:?}", shown.text);
    let broken: Vec<String> = eval(&page, BROKEN_IMAGES).await;
    assert!(broken.is_empty(), "{broken:?}");

    // Fetched with the console's token: no signed link, no token in any URL.
    let urls: Vec<String> = eval(
        &page,
        "performance.getEntriesByType('resource').map(e => e.name)",
    )
    .await;
    let media: Vec<&String> = urls.iter().filter(|u| u.contains("/api/media/")).collect();
    assert_eq!(media.len(), 2, "{urls:?}");
    assert!(
        media
            .iter()
            .all(|u| u.contains(&format!("/api/media/{user}/1/")) && !u.contains('?')),
        "{media:?}"
    );
    assert!(urls.iter().all(|u| !u.contains(SERVICE_TOKEN)), "{urls:?}");

    // Opened again: the same, from the stored events.
    reopen(&page, &user).await;
    let again: ShownMedia = wait_page(
        &page,
        SHOWN_MEDIA,
        STEP,
        "the image and the voice note after a reload",
        shown_as_expected,
    )
    .await;
    assert_eq!(again.img_width, w, "{again:?}");

    operator.close().await;
    t.stop(&user, 1).await;
    t.assert_no_browsers_left().await;
}
