//! Secrets kept out of configuration files: read from the environment by variable name.

/// The value of environment variable `var`, trimmed. The error names the variable, never a
/// value.
pub(crate) fn from_env(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Ok(_) => Err(format!("the environment variable {var:?} is empty")),
        Err(_) => Err(format!("the environment variable {var:?} is not set")),
    }
}
