//! What the instances on a shared store know of each other for `mcpgw cert rotate --all`: who is
//! alive (each instance marks itself every [`HEARTBEAT`]; one marked within [`LIVE`] counts),
//! and the rotations published for every one of them to install, with each instance's outcome.
//!
//! A rotation holds the new private key until every instance alive when it was published has
//! reported, or the publisher stops waiting, or [`KEY_KEPT`] has passed (whichever comes first);
//! then only the certificate, its fingerprint and the outcomes remain. The key is never logged,
//! printed or put in an error: [`PendingRotation`]'s `Debug` leaves it out.
//!
//! Only a store several instances share has a fleet ([`super::Store::fleet`]); SQLite has one
//! instance, whose `--all` is the local rotate.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The prefix of a registry-channel notice that a rotation was published; its id follows.
/// (Registration names cannot hold a `:`.)
pub const ROTATION_NOTICE: &str = "cert-rotation:";

/// How often an instance marks itself alive (and looks for rotations it missed the notice of).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// An instance not marked within this long is not waited for.
pub const LIVE: Duration = Duration::from_secs(5);
/// The longest a published key stays in the store, even if its publisher died while waiting.
pub const KEY_KEPT: Duration = Duration::from_secs(60);

/// A rotation just published: its id and the instances alive then, whose outcomes to wait for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// The rotation's id.
    pub id: i64,
    /// Instance ids alive at publication, ordered.
    pub live: Vec<String>,
}

/// A rotation this instance has not reported on yet, with the pair to install.
#[derive(Clone)]
pub struct PendingRotation {
    /// The rotation's id.
    pub id: i64,
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM (a secret).
    pub key_pem: String,
}

impl std::fmt::Debug for PendingRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRotation")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What one instance did with one rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationOutcome {
    /// The rotation's id.
    pub rotation: i64,
    /// The instance's id.
    pub instance: String,
    /// The address its listener is bound to.
    pub listen: String,
    /// Whether it installed the pair.
    pub ok: bool,
    /// Why not, when it refused (its old certificate keeps serving).
    pub error: Option<String>,
    /// SHA-256 fingerprint of the certificate it serves after the attempt.
    pub served: Option<String>,
}

/// The instances on a shared store, and the rotations they install.
pub trait Fleet: Send + Sync {
    /// This instance's id (random, per start).
    fn instance(&self) -> &str;
    /// Mark this instance alive now; also forget keys kept past [`KEY_KEPT`] and long-gone
    /// instances.
    fn heartbeat(&self) -> Result<(), StoreError>;
    /// Remove this instance's mark: it is stopping, nobody should wait for it.
    fn leave(&self) -> Result<(), StoreError>;
    /// Store a checked pair for every instance and announce it; `fingerprint` is the leaf's.
    fn publish_rotation(
        &self,
        cert_pem: &str,
        key_pem: &str,
        fingerprint: &str,
    ) -> Result<Published, StoreError>;
    /// The rotations whose key is still kept and that this instance has not reported on,
    /// oldest first.
    fn pending_rotations(&self) -> Result<Vec<PendingRotation>, StoreError>;
    /// Record this instance's outcome; the key goes once every instance alive has reported.
    fn report_rotation(&self, outcome: &RotationOutcome) -> Result<(), StoreError>;
    /// Every outcome reported for rotation `id` so far, by instance.
    fn rotation_outcomes(&self, id: i64) -> Result<Vec<RotationOutcome>, StoreError>;
    /// Forget rotation `id`'s key (the publisher stopped waiting); outcomes still to come from
    /// instances that already read the pair are recorded all the same.
    fn close_rotation(&self, id: i64) -> Result<(), StoreError>;
}
