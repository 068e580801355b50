//! HTTP Basic authentication for the admin endpoint's pages with call data (`/`,
//! `/live.json`) and `/metrics`. Browsers prompt for it and then send it with the page's own
//! requests; Prometheus sends it with `basic_auth` in its scrape configuration.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The accepted user and password, kept as a digest. `Debug` shows neither.
#[derive(Clone)]
pub struct Credentials {
    digest: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: &str, password: &str) -> Credentials {
        Credentials {
            digest: digest(format!("{user}:{password}").as_bytes()),
        }
    }

    /// Whether an `Authorization` header value carries these credentials. Digests are
    /// compared, so the time taken says nothing about how much of a guess was right.
    pub fn accept(&self, authorization: &[u8]) -> bool {
        // The scheme is case-insensitive (RFC 9110, 11.1): `basic` and `BASIC` are `Basic`.
        let Some(space) = authorization.iter().position(|&b| b == b' ') else {
            return false;
        };
        let (scheme, encoded) = authorization.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"Basic") {
            return false;
        }
        match STANDARD.decode(encoded.trim_ascii()) {
            Ok(given) => digest(&given) == self.digest,
            Err(_) => false,
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The middleware: 401 with a `WWW-Authenticate` challenge unless the request carries the
/// credentials.
pub(crate) async fn require(
    State(creds): State<Credentials>,
    req: Request,
    next: Next,
) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| creds.accept(v.as_bytes()));
    if ok {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"switchhook\", charset=\"UTF-8\"",
        )],
        "authentication required\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(userpass: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(userpass)).into_bytes()
    }

    #[test]
    fn only_the_exact_user_and_password_pass() {
        let c = Credentials::new("switchhook", "s3cret pass");
        assert!(c.accept(&basic("switchhook:s3cret pass")));
        let encoded = STANDARD.encode("switchhook:s3cret pass");
        for scheme in ["basic", "BASIC", "bAsIc"] {
            assert!(
                c.accept(format!("{scheme} {encoded}").as_bytes()),
                "{scheme}"
            );
        }
        assert!(!c.accept(format!("Basicx {encoded}").as_bytes()));
        for wrong in [
            basic("switchhook:s3cret"),
            basic("admin:s3cret pass"),
            basic("switchhook:s3cret pass "),
            b"Bearer switchhook:s3cret pass".to_vec(),
            b"Basic !!!not base64".to_vec(),
            b"Basic ".to_vec(),
            Vec::new(),
        ] {
            assert!(!c.accept(&wrong), "{}", String::from_utf8_lossy(&wrong));
        }
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
