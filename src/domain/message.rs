use std::fmt;

/// Longest text a message may carry.
pub const TEXT_MAX_CHARS: usize = 65_536;
/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

/// Where a message goes: `<digits>` (a phone number, country code first), `<digits>@c.us` (a
/// contact), `<id>@g.us` (a group) or `<digits>@lid` (a linked id, as WhatsApp gives many chats
/// now: a bot replies to an event's `chatId` as it came). Kept in WhatsApp's `@`-form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`to` must be a phone number (5 to 20 digits, country code first), <digits>@c.us, <id>@g.us or <digits>@lid"
)]
pub struct ChatIdError;

impl ChatId {
    pub fn parse(raw: &str) -> Result<ChatId, ChatIdError> {
        let digits = |s: &str| (5..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        let raw = raw.trim();
        if let Some(user) = raw.strip_suffix("@c.us").or(raw.strip_suffix("@lid")) {
            return digits(user)
                .then(|| ChatId(raw.to_owned()))
                .ok_or(ChatIdError);
        }
        if let Some(group) = raw.strip_suffix("@g.us") {
            let ok = group.split('-').all(digits) && group.split('-').count() <= 2;
            return ok.then(|| ChatId(raw.to_owned())).ok_or(ChatIdError);
        }
        let number = raw.strip_prefix('+').unwrap_or(raw);
        digits(number)
            .then(|| ChatId(format!("{number}@c.us")))
            .ok_or(ChatIdError)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's text: 1 to [`TEXT_MAX_CHARS`] characters, not only white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`text` must be 1 to {TEXT_MAX_CHARS} characters and not only white space")]
pub struct MessageTextError;

impl MessageText {
    pub fn parse(raw: &str) -> Result<MessageText, MessageTextError> {
        let n = raw.chars().count();
        if n == 0 || n > TEXT_MAX_CHARS || raw.trim().is_empty() {
            return Err(MessageTextError);
        }
        Ok(MessageText(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chats_in_whatsapps_form() {
        assert_eq!(
            ChatId::parse("4915112345678").unwrap().as_str(),
            "4915112345678@c.us"
        );
        assert_eq!(
            ChatId::parse("+4915112345678").unwrap().as_str(),
            "4915112345678@c.us"
        );
        assert_eq!(
            ChatId::parse("4915112345678@c.us").unwrap().as_str(),
            "4915112345678@c.us"
        );
        assert!(ChatId::parse("120363041234567890@g.us").is_ok());
        assert!(ChatId::parse("4915112345678-1600000000@g.us").is_ok());
        assert_eq!(
            ChatId::parse("203458712345678@lid").unwrap().as_str(),
            "203458712345678@lid"
        );
        for bad in [
            "",
            "1234",
            "abc@c.us",
            "491511x@c.us",
            "49151@s.whatsapp.net",
            "1-2-3@g.us",
            "abc@lid",
            "@lid",
            "49151 12345678",
        ] {
            assert!(ChatId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn texts_are_bounded() {
        assert!(MessageText::parse("hi").is_ok());
        assert!(MessageText::parse("").is_err());
        assert!(MessageText::parse("   \n").is_err());
        assert!(MessageText::parse(&"é".repeat(TEXT_MAX_CHARS)).is_ok());
        assert!(MessageText::parse(&"x".repeat(TEXT_MAX_CHARS + 1)).is_err());
    }
}
