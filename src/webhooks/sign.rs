//! Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp` (Unix seconds),
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, the key being the
//! base64 after `whsec_` of the secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A signing secret, `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret.
const SECRET_BYTES: usize = 24;

impl SigningSecret {
    /// `whsec_<base64 of 16..=64 bytes>`.
    pub fn parse(text: &str) -> Result<SigningSecret, String> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("must start with {SECRET_PREFIX}"))?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| "the part after whsec_ must be base64".to_owned())?;
        if !(16..=64).contains(&key.len()) {
            return Err("must hold 16 to 64 bytes of key".to_owned());
        }
        Ok(SigningSecret(key))
    }

    /// A new random secret and its text.
    pub fn generate() -> (SigningSecret, String) {
        let key: [u8; SECRET_BYTES] = rand::random();
        let text = format!("{SECRET_PREFIX}{}", STANDARD.encode(key));
        (SigningSecret(key.to_vec()), text)
    }

    /// The `webhook-signature` value for this message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn matches_the_reference_example() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_whsec_base64() {
        let (secret, text) = SigningSecret::generate();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&text).unwrap(), secret);
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
        assert!(!format!("{secret:?}").contains(&text[6..]));
    }
}
