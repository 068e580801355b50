//! Secrets kept out of configuration files: read from the environment by variable name.

/// A secret's environment variable is unusable. The message names the variable, never a
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The variable is not set.
    #[error("the environment variable {0:?} is not set")]
    Unset(String),
    /// The variable is set but empty (or only white space).
    #[error("the environment variable {0:?} is empty")]
    Empty(String),
}

/// The value of environment variable `var`, trimmed.
pub(crate) fn from_env(var: &str) -> Result<String, SecretError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Ok(_) => Err(SecretError::Empty(var.to_owned())),
        Err(_) => Err(SecretError::Unset(var.to_owned())),
    }
}
