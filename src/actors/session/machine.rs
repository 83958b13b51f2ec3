//! The session's state machine as data: the state and everything that must agree with it (the
//! QR code, the number, the error, the restart count, the intent). [`Machine::apply`] is the only
//! code that changes them; it refuses an edge that is not in
//! [`TRANSITIONS`](crate::domain::TRANSITIONS). The actor runs the side effects (timers, the
//! browser, publishing) from the [`Change`] it returns.

use std::sync::Arc;

use super::view::QrView;
use crate::domain::{Intent, SessionState};

/// Why the state changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// An explicit start (by an operator or a restore): a fresh chance, earlier errors forgotten.
    Start,
    /// The relaunch after a crash.
    Relaunch,
    /// The page shows this QR code (first, rotated, or after an unlink from the phone).
    Qr(Arc<QrView>),
    /// The page stopped offering the code it showed.
    QrExpired,
    /// Linked; the phone number.
    Linked(String),
    /// Linking by phone number: the code, once WhatsApp gave one (it rotates).
    Pairing { code: Option<String> },
    /// Linking by phone number did not work (no code, or no WA-JS); the page offers a QR again.
    PairingFailed(String),
    /// Logged out on WhatsApp's side (from the phone, or for a reason WhatsApp gives); the page
    /// will offer a code again.
    RemoteLogout { reason: Option<String> },
    /// The phone went offline or came back (the session stays connected).
    Online(bool),
    /// The browser died unexpectedly (or its page never became usable); a relaunch follows.
    Crashed(String),
    /// The browser is closed on purpose and relaunched at once on its profile (the memory
    /// bulkhead); no crash is counted.
    Recycle(String),
    /// No more automatic restarts: crash intensity exceeded (`crash: true`, it counts as a
    /// restart) or the browser cannot run at all.
    Failed { reason: String, crash: bool },
    /// The browser is closed on purpose.
    Stop(StopKind),
}

/// Why a browser is closed on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopKind {
    /// `POST /api/stop`: the number stays linked in the profile.
    Stopped,
    /// `POST /api/logout`: the number is forgotten (the profile is deleted by the caller).
    LoggedOut,
    /// Nobody scanned the QR code in time.
    QrTimeout,
    /// The daemon is stopping: the intent is kept so the next boot restores the session.
    Shutdown,
    /// Cluster: closed to snapshot the login of a closed browser; relaunched at once.
    Snapshot,
    /// Cluster: handed to another node (a drain); the intent is kept, the new owner runs it.
    HandOver,
    /// Cluster: this node's lease is gone (not renewed in time, or taken over); the browser
    /// was killed and the session runs wherever its new owner is.
    LeaseLost,
    /// WhatsApp Web refuses this browser (the reason, `unsupported_browser: …`); the intent is
    /// kept, so the session comes back once the daemon runs on an engine the site takes.
    Unsupported(String),
}

impl Cause {
    /// The state this cause leads to, given the current one.
    pub fn target(&self) -> SessionState {
        match self {
            Cause::Start
            | Cause::Relaunch
            | Cause::QrExpired
            | Cause::PairingFailed(_)
            | Cause::RemoteLogout { .. } => SessionState::Starting,
            Cause::Qr(_) => SessionState::Qr,
            Cause::Pairing { .. } => SessionState::Pairing,
            Cause::Linked(_) | Cause::Online(_) => SessionState::Connected,
            Cause::Crashed(_) | Cause::Recycle(_) => SessionState::Restarting,
            Cause::Failed { .. } => SessionState::Failed,
            Cause::Stop(_) => SessionState::Stopped,
        }
    }
}

/// The data of one session that the state machine governs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub state: SessionState,
    /// What the operator last asked for; restored at boot.
    pub intent: Intent,
    /// The linked number, kept while stopped (the profile holds the login).
    pub number: Option<String>,
    /// Present exactly in state `qr`.
    pub qr: Option<Arc<QrView>>,
    /// The code to enter on the phone; only in state `pairing` (absent until WhatsApp gave one).
    pub pairing_code: Option<String>,
    /// Whether the phone is online, as WA-JS reports it; only while connected.
    pub online: Option<bool>,
    /// Crashes counted since the session was created; never decreases.
    pub restarts: u32,
    pub last_error: Option<String>,
}

