//! The scheduler lease's key and value in the state bucket: the extractor holds and renews it
//! (its `lease` module), the control plane reads who holds it.

use serde::{Deserialize, Serialize};

/// The KV key of an integration's lease.
pub fn key(integration: &str) -> String {
    format!("lease.extractor.{integration}")
}

/// What the key holds (for operators and the status call; only the revision decides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The replica holding the lease.
    pub holder: String,
    /// When it last renewed (RFC 3339), informative only.
    pub renewed_at: String,
}
