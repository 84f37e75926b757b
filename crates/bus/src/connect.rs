//! How a service reaches NATS: the seed URLs of `NATS_URL` (one or more, comma separated,
//! credentials allowed as `nats://user:pass@host`), and the authentication and TLS options
//! both services read from the environment (`NATS_USER` + `NATS_PASSWORD`, `NATS_TOKEN`,
//! `NATS_NKEY_SEED`, `NATS_CREDS_FILE`, `NATS_TLS_*`). Secrets are kept as [`SecretString`]
//! so neither a log line nor a `Debug` print shows them; URLs are shown without credentials.

use std::path::{Path, PathBuf};

use async_nats::{ConnectOptions, ServerAddr};
use peoplesync_runtime::{SecretError, env_or_file_with};
use secrecy::{ExposeSecret, SecretString};

/// Every environment variable [`ConnectSettings::from_env`] reads (each secret also as
/// `<NAME>_FILE`). The services add these to their own `ENV_VARS` with [`with_env_vars`].
pub const ENV_VARS: &[&str] = &[
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_PASSWORD_FILE",
    "NATS_TOKEN",
    "NATS_TOKEN_FILE",
    "NATS_NKEY_SEED",
    "NATS_NKEY_SEED_FILE",
    "NATS_CREDS_FILE",
    "NATS_TLS_CA_FILE",
    "NATS_TLS_CERT_FILE",
    "NATS_TLS_KEY_FILE",
    "NATS_TLS_REQUIRED",
];

/// `own` followed by [`ENV_VARS`], built at compile time: a service declares
/// `ENV_VARS = &with_env_vars::<{ OWN.len() + connect::ENV_VARS.len() }>(OWN)`, so its list
/// cannot miss a NATS connection variable. A wrong `N` fails to compile.
pub const fn with_env_vars<const N: usize>(own: &[&'static str]) -> [&'static str; N] {
    assert!(
        own.len() + ENV_VARS.len() == N,
        "N must be own.len() + ENV_VARS.len()"
    );
    let mut all = [""; N];
    let mut i = 0;
    while i < own.len() {
        all[i] = own[i];
        i += 1;
    }
    let mut j = 0;
    while j < ENV_VARS.len() {
        all[i + j] = ENV_VARS[j];
        j += 1;
    }
    all
}

/// A NATS connection setting that is wrong; the message names the variable and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectConfigError {
    /// `NATS_URL` holds no URL at all.
    #[error(
        "NATS_URL is empty; give one or more NATS server URLs separated by commas, e.g. nats://n1:4222,nats://n2:4222"
    )]
    NoUrl,
    /// One part of `NATS_URL` is not a NATS server URL.
    #[error(
        "NATS_URL: `{part}` is not a valid NATS server URL ({reason}); give one or more URLs separated by commas, e.g. nats://n1:4222,nats://n2:4222"
    )]
    BadUrl {
        /// The offending part, credentials replaced by `***`.
        part: String,
        /// Why it was refused.
        reason: String,
    },
    /// The seed URLs carry different credentials.
    #[error(
        "NATS_URL: the seed URLs carry different credentials; put the same user:password@ (or token@) on every URL, or none and set NATS_USER/NATS_PASSWORD instead"
    )]
    MixedUrlCredentials,
    /// More than one way to authenticate is configured.
    #[error("more than one NATS authentication method is set ({}); set only one of NATS_USER+NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED, NATS_CREDS_FILE or credentials in NATS_URL", .0.join(", "))]
    Conflict(Vec<&'static str>),
    /// Half of a pair is set.
    #[error("{given} is set but {missing} is not; set both or neither")]
    Incomplete {
        /// The variable that is set.
        given: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
    /// A secret's `_FILE` is unreadable, or both forms are set.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A file named by a variable does not exist or cannot be read.
    #[error("{var}={path}: cannot read the file: {source}; give the path of a readable file")]
    File {
        /// The variable.
        var: &'static str,
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file named by a TLS variable holds no PEM block of the kind it should.
    #[error("{var}={path}: the file holds no PEM {what}; give a PEM file (-----BEGIN {what}-----)")]
    NotPem {
        /// The variable.
        var: &'static str,
        /// The path given.
        path: String,
        /// What it should hold (`CERTIFICATE`, `PRIVATE KEY`).
        what: &'static str,
    },
    /// `NATS_TLS_REQUIRED` is not a boolean.
    #[error("NATS_TLS_REQUIRED={0}: expected true or false")]
    BadBool(String),
}

/// Checks that `path` (named by `var`) is readable and holds a PEM block of `what` (a key's
/// label may be prefixed, as in `RSA PRIVATE KEY`), so a wrong file stops start-up with its
/// name instead of every connection attempt failing.
fn pem_file(var: &'static str, path: &Path, what: &'static str) -> Result<(), ConnectConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConnectConfigError::File {
        var,
        path: path.display().to_string(),
        source,
    })?;
    let holds = text.lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .is_some_and(|rest| rest.trim_end_matches('-').ends_with(what))
    });
    match holds {
        true => Ok(()),
        false => Err(ConnectConfigError::NotPem {
            var,
            path: path.display().to_string(),
            what,
        }),
    }
}

