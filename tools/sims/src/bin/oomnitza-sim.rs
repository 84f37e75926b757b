//! `oomnitza-sim`: the Oomnitza simulator as a process, for scripts, demos and benchmarks.
//!
//! Prints exactly one stdout line, `listening on http://127.0.0.1:PORT`, then logs to stderr
//! and serves until SIGTERM or Ctrl-C. Every flag has an environment fallback (`OOMNITZA_SIM_*`).

use std::net::SocketAddr;

use clap::Parser;
use peoplesync_sims::oomnitza::{
    CustomField, CustomFieldNames, DEFAULT_PROCESSING_DELAY_MS, OomnitzaBehavior, OomnitzaConfig,
    OomnitzaFaults, OomnitzaSim, ValidationRule,
};
use peoplesync_sims::process;

// The simulators allocate a JSON tree per record they receive or serve; mimalloc keeps that
// from costing more CPU than the services they stand in front of in benchmarks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulates the Oomnitza API: token auth, bulk portions processed asynchronously, run logs,
/// users.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "OOMNITZA_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// API token accepted in `Authorization2`.
    #[arg(
        long,
        env = "OOMNITZA_SIM_API_TOKEN",
        default_value = "sim-oomnitza-token",
        hide_env_values = true
    )]
    api_token: String,
    /// Login accepted by /api/request_token.
    #[arg(long, env = "OOMNITZA_SIM_LOGIN", default_value = "admin")]
    login: String,
    /// Password accepted by /api/request_token.
    #[arg(
        long,
        env = "OOMNITZA_SIM_PASSWORD",
        default_value = "admin-password",
        hide_env_values = true
    )]
    password: String,
    /// Role ids accepted in PERMISSIONS_ID (comma-separated).
    #[arg(
        long,
        env = "OOMNITZA_SIM_ROLES",
        value_delimiter = ',',
        default_value = "25,10,1"
    )]
    roles: Vec<String>,
    /// Custom user field `ID:Label` or `ID:Label:unique` (repeatable; replaces the defaults:
    /// Sage User ID (unique), Department, City, Country).
    #[arg(
        long = "custom-field",
        env = "OOMNITZA_SIM_CUSTOM_FIELDS",
        value_delimiter = ','
    )]
    custom_fields: Vec<String>,
    /// Milliseconds between accepting a bulk post and processing its records (0: at once).
    #[arg(long, env = "OOMNITZA_SIM_PROCESSING_DELAY_MS", default_value_t = DEFAULT_PROCESSING_DELAY_MS)]
    processing_delay_ms: u64,
    /// Tenant rule `FIELD=REGEX`: a record whose FIELD matches REGEX fails when processed
    /// (repeatable; newline-separated in the environment).
    #[arg(long = "refuse", env = "OOMNITZA_SIM_REFUSE", value_delimiter = '\n')]
    refuse: Vec<String>,
    /// Tenant rule `FIELD=REGEX`: a record whose FIELD does not match REGEX fails when
    /// processed (repeatable; newline-separated in the environment).
    #[arg(long = "require", env = "OOMNITZA_SIM_REQUIRE", value_delimiter = '\n')]
    require: Vec<String>,
    /// Refuse (403) password-session requests that do not echo the session's X-CSRF-Token.
    #[arg(long, env = "OOMNITZA_SIM_REQUIRE_CSRF_ECHO")]
    require_csrf_echo: bool,
    /// Give the API token an X-CSRF-Token in the credential check's answer, to be echoed.
    #[arg(long, env = "OOMNITZA_SIM_CSRF_FOR_API_TOKEN")]
    csrf_for_api_token: bool,
    /// Answer 200 (not 409) when a canceled portion is finalized.
    #[arg(long, env = "OOMNITZA_SIM_ALLOW_FINALIZE_AFTER_CANCEL")]
    allow_finalize_after_cancel: bool,
    /// Process records posted to a canceled portion instead of discarding them.
    #[arg(long, env = "OOMNITZA_SIM_APPLY_AFTER_CANCEL")]
    apply_after_cancel: bool,
    /// How custom fields are named in user reads: `lower-case-id` or `id`.
    #[arg(long, env = "OOMNITZA_SIM_CUSTOM_FIELD_NAMES", default_value = "lower-case-id", value_parser = custom_field_names)]
    custom_field_names: CustomFieldNames,
    /// Show `role` in user reads as a number when PERMISSIONS_ID is numeric, as the published
    /// schema types it (`false`: as sent).
    #[arg(long, env = "OOMNITZA_SIM_ROLE_AS_NUMBER", default_value_t = true, action = clap::ArgAction::Set)]
    role_as_number: bool,
    /// Answer 409 to deleting a user who still holds assets (unpublished behaviour).
    #[arg(long, env = "OOMNITZA_SIM_REFUSE_DELETE_WITH_ASSETS")]
    refuse_delete_with_assets: bool,
    /// The most users a `GET /api/v3/users` page holds, whatever `limit` asks (unpublished).
    #[arg(long, env = "OOMNITZA_SIM_MAX_PAGE_SIZE")]
    max_page_size: Option<usize>,
    /// Name every unknown field id of a bulk body in its 400, not only the first
    /// (unpublished behaviour).
    #[arg(long, env = "OOMNITZA_SIM_NAME_EVERY_UNKNOWN_FIELD")]
    name_every_unknown_field: bool,
    /// Store USER and EMAIL in lower case whatever case was sent (unpublished behaviour).
    #[arg(long, env = "OOMNITZA_SIM_LOWER_CASE_IDENTITIES")]
    lower_case_identities: bool,
    /// Fault: delay added to every request, in milliseconds.
    #[arg(long, env = "OOMNITZA_SIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Fault: share of API requests (0..1) answered 503.
    #[arg(
        long,
        env = "OOMNITZA_SIM_TRANSIENT_FAILURE_RATE",
        default_value_t = 0.0
    )]
    transient_failure_rate: f64,
    /// Fault: API requests admitted per second; the rest get 429.
    #[arg(long, env = "OOMNITZA_SIM_RATE_LIMIT_PER_SEC")]
    rate_limit_per_sec: Option<u32>,
    /// Fault: Retry-After seconds sent with 429 (none sent when unset).
    #[arg(long, env = "OOMNITZA_SIM_RETRY_AFTER_SECS")]
    retry_after_secs: Option<u64>,
    /// Fault: every API request answers 503 for this long after start, in milliseconds.
    #[arg(long, env = "OOMNITZA_SIM_OUTAGE_FOR_MS")]
    outage_for_ms: Option<u64>,
    /// Fault: only /api/v3/bulk requests answer 503 for this long after start, in milliseconds.
    #[arg(long, env = "OOMNITZA_SIM_BULK_OUTAGE_FOR_MS")]
    bulk_outage_for_ms: Option<u64>,
    /// Fault: only /api/v3/users requests answer 503 for this long after start, in milliseconds.
    #[arg(long, env = "OOMNITZA_SIM_USERS_OUTAGE_FOR_MS")]
    users_outage_for_ms: Option<u64>,
    /// Fault: every authenticated request answers 403.
    #[arg(long, env = "OOMNITZA_SIM_FORBIDDEN")]
    forbidden: bool,
    /// Fault: authenticated requests whose path starts with this prefix answer 403 (repeatable
    /// or comma-separated), as for a token lacking one right.
    #[arg(
        long = "forbidden-path",
        env = "OOMNITZA_SIM_FORBIDDEN_PATHS",
        value_delimiter = ','
    )]
    forbidden_paths: Vec<String>,
    /// Fault: records with this e-mail make their batch 422 (repeatable or comma-separated).
    #[arg(
        long = "poison-email",
        env = "OOMNITZA_SIM_POISON_EMAILS",
        value_delimiter = ','
    )]
    poison_emails: Vec<String>,
}

