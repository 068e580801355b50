//! Standard Webhooks signing: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
//!
//! The signed content is `{id}.{timestamp}.{body}`, HMAC-SHA256 (`v1`) keyed with the
//! secret's bytes. A secret is base64, optionally after `whsec_`, exactly as the
//! specification issues secrets and its libraries read them, and holds 24 to 64 bytes. A
//! webhook may have several secrets while one replaces another: every request then carries a
//! signature by each, space-separated, and a receiver holding either verifies it.
//!
//! GET requests carry their data in the query string, so for them the query string (what
//! follows `?`, exactly as sent) is what is signed: a receiver verifies it as the payload.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Secrets decode with or without their `=` padding, as the libraries decode them.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The specification's bounds on a secret's length, in bytes.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A webhook's signing keys. Its `Debug` never shows a key.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} key(s), redacted)", self.keys.len())
    }
}

/// A signing secret is unusable. The message never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("secret {0} is not base64 (after an optional whsec_ prefix), as the Standard Webhooks libraries read secrets: make one with `openssl rand -base64 32`")]
    NotBase64(usize),
    /// Too short or too long.
    #[error(
        "secret {which} holds {bytes} bytes; the Standard Webhooks specification asks for 24 to 64"
    )]
    Length {
        /// Which secret (1 is the first).
        which: usize,
        /// How many bytes it decodes to.
        bytes: usize,
    },
    /// No key at all.
    #[error("must not be empty")]
    Empty,
}

impl Signer {
    /// The keys of `secrets`: one secret, or several separated by white space (the first is
    /// the newest; all sign while a secret is being replaced).
    pub fn new(secrets: &str) -> Result<Signer, KeyError> {
        let mut keys = Vec::new();
        for (i, secret) in secrets.split_whitespace().enumerate() {
            let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
            let key = SECRET_BASE64
                .decode(b64)
                .map_err(|_| KeyError::NotBase64(i + 1))?;
            if !KEY_BYTES.contains(&key.len()) {
                return Err(KeyError::Length {
                    which: i + 1,
                    bytes: key.len(),
                });
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Signer { keys })
    }

    /// The `webhook-signature` value for one attempt: `v1,<base64>` per key, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, content: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let mut out = String::new();
        for key in &self.keys {
            // HMAC takes keys of any length.
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(content);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_test_vector() {
        let s = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            s.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused_and_never_printed() {
        assert_eq!(
            Signer::new("whsec_not base64!").unwrap_err(),
            KeyError::NotBase64(1)
        );
        assert_eq!(Signer::new("hunter2").unwrap_err(), KeyError::NotBase64(1));
        assert_eq!(Signer::new("").unwrap_err(), KeyError::Empty);
        // 16 bytes: shorter than the specification allows.
        let short = STANDARD.encode([7u8; 16]);
        assert_eq!(
            Signer::new(&format!("whsec_{short}")).unwrap_err(),
            KeyError::Length {
                which: 1,
                bytes: 16
            }
        );
        let s = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(!format!("{s:?}").contains("MfKQ"));
        assert!(!KeyError::NotBase64(1).to_string().contains("hunter2"));
    }

    #[test]
    fn a_secret_without_the_prefix_is_base64_as_the_libraries_read_it() {
        let with = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let without = Signer::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(with.sign("msg_1", 1, b"x"), without.sign("msg_1", 1, b"x"));
    }

    #[test]
    fn every_secret_signs_while_one_replaces_another() {
        let new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let old = format!("whsec_{}", STANDARD.encode([9u8; 32]));
        let both = Signer::new(&format!("{new} {old}")).unwrap();
        let sig = both.sign("msg_1", 1614265330, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            Signer::new(new).unwrap().sign("msg_1", 1614265330, b"{}")
        );
        assert_eq!(
            parts[1],
            Signer::new(&old).unwrap().sign("msg_1", 1614265330, b"{}")
        );
    }
}