/// How the client proves who it is to NATS. Only one method at a time.
#[derive(Debug, Clone, Default)]
pub enum NatsAuth {
    /// No credentials (a server without authorization).
    #[default]
    None,
    /// `NATS_USER` and `NATS_PASSWORD`, or `nats://user:pass@host` in `NATS_URL`.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: SecretString,
    },
    /// `NATS_TOKEN`, or `nats://token@host` in `NATS_URL`.
    Token(SecretString),
    /// `NATS_NKEY_SEED`: the user's NKey seed (`SU…`).
    NKey(SecretString),
    /// `NATS_CREDS_FILE`: a `.creds` file (user JWT and NKey seed) of a NATS account.
    CredsFile(PathBuf),
}

impl NatsAuth {
    /// The method in words, for logs and errors (never the secret).
    pub fn method(&self) -> &'static str {
        match self {
            NatsAuth::None => "no credentials",
            NatsAuth::UserPassword { .. } => "user and password",
            NatsAuth::Token(_) => "token",
            NatsAuth::NKey(_) => "NKey seed",
            NatsAuth::CredsFile(_) => "credentials file",
        }
    }

    /// Where this method is configured, for errors.
    pub fn variables(&self) -> &'static str {
        match self {
            NatsAuth::None => "no NATS_* credential variable",
            NatsAuth::UserPassword { .. } => "NATS_USER/NATS_PASSWORD (or user:pass@ in NATS_URL)",
            NatsAuth::Token(_) => "NATS_TOKEN (or token@ in NATS_URL)",
            NatsAuth::NKey(_) => "NATS_NKEY_SEED",
            NatsAuth::CredsFile(_) => "NATS_CREDS_FILE",
        }
    }
}

/// TLS towards NATS: extra trusted roots, a client certificate, and whether TLS is required.
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    /// `NATS_TLS_CA_FILE`: PEM roots to trust besides the system ones.
    pub ca_file: Option<PathBuf>,
    /// `NATS_TLS_CERT_FILE` and `NATS_TLS_KEY_FILE`: client certificate and its key (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `NATS_TLS_REQUIRED`: refuse a connection that is not TLS.
    pub required: bool,
}

/// Everything about reaching NATS besides the URLs: authentication and TLS.
#[derive(Debug, Clone, Default)]
pub struct ConnectSettings {
    /// How to authenticate.
    pub auth: NatsAuth,
    /// TLS options.
    pub tls: NatsTls,
}

