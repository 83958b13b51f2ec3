use std::fmt;

/// Shortest and longest phone number accepted for linking by code (E.164 allows 15 digits).
pub const PHONE_MIN_DIGITS: usize = 8;
pub const PHONE_MAX_DIGITS: usize = 15;

/// A phone number to link by code: digits only, country code first (a leading `+` is dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "phone number must be {PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} digits, country code first \
     (e.g. 4915112345678)"
)]
pub struct PhoneNumberError;

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<PhoneNumber, PhoneNumberError> {
        let digits = raw.strip_prefix('+').unwrap_or(raw);
        let ok = (PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(PhoneNumber(digits.to_owned()))
        } else {
            Err(PhoneNumberError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_country_code_first() {
        assert_eq!(
            PhoneNumber::parse("4915112345678").unwrap().as_str(),
            "4915112345678"
        );
        assert_eq!(
            PhoneNumber::parse("+4915112345678").unwrap().as_str(),
            "4915112345678"
        );
        for bad in [
            "",
            "1234567",
            "1234567890123456",
            "0151123456",
            "49 151 123",
            "+",
            "49151x2345678",
            "++4915112345678",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?}");
        }
    }
}
