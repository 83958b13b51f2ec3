//! The WhatsApp Web page protocol: what the daemon reads from the page.
//!
//! Push first: a script injected into every document watches the DOM and `localStorage` and
//! reports each change of its snapshot through a CDP binding. A slow poll
//! ([`WaPage::observe`]) evaluates the same snapshot function as a safety net. Selectors and
//! storage keys come from [`PageConfig`].

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::emulation::SetUserAgentOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, NavigateParams,
};
use chromiumoxide::cdp::browser_protocol::target::SetAutoAttachParams;
use chromiumoxide::cdp::browser_protocol::{log as cdp_log, network, performance};
use chromiumoxide::cdp::js_protocol::runtime::{AddBindingParams, EventBindingCalled};
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::{Browser, Page};
use futures_util::StreamExt;
use serde::Deserialize;

use super::BrowserError;

/// Name of the CDP binding the injected script reports through.
const BINDING: &str = "__waSupervisorSignal";
/// Upper bound of every single CDP call (chromiumoxide's own 30 s cannot be changed).
pub const CDP_TIMEOUT: Duration = Duration::from_secs(10);

/// Selectors and keys of the page, from configuration (they change upstream).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageConfig {
    #[serde(skip)]
    pub url: String,
    pub qr_selector: String,
    pub reload_selector: String,
    pub linked_selector: String,
    pub wid_keys: Vec<String>,
    /// Text of the page WhatsApp Web shows a browser it refuses.
    pub unsupported_text: String,
}

/// What the page shows, reduced to what the session cares about.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Nothing recognisable yet (loading, splash screen).
    Loading,
    /// A QR code with this payload.
    Qr(String),
    /// The page stopped offering codes (its reload button is shown; WA-JS: `conn.qrcode_idle`).
    QrExpired,
    /// Linked; the phone number (digits).
    Connected(String),
    /// WA-JS is ready in the page (this version).
    BridgeReady { version: String },
    /// A code to link by phone number (new or rotated).
    PairingCode(String),
    /// Logged out on WhatsApp's side (from the phone, or a reason WhatsApp gives).
    LoggedOut { reason: Option<String> },
    /// WhatsApp Web asks for a newer browser.
    NeedsUpdate,
    /// WhatsApp Web refuses this browser: its "works with Google Chrome" page, no QR, no app
    /// (the page's words).
    Unsupported(String),
    /// The phone went offline or came back.
    Online(bool),
    /// A new message (received, or sent from the phone or by the daemon).
    Message(Box<crate::events::PageMessage>),
    /// Messages got further (WhatsApp Web's ack number).
    Ack { ack: i64, ids: Vec<String> },
    /// An earlier message got a reaction, was revoked or edited, or a poll got a vote.
    Change(crate::events::PageChange),
    /// WhatsApp finished handing over what arrived while the device was away.
    OfflineDeliveryEnd,
}

/// Which watcher saw it: the DOM signals (selectors and storage keys) or the WA-JS bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Source {
    #[serde(rename = "dom")]
    Dom,
    #[serde(rename = "wa-js")]
    Bridge,
}

/// Raw snapshot as the injected script reports it.
#[derive(Debug, Deserialize)]
struct Snapshot {
    qr: Option<String>,
    reload: bool,
    wid: Option<String>,
    linked: bool,
    /// The refusal's words, when the page shows neither a QR code nor the chats but says it.
    #[serde(default)]
    unsupported: Option<String>,
}

impl Snapshot {
    fn observation(self) -> Observation {
        if let Some(words) = self.unsupported {
            return Observation::Unsupported(words);
        }
        match (self.linked, self.wid.as_deref().and_then(number_from_wid)) {
            (true, Some(number)) => Observation::Connected(number),
            _ if self.reload => Observation::QrExpired,
            _ => match self.qr {
                Some(qr) if !qr.is_empty() => Observation::Qr(qr),
                _ => Observation::Loading,
            },
        }
    }
}

/// `"4915112345678:7@c.us"` (JSON-encoded, as stored) or `4915112345678@c.us` → `4915112345678`.
pub fn number_from_wid(raw: &str) -> Option<String> {
    let wid = serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned());
    let user = wid.split('@').next()?;
    let digits = user.split(':').next()?;
    let plausible = (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    plausible.then(|| digits.to_owned())
}

