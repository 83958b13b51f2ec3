//! Validated identities, the session state and its transition table.
//!
//! Raw strings become these types at the edge (HTTP path, DB row, folder name) and nothing
//! downstream takes a `String` id. Each type is built only by parsing.

mod message;
mod phone;
mod session_key;
mod slot;
mod state;
mod user_id;

pub use message::{
    ChatId, ChatIdError, MessageText, MessageTextError, IDEMPOTENCY_KEY_MAX, TEXT_MAX_CHARS,
};
pub use phone::{PhoneNumber, PhoneNumberError, PHONE_MAX_DIGITS, PHONE_MIN_DIGITS};
pub use session_key::{SessionKey, SessionsRoot, PROFILE_SUFFIX};
pub use slot::{Slot, SlotError, DEFAULT_MAX_SLOTS, MIN_SLOT, SLOT_CEILING};
pub use state::{Intent, SessionState, UnknownValue, TRANSITIONS};
pub use user_id::{UserId, UserIdError, USER_ID_MAX_LEN};
