//! Single-use SSE tickets: browsers' `EventSource` cannot send headers, so a credentialed call
//! mints a short-lived ticket for `?ticket=` instead of a token in the URL. Limits are per user,
//! so one user minting tickets never gets another user refused.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{refused, AuthError, Principal};
use crate::domain::UserId;

/// How long an SSE ticket may wait to be redeemed.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Unredeemed tickets one user may hold; beyond that issuing answers 429 to that user only.
pub const MAX_OPEN_TICKETS_PER_USER: usize = 8;
/// Unredeemed tickets kept at most over all users: a memory bound that only a service token
/// minting for thousands of users at once could reach (user tokens stop at their own limit).
const MAX_OPEN_TICKETS: usize = 100_000;

struct Ticket {
    principal: Principal,
    user: UserId,
    expires: Instant,
}

/// The open tickets.
pub(crate) struct Tickets {
    open: Mutex<HashMap<String, Ticket>>,
    ttl: Duration,
}

impl Tickets {
    pub(crate) fn new(ttl: Duration) -> Tickets {
        Tickets {
            open: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Stores `ticket` for `user`, unless the user already holds the most allowed.
    pub(crate) fn issue(
        &self,
        principal: &Principal,
        user: &UserId,
        ticket: String,
    ) -> Result<String, AuthError> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, t| t.expires > now);
        let users_open = open.values().filter(|t| &t.user == user).count();
        if users_open >= MAX_OPEN_TICKETS_PER_USER || open.len() >= MAX_OPEN_TICKETS {
            return Err(AuthError::RateLimited {
                retry_after_secs: self.ttl.as_secs().max(1),
            });
        }
        open.insert(
            ticket.clone(),
            Ticket {
                principal: principal.clone(),
                user: user.clone(),
                expires: now + self.ttl,
            },
        );
        Ok(ticket)
    }

    /// Consumes the ticket (whatever the outcome) and says whose it was.
    pub(crate) fn redeem(&self, ticket: &str, user: &UserId) -> Result<Principal, AuthError> {
        let found = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(ticket)
            .ok_or_else(|| refused("unknown or used ticket"))?;
        if found.expires <= Instant::now() {
            return Err(refused("expired ticket"));
        }
        if &found.user != user {
            return Err(refused("ticket issued for another user"));
        }
        Ok(found.principal)
    }
}