/// The snapshot function, shared by the injected script and the poll.
const SNAPSHOT_FN: &str = r#"function (cfg) {
  const el = document.querySelector(cfg.qrSelector);
  let wid = null;
  try {
    for (const k of cfg.widKeys) { const v = localStorage.getItem(k); if (v) { wid = v; break; } }
  } catch (e) {}
  const linked = !!document.querySelector(cfg.linkedSelector);
  // Only a page with neither a QR code nor the chats is read for the refusal (no cost while linked).
  let unsupported = null;
  if (!el && !linked && document.body) {
    // innerText: what is shown (not the text of scripts).
    const text = document.body.innerText || "";
    const at = text.indexOf(cfg.unsupportedText);
    if (at >= 0) unsupported = text.slice(at, at + 120).split("\n")[0].trim();
  }
  return JSON.stringify({
    qr: el ? el.getAttribute("data-ref") : null,
    reload: !!document.querySelector(cfg.reloadSelector),
    wid: wid,
    linked: linked,
    unsupported: unsupported,
  });
}"#;

fn init_script(cfg: &PageConfig) -> String {
    let cfg_json = serde_json::to_string(cfg).expect("config serializes");
    format!(
        r#"(() => {{
  const cfg = {cfg_json};
  const snapshot = {SNAPSHOT_FN};
  let last = null, pending = false;
  const report = () => {{
    pending = false;
    const s = snapshot(cfg);
    if (s !== last && typeof window.{BINDING} === "function") {{ last = s; window.{BINDING}(s); }}
  }};
  const soon = () => {{ if (!pending) {{ pending = true; setTimeout(report, 25); }} }};
  new MutationObserver(soon).observe(document, {{ subtree: true, childList: true, attributes: true }});
  // localStorage writes fire no event in their own document; re-check now and then.
  setInterval(report, 1000);
  soon();
}})();"#
    )
}

/// A connected browser with the WhatsApp page open and watched by both watchers: the DOM one
/// always, the bridge once WA-JS is ready (when it was injected at all).
pub struct WaPage {
    browser: Browser,
    probe: PageProbe,
    handler: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
}

impl WaPage {
    /// Connects to the browser at `ws_url`, opens the page and reports every change to `on_change`.
    pub async fn open(
        ws_url: &str,
        cfg: PageConfig,
        wa_js: Option<std::sync::Arc<str>>,
        log_key: String,
        on_change: super::ObservationSink,
    ) -> Result<WaPage, BrowserError> {
        let config = HandlerConfig {
            request_timeout: CDP_TIMEOUT,
            // The window size comes from the command line; chromiumoxide's default viewport
            // would also turn on touch emulation and cost two round trips before the page is usable.
            viewport: None,
            ..HandlerConfig::default()
        };
        let (browser, mut handler) =
            timed("connect", Browser::connect_with_config(ws_url, config)).await?;
        let handler_key = log_key.clone();
        let handler = tokio::spawn(async move {
            // Leave on the first real error (the socket closes when the browser dies): a handler
            // that keeps polling a dead socket makes every later call hang, one that stops
            // makes them fail at once.
            while let Some(event) = handler.next().await {
                match event {
                    Ok(()) | Err(CdpError::InvalidMessage(..)) => {}
                    Err(e) => {
                        log::debug!("{handler_key} devtools connection ended: {e}");
                        break;
                    }
                }
            }
        });

        let page = initial_page(&browser).await?;
        // Subscribe before adding the binding, or the first calls are lost.
        let mut calls = timed(
            "event_listener",
            page.event_listener::<EventBindingCalled>(),
        )
        .await?;
        // Everything the page needs before its navigation, sent at once (one round trip, not
        // ten; the page answers in order): the binding; the scripts, registered before
        // navigation because WhatsApp Web's CSP blocks script tags, not these — WA-JS first, then
        // the bridge on it, then the DOM watcher; chromiumoxide's Network, Log and Performance
        // domains off (a session reads none of their events, and WhatsApp Web's traffic would
        // wake the daemon for each request, frame and console line); and the user agent, because
        // headless Chromium says "HeadlessChrome" in it (and the shell in its client hint
        // brands), which the site refuses (docs/browser-engines.md).
        let agent = user_agent(&timed("version", browser.version()).await?.user_agent);
        let scripts = wa_js
            .map(|wa_js| vec![wa_js.to_string(), super::bridge::script(BINDING)])
            .unwrap_or_default()
            .into_iter()
            .chain([init_script(&cfg)]);
        let scripts = futures_util::future::try_join_all(scripts.map(|source| {
            timed(
                "addScriptToEvaluateOnNewDocument",
                page.execute(AddScriptToEvaluateOnNewDocumentParams::new(source)),
            )
        }));
        futures_util::try_join!(
            timed("addBinding", page.execute(AddBindingParams::new(BINDING))),
            scripts,
            timed(
                "Network.disable",
                page.execute(network::DisableParams::default()),
            ),
            timed(
                "Log.disable",
                page.execute(cdp_log::DisableParams::default()),
            ),
            timed(
                "Performance.disable",
                page.execute(performance::DisableParams::default()),
            ),
            timed(
                "userAgent",
                page.execute(SetUserAgentOverrideParams::new(agent)),
            ),
            // chromiumoxide attaches to every worker of the page paused (`waitForDebuggerOnStart`),
            // resumes it and detaches at once; the resume is lost now and then and the worker stays
            // paused — a service worker's `register()` then never settles (seen in half the runs;
            // WhatsApp Web runs on its service worker). The session drives no worker: none attached.
            timed(
                "Target.setAutoAttach",
                page.execute(SetAutoAttachParams::new(false, false)),
            ),
        )?;
        let watcher = tokio::spawn(async move {
            while let Some(call) = calls.next().await {
                if call.name != BINDING {
                    continue;
                }
                if let Ok(signal) = serde_json::from_str::<super::bridge::Signal>(&call.payload) {
                    on_change(Source::Bridge, signal.observation());
                    continue;
                }
                match serde_json::from_str::<Snapshot>(&call.payload) {
                    Ok(s) => on_change(Source::Dom, s.observation()),
                    Err(e) => log::warn!("{log_key} unreadable page signal: {e}"),
                }
            }
        });
        // Navigate without waiting for the load: the signals say when the page is ready. The
        // answer comes once the navigation committed or failed: a page that cannot be loaded at
        // all (DNS, refused, proxy) is reported now, not by the page-ready timeout.
        let navigated = timed(
            "navigate",
            page.execute(NavigateParams::new(cfg.url.clone())),
        )
        .await?;
        if let Some(error) = navigated.result.error_text.clone() {
            return Err(BrowserError::Navigation {
                url: cfg.url.clone(),
                error,
            });
        }
        Ok(WaPage {
            browser,
            probe: PageProbe {
                page,
                cfg,
                commands: Default::default(),
            },
            handler,
            watcher,
        })
    }