impl ConnectSettings {
    /// Reads the settings from the process environment (see [`ENV_VARS`]).
    pub fn from_env() -> Result<ConnectSettings, ConnectConfigError> {
        ConnectSettings::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `var` (the environment, or a map in tests).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectSettings, ConnectConfigError> {
        let plain = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let user = plain("NATS_USER");
        let password = env_or_file_with("NATS_PASSWORD", &var)?;
        let token = env_or_file_with("NATS_TOKEN", &var)?;
        let nkey = env_or_file_with("NATS_NKEY_SEED", &var)?;
        let creds = plain("NATS_CREDS_FILE").map(PathBuf::from);

        let user_password = both(
            ("NATS_USER", user),
            ("NATS_PASSWORD (or NATS_PASSWORD_FILE)", password),
        )?
        .map(|(user, password)| NatsAuth::UserPassword { user, password });
        let mut methods: Vec<(&'static str, NatsAuth)> = Vec::new();
        if let Some(auth) = user_password {
            methods.push(("NATS_USER/NATS_PASSWORD", auth));
        }
        if let Some(token) = token {
            methods.push(("NATS_TOKEN", NatsAuth::Token(token)));
        }
        if let Some(seed) = nkey {
            methods.push(("NATS_NKEY_SEED", NatsAuth::NKey(seed)));
        }
        if let Some(path) = creds {
            readable("NATS_CREDS_FILE", &path)?;
            methods.push(("NATS_CREDS_FILE", NatsAuth::CredsFile(path)));
        }
        if methods.len() > 1 {
            return Err(ConnectConfigError::Conflict(
                methods.iter().map(|(name, _)| *name).collect(),
            ));
        }
        let auth = methods.pop().map_or(NatsAuth::None, |(_, auth)| auth);

        let ca_file = plain("NATS_TLS_CA_FILE").map(PathBuf::from);
        if let Some(path) = &ca_file {
            readable("NATS_TLS_CA_FILE", path)?;
        }
        let client_cert = both(
            (
                "NATS_TLS_CERT_FILE",
                plain("NATS_TLS_CERT_FILE").map(PathBuf::from),
            ),
            (
                "NATS_TLS_KEY_FILE",
                plain("NATS_TLS_KEY_FILE").map(PathBuf::from),
            ),
        )?;
        if let Some((cert, key)) = &client_cert {
            readable("NATS_TLS_CERT_FILE", cert)?;
            readable("NATS_TLS_KEY_FILE", key)?;
        }
        let required = match plain("NATS_TLS_REQUIRED") {
            None => false,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(ConnectConfigError::BadBool(value)),
            },
        };
        Ok(ConnectSettings {
            auth,
            tls: NatsTls {
                ca_file,
                client_cert,
                required,
            },
        })
    }

    /// The authentication actually used with `servers`: these settings' method, or the
    /// credentials embedded in the URLs; both at once is refused.
    pub fn effective_auth(&self, servers: &NatsServers) -> Result<NatsAuth, ConnectConfigError> {
        match (&self.auth, &servers.credentials) {
            (NatsAuth::None, Some(from_url)) => Ok(from_url.clone()),
            (auth, None) => Ok(auth.clone()),
            (auth, Some(_)) => Err(ConnectConfigError::Conflict(vec![
                "credentials in NATS_URL",
                match auth {
                    NatsAuth::UserPassword { .. } => "NATS_USER/NATS_PASSWORD",
                    NatsAuth::Token(_) => "NATS_TOKEN",
                    NatsAuth::NKey(_) => "NATS_NKEY_SEED",
                    NatsAuth::CredsFile(_) | NatsAuth::None => "NATS_CREDS_FILE",
                },
            ])),
        }
    }

    /// Adds the authentication `auth` and these TLS settings to `options`.
    pub async fn apply(
        &self,
        auth: &NatsAuth,
        mut options: ConnectOptions,
    ) -> Result<ConnectOptions, ConnectConfigError> {
        options = match auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose_secret().to_owned())
            }
            NatsAuth::Token(token) => options.token(token.expose_secret().to_owned()),
            NatsAuth::NKey(seed) => options.nkey(seed.expose_secret().to_owned()),
            NatsAuth::CredsFile(path) => {
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| ConnectConfigError::File {
                        var: "NATS_CREDS_FILE",
                        path: path.display().to_string(),
                        source,
                    })?
            }
        };
        if let Some(ca) = &self.tls.ca_file {
            pem_file("NATS_TLS_CA_FILE", ca, "CERTIFICATE")?;
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            pem_file("NATS_TLS_CERT_FILE", cert, "CERTIFICATE")?;
            pem_file("NATS_TLS_KEY_FILE", key, "PRIVATE KEY")?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.required {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// Both values of a pair, or neither; one alone is refused naming both variables.
fn both<A, B>(
    (first, a): (&'static str, Option<A>),
    (second, b): (&'static str, Option<B>),
) -> Result<Option<(A, B)>, ConnectConfigError> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (Some(_), None) => Err(ConnectConfigError::Incomplete {
            given: first,
            missing: second,
        }),
        (None, Some(_)) => Err(ConnectConfigError::Incomplete {
            given: second,
            missing: first,
        }),
        (None, None) => Ok(None),
    }
}

fn readable(var: &'static str, path: &Path) -> Result<(), ConnectConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ConnectConfigError::File {
            var,
            path: path.display().to_string(),
            source,
        })
}

