//! The WhatsApp Web page protocol: what the daemon reads from the page.
//!
//! Push first: a script injected into every document watches the DOM and `localStorage` and
//! reports each change of its snapshot through a CDP binding. A slow poll
//! ([`WaPage::observe`]) evaluates the same snapshot function as a safety net. Selectors and
//! storage keys come from [`PageConfig`].

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::network::SetUserAgentOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, NavigateParams,
};
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
}

/// What the page shows, reduced to what the session cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Nothing recognisable yet (loading, splash screen).
    Loading,
    /// A QR code with this payload.
    Qr(String),
    /// The page stopped offering codes; its reload button is shown.
    QrExpired,
    /// Linked; the phone number (digits).
    Connected(String),
}

/// Raw snapshot as the injected script reports it.
#[derive(Debug, Deserialize)]
struct Snapshot {
    qr: Option<String>,
    reload: bool,
    wid: Option<String>,
    linked: bool,
}

impl Snapshot {
    fn observation(self) -> Observation {
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
  return JSON.stringify({
    qr: el ? el.getAttribute("data-ref") : null,
    reload: !!document.querySelector(cfg.reloadSelector),
    wid: wid,
    linked: !!document.querySelector(cfg.linkedSelector),
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

/// A connected browser with the WhatsApp page open and watched.
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
        log_key: String,
        on_change: super::ObservationSink,
    ) -> Result<WaPage, BrowserError> {
        let config = HandlerConfig {
            request_timeout: CDP_TIMEOUT,
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

        let page = timed("new_page", browser.new_page("about:blank")).await?;
        // Subscribe before adding the binding, or the first calls are lost.
        let mut calls = timed(
            "event_listener",
            page.event_listener::<EventBindingCalled>(),
        )
        .await?;
        timed("addBinding", page.execute(AddBindingParams::new(BINDING))).await?;
        timed(
            "addScript",
            page.execute(AddScriptToEvaluateOnNewDocumentParams::new(init_script(
                &cfg,
            ))),
        )
        .await?;
        // Headless Chromium says "HeadlessChrome" in its user agent; the site refuses that.
        let version = timed("version", browser.version()).await?;
        let agent = version.user_agent.replace("HeadlessChrome", "Chrome");
        timed(
            "userAgent",
            page.execute(SetUserAgentOverrideParams::new(agent)),
        )
        .await?;

        let watcher = tokio::spawn(async move {
            while let Some(call) = calls.next().await {
                if call.name != BINDING {
                    continue;
                }
                match serde_json::from_str::<Snapshot>(&call.payload) {
                    Ok(s) => on_change(s.observation()),
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
            probe: PageProbe { page, cfg },
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

/// The open page, shareable: the poll and the reload click run beside the actor.
#[derive(Clone)]
pub struct PageProbe {
    page: Page,
    cfg: PageConfig,
}

impl PageProbe {
    /// Reads the page now (the safety-net poll).
    pub async fn observe(&self) -> Result<Observation, BrowserError> {
        let cfg = serde_json::to_string(&self.cfg).expect("config serializes");
        let expr = format!("({SNAPSHOT_FN})({cfg})");
        let result = timed("evaluate", self.page.evaluate(expr)).await?;
        let unreadable = |source| BrowserError::Unreadable {
            what: "the snapshot",
            source,
        };
        let text: String = result.into_value().map_err(unreadable)?;
        let snapshot: Snapshot = serde_json::from_str(&text).map_err(unreadable)?;
        Ok(snapshot.observation())
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
    fn snapshot_precedence() {
        let s = |qr: Option<&str>, reload, wid: Option<&str>, linked| Snapshot {
            qr: qr.map(String::from),
            reload,
            wid: wid.map(String::from),
            linked,
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
    }
}