    /// A cheap handle for reading and clicking the page from other tasks.
    pub fn probe(&self) -> PageProbe {
        self.probe.clone()
    }

    /// Asks the browser to close (it flushes the profile); the caller waits for the process.
    pub async fn close(mut self) {
        if let Err(e) = timed("close", self.browser.close()).await {
            log::debug!("browser close: {}", crate::chain(&e));
        }
        self.watcher.abort();
        self.handler.abort();
    }
}

/// The tab Chromium opens at start (its renderer starts while we connect), or a new one when it
/// does not show up within [`INITIAL_PAGE_WAIT`].
async fn initial_page(browser: &Browser) -> Result<Page, BrowserError> {
    let deadline = tokio::time::Instant::now() + INITIAL_PAGE_WAIT;
    while tokio::time::Instant::now() < deadline {
        let pages = timed("pages", browser.pages()).await?;
        if let Some(page) = pages.into_iter().next() {
            return Ok(page);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    timed("new_page", browser.new_page("about:blank")).await
}

/// The user agent a session's page gets: the browser's own, as a desktop Chromium of the same
/// major version says it (`Chrome/156.0.0.0`; the shell says `HeadlessChrome/156.0.8078.114`,
/// the new headless mode `HeadlessChrome/156.0.0.0`). Overriding it also drops the client hint
/// brands, where the shell names `HeadlessChrome` too.
pub fn user_agent(raw: &str) -> String {
    raw.split(' ')
        .map(|token| match token.strip_prefix("HeadlessChrome/") {
            Some(version) => {
                let major = version.split('.').next().unwrap_or(version);
                format!("Chrome/{major}.0.0.0")
            }
            None => token.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long to look for Chromium's first tab before opening one.
const INITIAL_PAGE_WAIT: Duration = Duration::from_secs(3);

/// The open page, shareable: the poll, the reload click and the commands run beside the actor.
#[derive(Clone)]
pub struct PageProbe {
    page: Page,
    cfg: PageConfig,
    /// One command at a time per page (WA-JS calls must not interleave).
    commands: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// The longest a WA-JS command may take (linking codes and logouts talk to WhatsApp's servers).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

impl PageProbe {
    /// Reads the page now (the safety-net poll) as the given watcher sees it.
    pub async fn observe(&self, source: Source) -> Result<Observation, BrowserError> {
        let unreadable = |source| BrowserError::Unreadable {
            what: "the snapshot",
            source,
        };
        match source {
            Source::Dom => {
                let cfg = serde_json::to_string(&self.cfg).expect("config serializes");
                let expr = format!("({SNAPSHOT_FN})({cfg})");
                let result = timed("evaluate", self.page.evaluate(expr)).await?;
                let text: String = result.into_value().map_err(unreadable)?;
                let snapshot: Snapshot = serde_json::from_str(&text).map_err(unreadable)?;
                Ok(snapshot.observation())
            }
            Source::Bridge => {
                let expr = super::bridge::snapshot_expression();
                let result = timed("evaluate", self.page.evaluate_expression(expr)).await?;
                let text: Option<String> = result.into_value().map_err(unreadable)?;
                match text {
                    Some(text) => Ok(serde_json::from_str::<super::bridge::Signal>(&text)
                        .map_err(unreadable)?
                        .observation()),
                    None => Ok(Observation::Loading),
                }
            }
        }
    }

    /// Runs a WA-JS command, one at a time per page, within [`COMMAND_TIMEOUT`].
    pub async fn command(
        &self,
        command: super::bridge::Command,
    ) -> Result<serde_json::Value, BrowserError> {
        let what = command.name();
        if command == super::bridge::Command::CollectGarbage {
            let gc =
                chromiumoxide::cdp::js_protocol::heap_profiler::CollectGarbageParams::default();
            timed(what, self.page.execute(gc)).await?;
            return Ok(serde_json::Value::Null);
        }
        let _one_at_a_time = self.commands.lock().await;
        let run = self.page.evaluate_expression(command.expression());
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
            Ok(Ok(v)) => v,
            Ok(Err(source)) => return Err(BrowserError::Cdp { what, source }),
            Err(_) => return Err(BrowserError::Timeout(what)),
        };
        let reply: serde_json::Value = result
            .into_value()
            .map_err(|source| BrowserError::Unreadable { what, source })?;
        match (reply.get("ok"), reply.get("error")) {
            (_, Some(error)) => Err(BrowserError::Command {
                what,
                message: error.as_str().unwrap_or("failed").to_owned(),
            }),
            (Some(ok), None) => Ok(ok.clone()),
            (None, None) => Ok(serde_json::Value::Null),
        }
    }

    /// Clicks the page's "reload QR code" button.
    pub async fn click_reload(&self) -> Result<(), BrowserError> {
        let sel = serde_json::to_string(&self.cfg.reload_selector).expect("string serializes");
        let expr = format!("(() => {{ const b = document.querySelector({sel}); if (b) b.click(); return !!b; }})()");
        timed("click", self.page.evaluate(expr)).await?;
        Ok(())
    }
}

impl Drop for WaPage {
    fn drop(&mut self) {
        self.watcher.abort();
        self.handler.abort();
    }
}

async fn timed<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, CdpError>>,
) -> Result<T, BrowserError> {
    match tokio::time::timeout(CDP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(BrowserError::Cdp { what, source }),
        Err(_) => Err(BrowserError::Timeout(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_from_both_wid_forms() {
        assert_eq!(
            number_from_wid("\"4915112345678:7@c.us\"").as_deref(),
            Some("4915112345678")
        );
        assert_eq!(
            number_from_wid("\"4915112345678@c.us\"").as_deref(),
            Some("4915112345678")
        );
        assert_eq!(
            number_from_wid("4915112345678@c.us").as_deref(),
            Some("4915112345678")
        );
        for bad in ["", "\"\"", "\"abc@c.us\"", "\"12@c.us\"", "null"] {
            assert_eq!(number_from_wid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_user_agent_is_a_desktop_chromium_s() {
        let want = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        for raw in [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.8078.114 Safari/537.36",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36",
            want,
        ] {
            assert_eq!(user_agent(raw), want);
        }
    }

    #[test]
    fn snapshot_precedence() {
        let s = |qr: Option<&str>, reload, wid: Option<&str>, linked| Snapshot {
            qr: qr.map(String::from),
            reload,
            wid: wid.map(String::from),
            linked,
            unsupported: None,
        };
        let wid = Some("\"4915112345678:7@c.us\"");
        assert_eq!(
            s(None, false, wid, true).observation(),
            Observation::Connected("4915112345678".into())
        );
        // Storage without the chat list: still loading, not connected.
        assert_eq!(
            s(None, false, wid, false).observation(),
            Observation::Loading
        );
        assert_eq!(
            s(Some("2@x"), true, None, false).observation(),
            Observation::QrExpired
        );
        assert_eq!(
            s(Some("2@x"), false, None, false).observation(),
            Observation::Qr("2@x".into())
        );
        assert_eq!(
            s(Some(""), false, None, false).observation(),
            Observation::Loading
        );
        let refused = Snapshot {
            unsupported: Some("WhatsApp works with Google Chrome 60+".into()),
            ..s(None, false, None, false)
        };
        assert_eq!(
            refused.observation(),
            Observation::Unsupported("WhatsApp works with Google Chrome 60+".into())
        );
    }
}
