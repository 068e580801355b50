//! `--env-file`: the environment the service runs with, for commands run by hand.
//!
//! Under systemd, secrets and paths come from the unit (`Environment=`, `EnvironmentFile=`),
//! so `check-config`, `deliveries` or `replay --config` run from a shell would see neither.
//! `--env-file` takes an environment file (`KEY=VALUE` lines, read as systemd reads an
//! `EnvironmentFile=`) or the unit file itself, whose `Environment=` assignments and
//! `EnvironmentFile=` files are read in order. systemd's format is not dotenv's (an unquoted
//! value runs to the end of the line, spaces included: `CRM_TOKEN=Bearer abc`), so it is read
//! here by systemd's rules rather than by a dotenv parser.

use std::path::{Path, PathBuf};

/// Why an environment file could not be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum EnvFileError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A line is not an assignment.
    #[error("{path}:{line}: not a KEY=VALUE line")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Its line number.
        line: usize,
    },
    /// An `Environment=` line of a unit that is not `KEY=VALUE` assignments.
    #[error("{path}:{line}: not KEY=VALUE assignments")]
    Unit {
        /// The unit file.
        path: PathBuf,
        /// Its line number.
        line: usize,
    },
}

/// The variables `path` sets, in order (later ones win).
pub(super) fn read(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| EnvFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    if text.lines().any(|l| l.trim() == "[Service]") {
        return read_unit(path, &text);
    }
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| is_name(k))
            .ok_or(EnvFileError::Parse {
                path: path.to_owned(),
                line: n + 1,
            })?;
        vars.push((key.to_owned(), unquote(value)));
    }
    Ok(vars)
}

fn is_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A value in single or double quotes loses them (and, in double quotes, the backslash of
/// `\"` and `\\`); any other value is taken as it is.
fn unquote(v: &str) -> String {
    let quoted = |q: char| v.len() >= 2 && v.starts_with(q) && v.ends_with(q);
    if quoted('\'') {
        v[1..v.len() - 1].to_owned()
    } else if quoted('"') {
        let mut out = String::with_capacity(v.len());
        let mut chars = v[1..v.len() - 1].chars();
        while let Some(c) = chars.next() {
            match (c, chars.clone().next()) {
                ('\\', Some(n @ ('"' | '\\'))) => {
                    out.push(n);
                    chars.next();
                }
                _ => out.push(c),
            }
        }
        out
    } else {
        v.to_owned()
    }
}

/// A systemd unit's `[Service]` environment: `Environment=` assignments (quoted as the shell
/// does) and `EnvironmentFile=` files (a leading `-` means the file may be missing).
fn read_unit(path: &Path, text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut vars = Vec::new();
    let mut in_service = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service {
            continue;
        }
        if let Some(rest) = line.strip_prefix("Environment=") {
            let words = shlex::split(rest).ok_or(EnvFileError::Unit {
                path: path.to_owned(),
                line: n + 1,
            })?;
            for w in words {
                let (k, v) = w.split_once('=').ok_or(EnvFileError::Unit {
                    path: path.to_owned(),
                    line: n + 1,
                })?;
                vars.push((k.to_owned(), v.to_owned()));
            }
        } else if let Some(file) = line.strip_prefix("EnvironmentFile=") {
            let (optional, file) = match file.strip_prefix('-') {
                Some(f) => (true, f),
                None => (false, file),
            };
            match read(Path::new(file.trim())) {
                Ok(more) => vars.extend(more),
                Err(EnvFileError::Read { error, .. })
                    if optional && error.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_file_and_a_unit_give_their_variables() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("secrets.env");
        std::fs::write(
            &env,
            "# the event socket\nSWITCHHOOK__FREESWITCH__PASSWORD=\"0123 \\\"x\"\n; a comment\n\nCRM_TOKEN=Bearer abc\n",
        )
        .unwrap();
        assert_eq!(
            read(&env).unwrap(),
            [
                (
                    "SWITCHHOOK__FREESWITCH__PASSWORD".to_owned(),
                    "0123 \"x".to_owned()
                ),
                ("CRM_TOKEN".to_owned(), "Bearer abc".to_owned()),
            ]
        );
        let unit = dir.path().join("switchhook.service");
        std::fs::write(
            &unit,
            format!(
                "[Unit]\nEnvironment=NOT_THIS=1\n[Service]\n\
                 Environment=SWITCHHOOK__STORE__PATH=/var/lib/switchhook/outbox.db \"A=b c\"\n\
                 EnvironmentFile=-{}\nEnvironmentFile=-/nonexistent/optional.env\n",
                env.display()
            ),
        )
        .unwrap();
        let vars = read(&unit).unwrap();
        let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "SWITCHHOOK__STORE__PATH",
                "A",
                "SWITCHHOOK__FREESWITCH__PASSWORD",
                "CRM_TOKEN"
            ]
        );
        assert_eq!(vars[1].1, "b c");
        // A file that must exist and does not, and a line that is no assignment.
        std::fs::write(
            &unit,
            "[Service]\nEnvironmentFile=/nonexistent/required.env\n",
        )
        .unwrap();
        assert!(matches!(read(&unit), Err(EnvFileError::Read { .. })));
        std::fs::write(&unit, "[Service]\nEnvironment=JUSTAWORD\n").unwrap();
        assert!(matches!(
            read(&unit),
            Err(EnvFileError::Unit { line: 2, .. })
        ));
        std::fs::write(&env, "OK=1\nnot an assignment\n").unwrap();
        assert!(matches!(
            read(&env),
            Err(EnvFileError::Parse { line: 2, .. })
        ));
    }
}
