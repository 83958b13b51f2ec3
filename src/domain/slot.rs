use std::fmt;

/// Lowest slot number.
pub const MIN_SLOT: u16 = 1;
/// Slots per user unless `MAX_SLOTS` says otherwise.
pub const DEFAULT_MAX_SLOTS: u16 = 10;
/// Highest value `MAX_SLOTS` may take (keeps `<userId>-slot<n>` short and the UI sane).
pub const SLOT_CEILING: u16 = 100;

/// A slot number in `MIN_SLOT..=max_slots`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u16);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slot must be an integer from {MIN_SLOT} to {max}")]
pub struct SlotError {
    pub max: u16,
}

impl Slot {
    /// Parses a decimal slot number: digits only (no sign, no spaces, no leading zero).
    pub fn parse(raw: &str, max_slots: u16) -> Result<Slot, SlotError> {
        let err = SlotError { max: max_slots };
        if raw.is_empty() || raw.len() > 3 || raw.starts_with('0') {
            return Err(err);
        }
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err);
        }
        let n: u16 = raw.parse().map_err(|_| err.clone())?;
        Slot::new(n.into(), max_slots)
    }

    /// Checks a number from a trusted-typed source (DB row, folder name).
    pub fn new(n: i64, max_slots: u16) -> Result<Slot, SlotError> {
        match u16::try_from(n) {
            Ok(n) if (MIN_SLOT..=max_slots).contains(&n) => Ok(Slot(n)),
            _ => Err(SlotError { max: max_slots }),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for Slot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_to_max() {
        for n in 1..=DEFAULT_MAX_SLOTS {
            assert_eq!(
                Slot::parse(&n.to_string(), DEFAULT_MAX_SLOTS)
                    .unwrap()
                    .get(),
                n
            );
        }
        assert_eq!(Slot::parse("20", 20).unwrap().get(), 20);
    }

    #[test]
    fn refuses_out_of_range_and_malformed() {
        for bad in [
            "0",
            "11",
            "-1",
            "+1",
            "1.5",
            "abc",
            "",
            " 1",
            "1 ",
            "01",
            "18446744073709551616",
            "18446744073709551615",
            "65536",
            "1e1",
            "１",
        ] {
            assert!(Slot::parse(bad, DEFAULT_MAX_SLOTS).is_err(), "{bad:?}");
        }
        assert!(Slot::new(0, 10).is_err());
        assert!(Slot::new(-1, 10).is_err());
        assert!(Slot::new(1 << 40, 10).is_err());
    }

    #[test]
    fn error_message_uses_the_limit() {
        assert_eq!(
            Slot::parse("11", 10).unwrap_err().to_string(),
            "slot must be an integer from 1 to 10"
        );
    }
}
