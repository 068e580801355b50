//! Standard Webhooks signing: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
//!
//! The signed content is `{id}.{timestamp}.{body}`, HMAC-SHA256 with the secret's bytes
//! (`whsec_` + base64, as the specification issues them; any other string is used as raw
//! bytes). GET requests carry their data in the query string, so for them the query string
//! is what is signed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A webhook's signing key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

/// A signing secret is unusable. The message never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The part after `whsec_` is not base64.
    #[error("the part after whsec_ is not base64 ({0})")]
    NotBase64(#[from] base64::DecodeError),
    /// No key at all.
    #[error("must not be empty")]
    Empty,
}

impl Signer {
    /// The key of `secret`; an error when a `whsec_` secret is not base64.
    pub fn new(secret: &str) -> Result<Signer, KeyError> {
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => STANDARD.decode(b64)?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Signer { key })
    }

    /// The `webhook-signature` value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, content: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(content);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
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
        assert!(Signer::new("whsec_not base64!").is_err());
        assert!(Signer::new("").is_err());
        let s = Signer::new("hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
