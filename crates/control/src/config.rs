//! The control plane's settings, from the loader's environment: where to listen
//! (`CONTROL_LISTEN`), the bearer token (`PEOPLESYNC_CONTROL_TOKEN` /
//! `PEOPLESYNC_CONTROL_TOKEN_FILE`, the names `syncctl` reads too; the older `CONTROL_TOKEN`
//! is accepted for one release, with a warning), and optional
//! TLS (`CONTROL_TLS_CERT_FILE`, `CONTROL_TLS_KEY_FILE`). Without a token the control plane
//! does not start, unless `CONTROL_INSECURE_NO_AUTH=true` says the network is trusted.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::ControlError;

/// The default listen address: loopback only, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Every environment variable the control plane reads.
pub const ENV_VARS: &[&str] = &[
    "CONTROL_LISTEN",
    "PEOPLESYNC_CONTROL_TOKEN",
    "PEOPLESYNC_CONTROL_TOKEN_FILE",
    "CONTROL_TOKEN",
    "CONTROL_TOKEN_FILE",
    "CONTROL_TLS_CERT_FILE",
    "CONTROL_TLS_KEY_FILE",
    "CONTROL_INSECURE_NO_AUTH",
];

/// The control token's variable, shared with `syncctl` (also as `_FILE`).
pub const TOKEN_VAR: &str = "PEOPLESYNC_CONTROL_TOKEN";
/// The token's former name on the loader, accepted for one release with a warning.
pub const OLD_TOKEN_VAR: &str = "CONTROL_TOKEN";

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Every call (but health and reflection) needs `authorization: Bearer <token>`.
    Token(SecretString),
    /// No authentication (`CONTROL_INSECURE_NO_AUTH=true`): for a trusted network only.
    Insecure,
}

/// The certificate and key files of the control plane's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, server certificate first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The control plane's settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// How callers are authenticated.
    pub auth: Auth,
    /// TLS, when configured.
    pub tls: Option<TlsFiles>,
}

impl ControlConfig {
    /// Reads the settings from the environment. `Ok(None)` when no token is configured and
    /// insecure mode is not asked for: the control plane must then not start (the caller logs
    /// why). A setting that is present but wrong is an error.
    pub fn from_env() -> Result<Option<ControlConfig>, ControlError> {
        from_vars(&|name| std::env::var(name).ok(), &|name| {
            peoplesync_runtime::env_or_file(name).map_err(|e| ControlError::Config(e.to_string()))
        })
    }
}

type SecretLookup<'a> = &'a dyn Fn(&str) -> Result<Option<SecretString>, ControlError>;

