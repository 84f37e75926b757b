//! Logging for the services: level from `RUST_LOG` (default `info`), human-readable lines, or
//! one JSON object per line when `LOG_FORMAT=json` (for log shippers). Colours only when
//! standard error is a terminal and `NO_COLOR` is unset, so redirected logs and log shippers
//! never see ANSI escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber. Call once, first thing in `main`.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(err) = result {
        eprintln!("logging was already set up: {err}");
    }
}