/// `ID:Label[:unique]` → a custom field.
fn custom_field(spec: &str) -> anyhow::Result<CustomField> {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [id, label] => Ok(CustomField {
            id: (*id).into(),
            label: (*label).into(),
            unique: false,
        }),
        [id, label, "unique"] => Ok(CustomField {
            id: (*id).into(),
            label: (*label).into(),
            unique: true,
        }),
        _ => anyhow::bail!("--custom-field '{spec}' must be ID:Label or ID:Label:unique"),
    }
}

/// `lower-case-id` or `id`.
fn custom_field_names(value: &str) -> Result<CustomFieldNames, String> {
    match value {
        "lower-case-id" => Ok(CustomFieldNames::LowerCaseId),
        "id" => Ok(CustomFieldNames::Id),
        other => Err(format!("'{other}' is not lower-case-id or id")),
    }
}

/// `FIELD=REGEX` → a rule; `must_match` for `--require`.
fn rule(spec: &str, must_match: bool) -> anyhow::Result<ValidationRule> {
    let flag = if must_match { "--require" } else { "--refuse" };
    let (field, pattern) = spec
        .split_once('=')
        .filter(|(field, _)| !field.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("{flag} '{spec}' must be FIELD=REGEX"))?;
    Ok(ValidationRule {
        field: field.trim().to_owned(),
        pattern: pattern.to_owned(),
        must_match,
        message: None,
    })
}

