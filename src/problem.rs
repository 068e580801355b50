//! A problem with the configuration, at its key path: the one shape every section's check,
//! every compile step and `check-config` share.

use std::fmt;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problem {
    /// Dotted key path (`freeswitch.port`, `webhooks[1].filters[0].op`), or the file for a
    /// problem with the whole file.
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
    /// The environment variable the value came from (`SWITCHHOOK__FREESWITCH__PASWORD`),
    /// when it did not come from the file.
    pub variable: Option<String>,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl fmt::Display) -> Problem {
        Problem {
            path: path.into(),
            message: message.to_string(),
            variable: None,
        }
    }

    /// Whether the file is to blame (not an environment variable).
    pub fn in_file(&self) -> bool {
        self.variable.is_none()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variable {
            Some(var) => write!(
                f,
                "environment variable {var}: {}: {}",
                self.path, self.message
            ),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Problems found so far, added to with a key path each.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem at `path`.
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.0.push(Problem::new(path, message));
    }

    /// Adds problems found elsewhere.
    pub(crate) fn extend(&mut self, more: impl IntoIterator<Item = Problem>) {
        self.0.extend(more);
    }

    /// `Ok(value)` when nothing was found.
    pub(crate) fn or<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }

    /// Every problem found.
    pub(crate) fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}
