//! Start-up checks: the Oomnitza credentials are tried once before the first event is pulled,
//! so that a refused token stops pulling, sets `credentials_failing` and shows on `/readyz` at
//! once rather than after the first run. The gates' own probe clears the failure once Oomnitza
//! accepts the credentials again.

use peoplesync_oomnitza::ErrorKind;
use peoplesync_runtime::Readiness;

use crate::consume::Loader;
use crate::gates::Failure;

/// The `/readyz` condition that fails while Oomnitza refuses the loader's credentials.
pub const CREDENTIALS_READINESS: &str = "oomnitza_credentials";

/// Checks the Oomnitza credentials now and ties the readiness condition
/// [`CREDENTIALS_READINESS`] to the loader's credential state from here on.
pub async fn check_credentials(loader: &Loader, readiness: &Readiness) {
    let gates = loader.gates().clone();
    readiness.set_check(CREDENTIALS_READINESS, move || {
        !matches!(gates.failure(), Some((Failure::Credentials, _)))
    });
    match loader.client().check_auth().await {
        Ok(()) => {
            tracing::info!(host = %loader.client().host(), "Oomnitza accepted the credentials")
        }
        Err(err) if err.kind() == ErrorKind::Unauthorized => {
            loader.gates().set_failure(
                Failure::Credentials,
                Some(format!(
                    "{err}; set OOMNITZA_API_TOKEN (or OOMNITZA_API_TOKEN_FILE) to a valid token"
                )),
            );
        }
        Err(err) => tracing::warn!(error = %err,
            "cannot check the Oomnitza credentials at start; Oomnitza may be unreachable"),
    }
}
