//! `[call_store]`: the PostgreSQL database the call records go to.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};
use crate::secrets::SecretError;

/// `[call_store]`. Off unless `url` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallStoreConfig {
    /// The database, as libpq takes it: `host=127.0.0.1 port=5432 user=switchhook
    /// dbname=calls` or `postgresql://switchhook@127.0.0.1/calls`, without a password.
    /// Empty (the default): no call store.
    pub url: String,
    /// The environment variable holding the password; empty: none (peer or trust
    /// authentication).
    pub password_env: String,
    /// The most records written in one transaction.
    pub batch_max: usize,
    /// How long to wait for the server to answer a connection or a batch.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The live page's finished-calls table starts from the store's latest calls.
    pub live_history: bool,
}

impl Default for CallStoreConfig {
    fn default() -> Self {
        CallStoreConfig {
            url: String::new(),
            password_env: String::new(),
            batch_max: 500,
            timeout: Duration::from_secs(10),
            live_history: true,
        }
    }
}

/// Why the connection settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `url` does not parse.
    #[error("{0}")]
    Url(String),
    /// `url` carries a password, which belongs in the environment.
    #[error("carries a password: name an environment variable in call_store.password_env instead")]
    PasswordInUrl,
    /// `url` asks for TLS, which this build does not speak to PostgreSQL.
    #[error("sslmode=require is not supported: use a local socket, loopback or a tunnel")]
    Tls,
    /// The password's variable is unusable.
    #[error(transparent)]
    Password(#[from] SecretError),
}

impl CallStoreConfig {
    /// Whether the call store is on.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The driver's connection settings, with the password from the environment.
    pub(crate) fn connection(&self) -> Result<tokio_postgres::Config, SettingsError> {
        let mut pg: tokio_postgres::Config = self
            .url
            .trim()
            .parse()
            .map_err(|e: tokio_postgres::Error| SettingsError::Url(e.to_string()))?;
        if pg.get_password().is_some() {
            return Err(SettingsError::PasswordInUrl);
        }
        if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(SettingsError::Tls);
        }
        if !self.password_env.is_empty() {
            pg.password(crate::secrets::from_env(&self.password_env)?);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("switchhook");
        }
        pg.connect_timeout(self.timeout);
        Ok(pg)
    }

    /// Every problem with the section's values, by key path.
    pub fn check(&self) -> Vec<Problem> {
        let mut bad = Problems::default();
        if !self.enabled() {
            return bad.into_vec();
        }
        match self.connection() {
            Ok(_) => {}
            Err(SettingsError::Password(e)) => bad.add("call_store.password_env", e),
            Err(e) => bad.add("call_store.url", e),
        }
        if self.batch_max == 0 || self.batch_max > 10_000 {
            bad.add("call_store.batch_max", "must be 1 to 10000");
        }
        if self.timeout.is_zero() {
            bad.add("call_store.timeout", "must be more than 0");
        }
        bad.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> CallStoreConfig {
        CallStoreConfig {
            url: url.into(),
            ..CallStoreConfig::default()
        }
    }

    fn paths(c: &CallStoreConfig) -> Vec<String> {
        c.check().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn off_by_default_and_both_url_forms_read() {
        assert!(!CallStoreConfig::default().enabled());
        assert!(CallStoreConfig::default().check().is_empty());
        assert!(paths(&with_url("host=127.0.0.1 port=5433 user=sh dbname=calls")).is_empty());
        assert!(paths(&with_url("postgresql://sh@127.0.0.1:5433/calls")).is_empty());
    }

    #[test]
    fn a_password_in_the_url_a_bad_url_and_tls_are_refused() {
        for url in [
            "postgresql://sh:hunter2@127.0.0.1/calls",
            "host=127.0.0.1 password=hunter2",
            "host=127.0.0.1 sslmode=require",
            "host=127.0.0.1 port=eighty",
        ] {
            let c = with_url(url);
            assert_eq!(paths(&c), vec!["call_store.url"], "{url}");
            // The message never repeats the password.
            assert!(!c.check()[0].to_string().contains("hunter2"), "{url}");
        }
    }

    #[test]
    fn the_password_variable_must_be_set_and_the_batch_sane() {
        let c = CallStoreConfig {
            password_env: "SWITCHHOOK_TEST_UNSET_PG_PASSWORD".into(),
            batch_max: 0,
            ..with_url("host=127.0.0.1")
        };
        assert_eq!(
            paths(&c),
            vec!["call_store.password_env", "call_store.batch_max"]
        );
    }
}
