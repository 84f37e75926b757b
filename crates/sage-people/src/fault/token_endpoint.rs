//! Classifying a non-2xx answer of the OAuth token endpoint: transient failures are retried,
//! anything else names the grant and what to check in the External Client App or the user.

use super::api::is_transient_status;
use super::body::Fault;
use crate::config::Credentials;
use crate::error::{Error, ErrorKind};

/// Classifies a non-2xx answer of the OAuth token endpoint.
///
/// `audience` is the JWT `aud` actually used, for the JWT bearer grant's hints.
pub(crate) fn classify_token(
    status: u16,
    fault: Fault,
    credentials: &Credentials,
    audience: &str,
    host: &str,
) -> Error {
    let grant = credentials.grant_name();
    let said = fault.describe(status);
    let (kind, message) = match fault.code.as_deref() {
        _ if is_transient_status(status) => (
            ErrorKind::Transient,
            format!(
                "the Salesforce token endpoint at {host} failed for the {grant} grant ({said})"
            ),
        ),
        Some("invalid_client" | "invalid_client_id") => (
            ErrorKind::Configuration,
            format!(
                "Salesforce at {host} refused the External Client App's credentials for the \
                 {grant} grant ({said}); check the consumer key{} configured for peoplesync \
                 against the External Client App in this org, then run again",
                if matches!(credentials, Credentials::JwtBearer { .. }) {
                    ""
                } else {
                    " and consumer secret"
                }
            ),
        ),
        Some("unsupported_grant_type") => (
            ErrorKind::Configuration,
            format!(
                "Salesforce at {host} does not allow the {grant} grant ({said}); enable the \
                 {grant} flow in the External Client App's OAuth settings, or configure another \
                 grant, then run again"
            ),
        ),
        Some("invalid_grant") => (
            ErrorKind::Configuration,
            invalid_grant(credentials, audience, host, &said),
        ),
        _ => (
            ErrorKind::Configuration,
            format!(
                "Salesforce at {host} refused the token request for the {grant} grant ({said}); \
                 check the login URL and the credentials configured for peoplesync, then run \
                 again"
            ),
        ),
    };
    Error::new(kind, message)
        .with_status(status)
        .with_code(fault.code)
}

/// `invalid_grant` has a different usual cause for each grant.
fn invalid_grant(credentials: &Credentials, audience: &str, host: &str, said: &str) -> String {
    match credentials {
        Credentials::ClientCredentials { .. } => format!(
            "Salesforce at {host} refused the client credentials grant ({said}); in the External \
             Client App, enable the client credentials flow and set its run-as user to the \
             active integration user, then run again"
        ),
        Credentials::JwtBearer { username, .. } => format!(
            "Salesforce at {host} refused the JWT bearer assertion for {username} ({said}); check \
             that the certificate uploaded to the External Client App matches peoplesync's \
             private key, that {username} is an active user pre-authorised for the app (admin \
             approved users, with their profile or permission set added to the app's policies), \
             and that the audience `{audience}` is what Salesforce expects: \
             https://login.salesforce.com (https://test.salesforce.com for a sandbox) or an \
             Experience Cloud site URL, never the My Domain host (leave `audience` unset for the \
             default), then run again"
        ),
        Credentials::Password { username, .. } => format!(
            "Salesforce at {host} refused the username-password grant for {username} ({said}); \
             check the password and that the current security token is appended to it, that the \
             user is active and not locked out, and that peoplesync's address is within the \
             user's login IP ranges, then run again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn token_error(credentials: &Credentials, status: u16, code: &str) -> Error {
        let body = format!(r#"{{"error":"{code}","error_description":"nope"}}"#);
        classify_token(
            status,
            Fault::parse(body.as_bytes()),
            credentials,
            "https://login.salesforce.com",
            "login.salesforce.com",
        )
    }

    #[test]
    fn token_errors_name_the_grant_and_host() {
        let client = Credentials::ClientCredentials {
            client_id: "id".into(),
            client_secret: SecretString::from("s3cr3t"),
        };
        let jwt = Credentials::JwtBearer {
            client_id: "id".into(),
            username: "api@acme.test".into(),
            audience: None,
            private_key_pem: SecretString::from("pem"),
        };
        let password = Credentials::Password {
            client_id: "id".into(),
            client_secret: SecretString::from("s3cr3t"),
            username: "api@acme.test".into(),
            password: SecretString::from("pw"),
        };
        for credentials in [&client, &jwt, &password] {
            for code in ["invalid_client", "invalid_grant", "unsupported_grant_type"] {
                let error = token_error(credentials, 400, code);
                assert_eq!(error.kind(), ErrorKind::Configuration);
                assert_eq!(error.code(), Some(code));
                let message = error.to_string();
                assert!(message.contains(credentials.grant_name()), "{message}");
                assert!(message.contains("login.salesforce.com"), "{message}");
            }
        }
        assert!(
            token_error(&jwt, 400, "invalid_grant")
                .to_string()
                .contains("certificate")
        );
        assert!(
            token_error(&password, 400, "invalid_grant")
                .to_string()
                .contains("security token")
        );
        assert!(
            token_error(&client, 400, "invalid_grant")
                .to_string()
                .contains("run-as user")
        );
        assert_eq!(token_error(&client, 503, "x").kind(), ErrorKind::Transient);
    }
}