impl Args {
    fn config(&self) -> anyhow::Result<OomnitzaConfig> {
        process::ensure_rate("--transient-failure-rate", self.transient_failure_rate)?;
        let defaults = OomnitzaConfig::default();
        let custom_fields = if self.custom_fields.is_empty() {
            defaults.custom_fields
        } else {
            self.custom_fields
                .iter()
                .map(|s| custom_field(s))
                .collect::<anyhow::Result<_>>()?
        };
        Ok(OomnitzaConfig {
            api_token: self.api_token.clone(),
            login: self.login.clone(),
            password: self.password.clone(),
            roles: self.roles.clone(),
            custom_fields,
            faults: OomnitzaFaults {
                latency_ms: self.latency_ms,
                transient_failure_rate: self.transient_failure_rate,
                rate_limit_per_sec: self.rate_limit_per_sec,
                retry_after_secs: self.retry_after_secs,
                outage_for_ms: self.outage_for_ms,
                bulk_outage_for_ms: self.bulk_outage_for_ms,
                users_outage_for_ms: self.users_outage_for_ms,
                forbidden: self.forbidden,
                forbidden_paths: self.forbidden_paths.clone(),
                poison_emails: self.poison_emails.clone(),
                ..OomnitzaFaults::default()
            },
            behavior: OomnitzaBehavior {
                processing_delay_ms: self.processing_delay_ms,
                validation_rules: self
                    .refuse
                    .iter()
                    .map(|s| rule(s, false))
                    .chain(self.require.iter().map(|s| rule(s, true)))
                    .collect::<anyhow::Result<_>>()?,
                require_csrf_echo: self.require_csrf_echo,
                csrf_for_api_token: self.csrf_for_api_token,
                refuse_finalize_after_cancel: !self.allow_finalize_after_cancel,
                apply_after_cancel: self.apply_after_cancel,
                custom_field_names: self.custom_field_names,
                role_as_number: self.role_as_number,
                refuse_delete_with_assets: self.refuse_delete_with_assets,
                max_page_size: self.max_page_size,
                name_every_unknown_field: self.name_every_unknown_field,
                lower_case_identities: self.lower_case_identities,
                ..OomnitzaBehavior::default()
            },
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = args.config()?;
    process::run(args.listen, "the Oomnitza simulator", |listener| {
        OomnitzaSim::spawn_on(config, listener)
    })
    .await
}
