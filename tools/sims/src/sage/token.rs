//! `POST /services/oauth2/token`: Salesforce OAuth with the client-credentials, password and
//! JWT-bearer grants. Success returns a token without `expires_in` (a token lives until the API
//! says otherwise); failures are `400 {"error", "error_description"}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::json;

use super::errors;
use super::state::{JwtKey, Shared, TokenUse};
use crate::faults::wait_latency;
use crate::rng::mix;
use crate::sync::lock;

/// The grant type of the JWT bearer flow.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Longest accepted lifetime of a JWT assertion (Salesforce: 3 minutes), plus clock slack.
const MAX_ASSERTION_LIFETIME_SECS: u64 = 180 + 2;

/// Issues an access token, or explains in the OAuth error form why not.
pub(crate) async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let latency = lock(&shared.control).faults.latency_ms;
    wait_latency(latency).await;
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    let label = match grant {
        "client_credentials" => "client_credentials",
        "password" => "password",
        JWT_BEARER => "jwt_bearer",
        _ => "other",
    };
    *lock(&shared.stats)
        .token_requests
        .entry(label.to_string())
        .or_default() += 1;

    let outcome = match grant {
        "client_credentials" => check_client(&shared, &form),
        "password" => check_client(&shared, &form).and_then(|()| check_password(&shared, &form)),
        JWT_BEARER => check_assertion(&shared, &form),
        "" => Err((
            "unsupported_grant_type",
            "grant_type is missing".to_string(),
        )),
        other => Err((
            "unsupported_grant_type",
            format!("grant type '{other}' not supported"),
        )),
    };
    match outcome {
        Ok(()) => issue(&shared),
        Err((error, description)) => {
            lock(&shared.stats).token_failures += 1;
            tracing::debug!(error, description, "token request refused");
            errors::oauth(error, &description)
        }
    }
}

type Refusal = (&'static str, String);

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or("")
}

fn check_client(shared: &Shared, form: &HashMap<String, String>) -> Result<(), Refusal> {
    if field(form, "client_id") != shared.config.client_id {
        return Err(("invalid_client", "client identifier invalid".into()));
    }
    if field(form, "client_secret") != shared.config.client_secret {
        return Err(("invalid_client", "invalid client credentials".into()));
    }
    Ok(())
}

fn check_password(shared: &Shared, form: &HashMap<String, String>) -> Result<(), Refusal> {
    let config = &shared.config;
    if field(form, "username") != config.username || field(form, "password") != config.password {
        return Err(("invalid_grant", "authentication failure".into()));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
}

fn check_assertion(shared: &Shared, form: &HashMap<String, String>) -> Result<(), Refusal> {
    let Some(JwtKey(key)) = &shared.jwt_key else {
        return Err((
            "invalid_grant",
            "no certificate is configured for JWT bearer".into(),
        ));
    };
    let assertion = field(form, "assertion");
    if assertion.is_empty() {
        return Err(("invalid_grant", "assertion is missing".into()));
    }
    // Salesforce wants the login host (or an Experience Cloud site), never the My Domain host
    // the token request may go to; the simulator's own URL plays the My Domain host.
    let mut audiences = vec![
        "https://login.salesforce.com".to_string(),
        "https://test.salesforce.com".to_string(),
    ];
    audiences.extend(shared.config.jwt_extra_audiences.iter().cloned());
    record_audience(shared, assertion);
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.set_issuer(&[&shared.config.client_id]);
    validation.sub = Some(shared.config.username.clone());
    validation.set_audience(&audiences);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);

    let claims = jsonwebtoken::decode::<Claims>(assertion, key, &validation)
        .map_err(|e| ("invalid_grant", describe_jwt_error(&e)))?
        .claims;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    if claims.exp > now + MAX_ASSERTION_LIFETIME_SECS {
        return Err((
            "invalid_grant",
            "assertion expiry is more than 3 minutes ahead".into(),
        ));
    }
    Ok(())
}

/// Counts the `aud` an assertion names, read without verifying it, so tests can see what a
/// client sent even when it is refused.
fn record_audience(shared: &Shared, assertion: &str) {
    #[derive(Deserialize)]
    struct Audience {
        aud: serde_json::Value,
    }
    let mut unverified = Validation::new(Algorithm::RS256);
    unverified.insecure_disable_signature_validation();
    unverified.validate_exp = false;
    unverified.validate_aud = false;
    unverified.set_required_spec_claims::<&str>(&[]);
    let key = jsonwebtoken::DecodingKey::from_secret(&[]);
    let Ok(data) = jsonwebtoken::decode::<Audience>(assertion, &key, &unverified) else {
        return;
    };
    let aud = match data.claims.aud.as_str() {
        Some(text) => text.to_owned(),
        None => data.claims.aud.to_string(),
    };
    *lock(&shared.stats).jwt_audiences.entry(aud).or_default() += 1;
}

fn describe_jwt_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "expired assertion".into(),
        ErrorKind::InvalidAudience => "audience is invalid".into(),
        ErrorKind::InvalidIssuer => "client identifier invalid".into(),
        ErrorKind::InvalidSubject => "user hasn't approved this consumer".into(),
        ErrorKind::InvalidSignature => "invalid assertion signature".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("assertion lacks the '{claim}' claim"),
        _ => format!("invalid assertion: {e}"),
    }
}

fn issue(shared: &Shared) -> Response {
    let mut control = lock(&shared.control);
    control.tokens_issued += 1;
    let n = control.tokens_issued;
    let salt = mix(shared.config.seed ^ n) ^ mix(chrono::Utc::now().timestamp_micros() as u64);
    let access_token = format!("00D7E000000SIMq!AQ{n:06}{salt:016x}");
    control
        .tokens
        .insert(access_token.clone(), TokenUse::default());
    drop(control);
    lock(&shared.stats).tokens_issued += 1;

    let body = json!({
        "access_token": access_token,
        "instance_url": shared.url,
        "id": format!("{}/id/00D7E000000SIMqUAA/0057E00000SIMusrAA", shared.url),
        "token_type": "Bearer",
        "issued_at": chrono::Utc::now().timestamp_millis().to_string(),
        "signature": format!("{:016x}{:016x}", mix(salt), mix(salt ^ 1)),
    });
    Json(body).into_response()
}
