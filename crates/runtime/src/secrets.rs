//! Secrets come from the environment only: `NAME` holds the value, or `NAME_FILE` holds the
//! path of a file with it (Docker and Kubernetes secrets are mounted as files). They are
//! returned as [`SecretString`] so they never reach a log line or a `Debug` print. A
//! [`SecretSource`] lets tests and embedders hand a service fixed secrets instead.

use std::collections::BTreeMap;

use secrecy::SecretString;

/// A secret that is required but absent, or whose file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Neither `NAME` nor `NAME_FILE` is set.
    #[error("{name} is not set; set {name} or {name}_FILE (the path of a file holding it)")]
    Missing {
        /// The variable.
        name: String,
    },
    /// `NAME_FILE` names a file that cannot be read.
    #[error("{name}_FILE={path}: cannot read the file: {source}")]
    Unreadable {
        /// The variable (without `_FILE`).
        name: String,
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Both forms are set, so which one wins would be a guess.
    #[error("both {name} and {name}_FILE are set; set only one")]
    Ambiguous {
        /// The variable.
        name: String,
    },
}

/// Reads secret `name` from `NAME` or from the file named by `NAME_FILE` (trailing newline
/// removed). `Ok(None)` when neither is set.
pub fn env_or_file(name: &str) -> Result<Option<SecretString>, SecretError> {
    lookup(name, |var| std::env::var(var).ok())
}

/// Like [`env_or_file`], but absence is an error naming both variables.
pub fn require(name: &str) -> Result<SecretString, SecretError> {
    env_or_file(name)?.ok_or_else(|| SecretError::Missing {
        name: name.to_owned(),
    })
}

/// Like [`env_or_file`], but reading variables through `var` instead of the process
/// environment, so a caller can validate a whole set of variables from a map in tests.
pub fn env_or_file_with(
    name: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, SecretError> {
    lookup(name, var)
}

/// Where a service's secrets come from: the environment (`NAME` or `NAME_FILE`), or, for
/// tests and embedding, a fixed map keyed by the same variable names.
#[derive(Clone, Default)]
pub enum SecretSource {
    /// `NAME` or the file named by `NAME_FILE`.
    #[default]
    Environment,
    /// A fixed map from variable name to secret.
    Fixed(BTreeMap<String, SecretString>),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Environment => f.write_str("SecretSource::Environment"),
            SecretSource::Fixed(map) => f
                .debug_struct("SecretSource::Fixed")
                .field("names", &map.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl SecretSource {
    /// A fixed source from `(variable, secret)` pairs.
    pub fn fixed<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> SecretSource {
        SecretSource::Fixed(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), SecretString::from(v.to_owned())))
                .collect(),
        )
    }

    /// Secret `name`, or an error naming the variables to set.
    pub fn require(&self, name: &str) -> Result<SecretString, SecretError> {
        match self {
            SecretSource::Environment => require(name),
            SecretSource::Fixed(map) => {
                map.get(name).cloned().ok_or_else(|| SecretError::Missing {
                    name: name.to_owned(),
                })
            }
        }
    }
}

fn lookup(
    name: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, SecretError> {
    let direct = var(name).filter(|v| !v.is_empty());
    let file = var(&format!("{name}_FILE")).filter(|v| !v.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(SecretError::Ambiguous {
            name: name.to_owned(),
        }),
        (Some(value), None) => Ok(Some(SecretString::from(value))),
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(&path).map_err(|source| SecretError::Unreadable {
                    name: name.to_owned(),
                    path: path.clone(),
                    source,
                })?;
            Ok(Some(SecretString::from(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn value_comes_from_the_variable() {
        let secret = lookup("TOKEN", vars(&[("TOKEN", "s3cret")]))
            .unwrap()
            .unwrap();
        assert_eq!(secret.expose_secret(), "s3cret");
    }

    #[test]
    fn value_comes_from_the_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let path = path.to_string_lossy().into_owned();
        let secret = lookup("TOKEN", vars(&[("TOKEN_FILE", &path)]))
            .unwrap()
            .unwrap();
        assert_eq!(secret.expose_secret(), "from-file");
    }

    #[test]
    fn both_forms_set_is_refused_and_absence_is_none() {
        let both = lookup("TOKEN", vars(&[("TOKEN", "a"), ("TOKEN_FILE", "/x")]));
        assert!(matches!(both, Err(SecretError::Ambiguous { .. })));
        assert!(lookup("TOKEN", vars(&[])).unwrap().is_none());
    }

    #[test]
    fn unreadable_file_names_the_variable_and_path() {
        let err = lookup("TOKEN", vars(&[("TOKEN_FILE", "/nonexistent/token")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("TOKEN_FILE=/nonexistent/token"), "{text}");
    }

    #[test]
    fn a_fixed_source_names_the_missing_variable_and_hides_its_values() {
        let source = SecretSource::fixed([("TOKEN", "hunter2")]);
        assert_eq!(source.require("TOKEN").unwrap().expose_secret(), "hunter2");
        let missing = source.require("OTHER").unwrap_err().to_string();
        assert!(missing.contains("OTHER_FILE"), "{missing}");
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let secret = lookup("TOKEN", vars(&[("TOKEN", "hunter2")]))
            .unwrap()
            .unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
