//! Bearer-token authentication of control-plane calls: a tonic interceptor that compares the
//! `authorization: Bearer <token>` metadata with the configured token in constant time, so a
//! caller cannot learn the token byte by byte from response times. Health and reflection are
//! served without it, for probes and tooling.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Status};

use crate::config::Auth;

/// The interceptor in front of the SyncControl service.
#[derive(Clone, Debug)]
pub struct Authenticator {
    token: Option<Arc<SecretString>>,
}

impl Authenticator {
    /// An authenticator for `auth`.
    pub fn new(auth: &Auth) -> Authenticator {
        Authenticator {
            token: match auth {
                Auth::Token(token) => Some(Arc::new(token.clone())),
                Auth::Insecure => None,
            },
        }
    }

    /// Lets `request` through when it carries the token.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let Some(value) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata; pass the control token \
                 (syncctl: PEOPLESYNC_CONTROL_TOKEN or PEOPLESYNC_CONTROL_TOKEN_FILE)",
            ));
        };
        let Ok(value) = value.to_str() else {
            return Err(Status::unauthenticated(
                "the authorization metadata is not text; send `Bearer <token>`",
            ));
        };
        let presented = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(Status::unauthenticated(
                    "the authorization metadata must be `Bearer <token>`",
                ));
            }
        };
        if constant_time_eq(presented.as_bytes(), expected.expose_secret().as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "the bearer token is not the control plane's token (PEOPLESYNC_CONTROL_TOKEN of \
                 the loader); give syncctl the same PEOPLESYNC_CONTROL_TOKEN",
            ))
        }
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request)
    }
}

/// Compares two byte strings in time that depends only on their lengths, not on where they
/// first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    let len = a.len().max(b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(auth) = auth {
            request
                .metadata_mut()
                .insert("authorization", auth.parse().unwrap());
        }
        request
    }

    #[test]
    fn equal_strings_compare_equal_and_prefixes_do_not() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-toke"));
        assert!(!constant_time_eq(b"secret-tokem", b"secret-token"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let auth = Authenticator::new(&Auth::Token(SecretString::from("s3cret-s3cret-s3cret")));
        assert!(
            auth.check(request(Some("Bearer s3cret-s3cret-s3cret")))
                .is_ok()
        );
        assert!(
            auth.check(request(Some("bearer s3cret-s3cret-s3cret")))
                .is_ok()
        );
        for bad in [
            None,
            Some("Bearer nope"),
            Some("s3cret-s3cret-s3cret"),
            Some("Basic x"),
        ] {
            let status = auth.check(request(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn a_wrong_token_is_told_the_current_variable_name() {
        let auth = Authenticator::new(&Auth::Token(SecretString::from("s3cret-s3cret-s3cret")));
        let status = auth.check(request(Some("Bearer nope"))).unwrap_err();
        let message = status.message();
        assert!(
            message.contains("(PEOPLESYNC_CONTROL_TOKEN of the loader)"),
            "{message}"
        );
        assert!(
            !message.contains("(CONTROL_TOKEN"),
            "the deprecated name: {message}"
        );
    }

    #[test]
    fn insecure_mode_lets_everything_through() {
        let auth = Authenticator::new(&Auth::Insecure);
        assert!(auth.check(request(None)).is_ok());
    }
}
