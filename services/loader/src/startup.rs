//! Start-up checks: the Oomnitza credentials are tried once before the first event is pulled,
//! so that a refused token stops pulling and sets `credentials_failing` at once rather than
//! after the first run's first batch. The gates' own probe clears the failure once Oomnitza
//! accepts the credentials again.
//!
//! A refused credential does not take the loader out of rotation: its control plane must stay
//! reachable, so that `syncctl check` can say what is wrong.

use peoplesync_oomnitza::ErrorKind;

use crate::consume::Loader;
use crate::gates::Failure;

/// Checks the Oomnitza credentials now; a refusal is recorded as [`Failure::Credentials`].
pub async fn check_credentials(loader: &Loader) {
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