/// The seed servers of `NATS_URL`, credentials taken out of the URLs.
#[derive(Debug, Clone)]
pub struct NatsServers {
    /// The servers, without credentials.
    pub addrs: Vec<ServerAddr>,
    /// The credentials the URLs carried (the same on each), if any.
    pub credentials: Option<NatsAuth>,
}

impl NatsServers {
    /// Parses `NATS_URL`: one or more URLs separated by commas (spaces allowed around them).
    /// A URL without a scheme is taken as `nats://`; `nats://user:pass@host` carries a user
    /// and password, `nats://token@host` a token.
    pub fn parse(text: &str) -> Result<NatsServers, ConnectConfigError> {
        let mut addrs = Vec::new();
        let mut credentials: Option<Option<(String, Option<String>)>> = None;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |reason: String| ConnectConfigError::BadUrl {
                part: redact(part),
                reason,
            };
            let with_scheme = if part.contains("://") {
                part.to_owned()
            } else {
                format!("nats://{part}")
            };
            let mut url = url::Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(bad("no host".into()));
            }
            let user = decode(url.username()).map_err(&bad)?;
            let pass = url.password().map(decode).transpose().map_err(&bad)?;
            let these = (!user.is_empty() || pass.is_some()).then_some((user, pass));
            match &credentials {
                None => credentials = Some(these),
                Some(first) if *first != these => {
                    return Err(ConnectConfigError::MixedUrlCredentials);
                }
                Some(_) => {}
            }
            // Cannot fail on a URL with a host (only `cannot-be-a-base` URLs refuse).
            let _ = url.set_username("");
            let _ = url.set_password(None);
            addrs.push(ServerAddr::from_url(url).map_err(|e| bad(e.to_string()))?);
        }
        if addrs.is_empty() {
            return Err(ConnectConfigError::NoUrl);
        }
        let credentials = credentials.flatten().map(|(user, pass)| match pass {
            Some(pass) => NatsAuth::UserPassword {
                user,
                password: SecretString::from(pass),
            },
            None => NatsAuth::Token(SecretString::from(user)),
        });
        Ok(NatsServers { addrs, credentials })
    }

    /// The URLs without credentials, comma separated, for logs and errors.
    pub fn shown(&self) -> String {
        self.addrs
            .iter()
            .map(ServerAddr::as_url_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn decode(text: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "the credentials are not valid UTF-8 once percent-decoded".to_owned())
}

/// `part` with anything before an `@` (user, password or token) replaced by `***`.
fn redact(part: &str) -> String {
    let Some(at) = part.rfind('@') else {
        return part.to_owned();
    };
    let start = part.find("://").map_or(0, |i| i + 3);
    if start > at {
        return part.to_owned();
    }
    format!("{}***{}", &part[..start], &part[at..])
}

#[cfg(test)]
mod tests;