/// A change the machine made: what the actor logs, records and publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub from: SessionState,
    pub to: SessionState,
    /// The audit trail's kind (`starting`, `qr`, `unlinked`, `connected`, `crashed`, …).
    pub kind: &'static str,
    pub detail: Option<String>,
}

/// An edge not in the table; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{from} -> {to} is not an allowed transition")]
pub struct Refused {
    pub from: SessionState,
    pub to: SessionState,
}

impl Machine {
    pub fn stopped(intent: Intent, number: Option<String>, restarts: u32) -> Machine {
        Machine {
            state: SessionState::Stopped,
            intent,
            number,
            qr: None,
            pairing_code: None,
            online: None,
            restarts,
            last_error: None,
        }
    }

    /// Applies `cause` if its edge is allowed; returns what changed.
    pub fn apply(&mut self, cause: Cause) -> Result<Change, Refused> {
        let (from, to) = (self.state, cause.target());
        if !from.may_become(to) || (matches!(cause, Cause::Online(_)) && from != to) {
            return Err(Refused { from, to });
        }
        self.state = to;
        if to != SessionState::Qr {
            self.qr = None;
        }
        if to != SessionState::Pairing {
            self.pairing_code = None;
        }
        if to != SessionState::Connected {
            self.online = None;
        }
        let (kind, detail) = match cause {
            Cause::Start => {
                self.intent = Intent::Running;
                self.last_error = None;
                ("starting", None)
            }
            Cause::Relaunch => ("starting", None),
            Cause::Qr(view) => {
                self.qr = Some(view);
                if from == SessionState::Connected {
                    ("unlinked", self.number.take())
                } else {
                    ("qr", None)
                }
            }
            Cause::QrExpired => ("qr_expired", None),
            Cause::Pairing { code } => {
                let kind = match (&code, from) {
                    (None, _) => "pairing",
                    (Some(_), SessionState::Pairing) if self.pairing_code.is_some() => {
                        "pairing_code_rotated"
                    }
                    (Some(_), _) => "pairing_code",
                };
                self.pairing_code = code;
                (kind, None)
            }
            Cause::PairingFailed(reason) => {
                self.last_error = Some(reason.clone());
                ("pairing_failed", Some(reason))
            }
            Cause::RemoteLogout { reason } => {
                let reason = reason.unwrap_or_else(|| "no reason given".to_owned());
                let number = self.number.take();
                self.last_error = Some(format!("logged out on WhatsApp's side ({reason})"));
                (
                    "unlinked",
                    Some(format!(
                        "{} ({reason})",
                        number.as_deref().unwrap_or("no number")
                    )),
                )
            }
            Cause::Online(online) => {
                self.online = Some(online);
                (if online { "online" } else { "offline" }, None)
            }
            Cause::Linked(number) => {
                self.number = Some(number.clone());
                self.last_error = None;
                ("connected", Some(number))
            }
            Cause::Crashed(reason) => {
                self.restarts += 1;
                self.last_error = Some(reason.clone());
                ("crashed", Some(reason))
            }
            Cause::Recycle(reason) => ("recycled", Some(reason)),
            Cause::Failed { reason, crash } => {
                self.restarts += u32::from(crash);
                self.intent = Intent::Stopped;
                self.last_error = Some(reason.clone());
                ("failed", Some(reason))
            }
            Cause::Stop(kind) => match kind {
                StopKind::Stopped => {
                    self.intent = Intent::Stopped;
                    ("stopped", None)
                }
                StopKind::LoggedOut => {
                    self.intent = Intent::Stopped;
                    self.last_error = None;
                    ("logged_out", self.number.take())
                }
                StopKind::QrTimeout => {
                    self.intent = Intent::Stopped;
                    self.last_error = Some("qr_timeout".to_owned());
                    ("qr_timeout", None)
                }
                StopKind::Shutdown => ("shutdown", None),
                StopKind::Snapshot => ("snapshot", None),
                StopKind::HandOver => ("handed_over", None),
                StopKind::LeaseLost => ("lease_lost", None),
                StopKind::Unsupported(reason) => {
                    self.last_error = Some(reason.clone());
                    ("unsupported_browser", Some(reason))
                }
            },
        };
        Ok(Change {
            from,
            to,
            kind,
            detail,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.state == SessionState::Connected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TRANSITIONS;

    fn qr(n: u32) -> Cause {
        Cause::Qr(Arc::new(QrView {
            payload: format!("2@{n}"),
            data_url: String::new(),
        }))
    }

    fn random_cause(n: u32) -> Cause {
        match rand::random_range(0..17) {
            16 => Cause::Recycle(format!("memory {n}")),
            12 => Cause::Pairing {
                code: rand::random::<bool>().then(|| format!("ABCD-{n:04}")),
            },
            13 => Cause::RemoteLogout {
                reason: Some("user_initiated".into()),
            },
            14 => Cause::Online(rand::random()),
            15 => Cause::PairingFailed("no code".into()),
            0 => Cause::Start,
            1 => Cause::Relaunch,
            2 | 3 => qr(n),
            4 => Cause::QrExpired,
            5 => Cause::Linked(format!("49151{:05}", n % 3)),
            6 => Cause::Crashed(format!("crash {n}")),
            7 => Cause::Failed {
                reason: "gave up".into(),
                crash: rand::random(),
            },
            8 => Cause::Stop(StopKind::Stopped),
            9 => Cause::Stop(StopKind::LoggedOut),
            10 => Cause::Stop(StopKind::QrTimeout),
            11 if n.is_multiple_of(2) => {
                Cause::Stop(StopKind::Unsupported("unsupported_browser: x".into()))
            }
            _ => Cause::Stop(StopKind::Shutdown),
        }
    }

    /// Random event sequences: only table edges happen, and the data always agrees with the state.
    #[test]
    fn random_walks_keep_every_invariant() {
        let mut edges_seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let mut m = Machine::stopped(Intent::Stopped, None, 0);
            for n in 0..60 {
                let before = m.clone();
                let cause = random_cause(n);
                match m.apply(cause.clone()) {
                    Ok(change) => {
                        assert!(
                            TRANSITIONS.contains(&(change.from, change.to)),
                            "{change:?}"
                        );
                        assert_eq!((change.from, change.to), (before.state, m.state));
                        edges_seen.insert((change.from, change.to));
                    }
                    Err(refused) => {
                        assert_eq!(m, before, "a refused cause changes nothing");
                        // Outside the table, or `online` news for a session not connected.
                        assert!(
                            !TRANSITIONS.contains(&(refused.from, refused.to))
                                || matches!(cause, Cause::Online(_))
                        );
                    }
                }
                assert_eq!(m.is_connected(), m.state == SessionState::Connected);
                assert_eq!(
                    m.qr.is_some(),
                    m.state == SessionState::Qr,
                    "{cause:?} {m:?}"
                );
                assert!(m.state != SessionState::Connected || m.number.is_some());
                assert!(m.restarts >= before.restarts, "restarts never decreases");
                if m.state == SessionState::Failed {
                    assert_eq!(m.intent, Intent::Stopped, "failed means intent stopped");
                }
            }
        }
        // The walk covered the whole table.
        for edge in TRANSITIONS {
            assert!(edges_seen.contains(edge), "never walked {edge:?}");
        }
    }

    #[test]
    fn unlink_and_logout_forget_the_number_and_say_which() {
        let mut m = Machine::stopped(Intent::Stopped, None, 0);
        m.apply(Cause::Start).unwrap();
        m.apply(Cause::Linked("4915100000001".into())).unwrap();
        let c = m.apply(qr(1)).unwrap();
        assert_eq!(
            (c.kind, c.detail.as_deref()),
            ("unlinked", Some("4915100000001"))
        );
        assert_eq!(m.number, None);
        m.apply(Cause::Linked("4915100000002".into())).unwrap();
        let c = m.apply(Cause::Stop(StopKind::Shutdown)).unwrap();
        assert_eq!((c.kind, m.intent), ("shutdown", Intent::Running));
        assert_eq!(
            m.number.as_deref(),
            Some("4915100000002"),
            "kept while stopped"
        );
        let c = m.apply(Cause::Stop(StopKind::LoggedOut)).unwrap();
        assert_eq!(c.detail.as_deref(), Some("4915100000002"));
        assert_eq!((m.number.clone(), m.intent), (None, Intent::Stopped));
        assert_eq!(
            m.apply(Cause::Linked("1".into())),
            Err(Refused {
                from: SessionState::Stopped,
                to: SessionState::Connected
            })
        );
    }
}
