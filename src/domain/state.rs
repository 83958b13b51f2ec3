use std::fmt;
use std::str::FromStr;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Browser launching or page loading.
    Starting,
    /// A QR payload is available.
    Qr,
    /// Linking by phone number: a pairing code is (or is about to be) shown instead of a QR.
    Pairing,
    /// Linked; the number is known.
    Connected,
    /// The browser died unexpectedly; a relaunch is scheduled.
    Restarting,
    /// No browser (after stop, QR timeout, logout, shutdown).
    Stopped,
    /// Gave up; `lastError` says why.
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 7] = [
        SessionState::Starting,
        SessionState::Qr,
        SessionState::Pairing,
        SessionState::Connected,
        SessionState::Restarting,
        SessionState::Stopped,
        SessionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Qr => "qr",
            SessionState::Pairing => "pairing",
            SessionState::Connected => "connected",
            SessionState::Restarting => "restarting",
            SessionState::Stopped => "stopped",
            SessionState::Failed => "failed",
        }
    }

    /// What a stored state means after the daemon restarted: no browser survives a restart.
    pub fn at_boot(self) -> SessionState {
        if self.is_running() {
            SessionState::Stopped
        } else {
            self
        }
    }

    /// A browser is (or is about to be) running.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            SessionState::Starting
                | SessionState::Qr
                | SessionState::Pairing
                | SessionState::Connected
                | SessionState::Restarting
        )
    }
}

/// Every allowed edge of the state machine (docs/ARCHITECTURE.md, "States"). The session actor's
/// one `transition` refuses any other; a property test walks random event sequences against it.
pub const TRANSITIONS: &[(SessionState, SessionState)] = {
    use SessionState::*;
    &[
        // A launch: a start, a start after giving up, a relaunch after a crash.
        (Stopped, Starting),
        (Failed, Starting),
        (Restarting, Starting),
        // The page shows a code (again: rotation; or after being unlinked from the phone).
        (Starting, Qr),
        (Qr, Qr),
        (Connected, Qr),
        // The code expired (a new one is on its way); a pairing failed; logged out on
        // WhatsApp's side (the page will offer a code again).
        (Qr, Starting),
        (Pairing, Starting),
        (Connected, Starting),
        // Linking by phone number asked for (from a QR code or still loading); the code rotates.
        (Starting, Pairing),
        (Qr, Pairing),
        (Pairing, Pairing),
        // Linked (scanned, or the profile held a login), or the page reports another number.
        (Starting, Connected),
        (Qr, Connected),
        (Pairing, Connected),
        (Connected, Connected),
        // The browser died unexpectedly: a relaunch is scheduled.
        (Starting, Restarting),
        (Qr, Restarting),
        (Pairing, Restarting),
        (Connected, Restarting),
        // Gave up (crash intensity, no Chromium, an unusable profile).
        (Starting, Failed),
        (Qr, Failed),
        (Pairing, Failed),
        (Connected, Failed),
        // Stop, logout, QR timeout, shutdown: from anywhere (again from stopped: who asked).
        (Starting, Stopped),
        (Qr, Stopped),
        (Pairing, Stopped),
        (Connected, Stopped),
        (Restarting, Stopped),
        (Stopped, Stopped),
        (Failed, Stopped),
    ]
};

impl SessionState {
    /// Is `self → next` an edge of [`TRANSITIONS`]?
    pub fn may_become(self, next: SessionState) -> bool {
        TRANSITIONS.contains(&(self, next))
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownValue(pub String);

impl FromStr for SessionState {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// What the operator last asked for; restored on boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    Running,
    Stopped,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Running => "running",
            Intent::Stopped => "stopped",
        }
    }
}

impl FromStr for Intent {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(Intent::Running),
            "stopped" => Ok(Intent::Stopped),
            _ => Err(UnknownValue(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_can_be_left_and_reached() {
        for st in SessionState::ALL {
            assert!(
                TRANSITIONS.iter().any(|(from, _)| *from == st),
                "{st} is a dead end"
            );
            assert!(
                TRANSITIONS.iter().any(|(_, to)| *to == st),
                "{st} is unreachable"
            );
            assert!(
                st.may_become(SessionState::Stopped),
                "{st} cannot be stopped"
            );
        }
        assert!(!SessionState::Stopped.may_become(SessionState::Connected));
        assert!(!SessionState::Restarting.may_become(SessionState::Qr));
    }

    #[test]
    fn states_round_trip_through_text() {
        for st in SessionState::ALL {
            assert_eq!(st.as_str().parse::<SessionState>().unwrap(), st);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!("Connected".parse::<SessionState>().is_err());
        assert_eq!("running".parse::<Intent>().unwrap(), Intent::Running);
    }
}