fn from_vars(
    var: &dyn Fn(&str) -> Option<String>,
    secret: SecretLookup<'_>,
) -> Result<Option<ControlConfig>, ControlError> {
    let var = |name: &str| {
        var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let listen_text = var("CONTROL_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.parse().map_err(|e| {
        ControlError::Config(format!(
            "CONTROL_LISTEN={listen_text:?} is not an address ({e}); use IP:PORT, e.g. 0.0.0.0:50051"
        ))
    })?;
    let insecure = match var("CONTROL_INSECURE_NO_AUTH").as_deref() {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
        Some(v) => {
            return Err(ControlError::Config(format!(
                "CONTROL_INSECURE_NO_AUTH={v:?} must be true or false"
            )));
        }
    };
    let token = match secret(TOKEN_VAR)? {
        Some(token) => Some(token),
        None => {
            let old = secret(OLD_TOKEN_VAR)?;
            if old.is_some() {
                tracing::warn!(
                    "{OLD_TOKEN_VAR} is deprecated and will be ignored from the next release; \
                     name the variable {TOKEN_VAR} (or {TOKEN_VAR}_FILE), as syncctl does"
                );
            }
            old
        }
    };
    let auth = match (token, insecure) {
        (Some(_), true) => {
            return Err(ControlError::Config(
                "both PEOPLESYNC_CONTROL_TOKEN and CONTROL_INSECURE_NO_AUTH=true are set; unset one".into(),
            ));
        }
        (Some(token), false) => {
            use secrecy::ExposeSecret;
            if token.expose_secret().trim().len() < 16 {
                return Err(ControlError::Config(
                    "PEOPLESYNC_CONTROL_TOKEN is shorter than 16 characters; use a long random token (e.g. `openssl rand -hex 32`)".into(),
                ));
            }
            Auth::Token(token)
        }
        (None, true) => Auth::Insecure,
        (None, false) => return Ok(None),
    };
    let tls = match (var("CONTROL_TLS_CERT_FILE"), var("CONTROL_TLS_KEY_FILE")) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ControlError::Config(
                "CONTROL_TLS_CERT_FILE is set but CONTROL_TLS_KEY_FILE is not; set both for TLS"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ControlError::Config(
                "CONTROL_TLS_KEY_FILE is set but CONTROL_TLS_CERT_FILE is not; set both for TLS"
                    .into(),
            ));
        }
    };
    Ok(Some(ControlConfig { listen, auth, tls }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Option<ControlConfig>, ControlError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let secrets = map.clone();
        from_vars(&move |k| map.get(k).cloned(), &move |k| {
            Ok(secrets.get(k).map(|v| SecretString::from(v.clone())))
        })
    }

    #[test]
    fn without_a_token_the_control_plane_stays_off_unless_insecure_is_asked_for() {
        assert!(load(&[]).unwrap().is_none());
        let insecure = load(&[("CONTROL_INSECURE_NO_AUTH", "true")])
            .unwrap()
            .unwrap();
        assert!(matches!(insecure.auth, Auth::Insecure));
        assert_eq!(insecure.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn the_shared_token_name_wins_and_the_old_name_still_works() {
        let both = load(&[
            ("PEOPLESYNC_CONTROL_TOKEN", "new-token-0123456789"),
            ("CONTROL_TOKEN", "old-token-0123456789"),
        ])
        .unwrap()
        .unwrap();
        let Auth::Token(token) = both.auth else {
            panic!("a token")
        };
        use secrecy::ExposeSecret;
        assert_eq!(token.expose_secret(), "new-token-0123456789");
        let old = load(&[("CONTROL_TOKEN", "old-token-0123456789")])
            .unwrap()
            .unwrap();
        assert!(matches!(old.auth, Auth::Token(_)));
    }

    #[test]
    fn a_token_with_tls_and_an_address_is_read() {
        let config = load(&[
            ("PEOPLESYNC_CONTROL_TOKEN", "0123456789abcdef0123"),
            ("CONTROL_LISTEN", "0.0.0.0:6000"),
            ("CONTROL_TLS_CERT_FILE", "/tls/cert.pem"),
            ("CONTROL_TLS_KEY_FILE", "/tls/key.pem"),
        ])
        .unwrap()
        .unwrap();
        assert!(matches!(config.auth, Auth::Token(_)));
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.tls.unwrap().key, PathBuf::from("/tls/key.pem"));
    }

    #[test]
    fn half_configured_or_contradictory_settings_name_the_variables() {
        let err = |pairs: &[(&str, &str)]| load(pairs).unwrap_err().to_string();
        assert!(err(&[("CONTROL_LISTEN", "localhost")]).contains("CONTROL_LISTEN"));
        assert!(err(&[("CONTROL_TOKEN", "short")]).contains("16 characters"));
        assert!(
            err(&[
                ("CONTROL_TOKEN", "0123456789abcdef0123"),
                ("CONTROL_TLS_CERT_FILE", "/c.pem")
            ])
            .contains("CONTROL_TLS_KEY_FILE")
        );
        assert!(
            err(&[
                ("CONTROL_TOKEN", "0123456789abcdef0123"),
                ("CONTROL_INSECURE_NO_AUTH", "true")
            ])
            .contains("unset one")
        );
        assert!(err(&[("CONTROL_INSECURE_NO_AUTH", "yes")]).contains("true or false"));
    }
}
