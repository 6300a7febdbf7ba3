//! Who the client acts as, and the root signature the MDS checks (curve-tgt.md §7.6; Curve
//! `src/common/authenticator.cpp`).
//!
//! A normal owner sends `signature: ""`: the MDS only compares owner names. The root user must
//! sign `"<date_us>:root"` with HMAC-SHA256 keyed by the root password, base64-encoded.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name Curve's MDS gives the root user (`mds.auth.rootUserName`).
pub const ROOT_USER: &str = "root";

/// An owner and, for root, the password that signs its requests.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The volume owner sent in every MDS request.
    pub owner: String,
    /// The root password (`mds.auth.rootPassword`); used only when `owner` is root.
    pub root_password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials")
            .field("owner", &self.owner)
            .field(
                "root_password",
                &self.root_password.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl Credentials {
    /// A normal (non-root) owner.
    pub fn user(owner: &str) -> Credentials {
        Credentials {
            owner: owner.to_string(),
            root_password: None,
        }
    }

    /// The `signature` field for a request dated `date_us`: empty unless root with a password.
    pub fn signature(&self, date_us: u64) -> String {
        match (&self.root_password, self.owner == ROOT_USER) {
            (Some(pw), true) => root_signature(pw, date_us, &self.owner),
            _ => String::new(),
        }
    }
}

/// `base64(HMAC-SHA256(key = password, msg = "<date_us>:<owner>"))`.
pub fn root_signature(password: &str, date_us: u64, owner: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(password.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{date_us}:{owner}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Microseconds since the Unix epoch: the `date` every MDS request carries.
pub fn now_date_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_signature_matches_the_one_the_real_mds_accepted() {
        // curve-wire-samples.txt: GetFileInfo as root (password root_password) answered kOK.
        assert_eq!(
            root_signature("root_password", 1796043103431389, "root"),
            "24Ec90CEvhpxM4Qv7b9OkQzyxc/XbQTUp8XSxyjx3Qs="
        );
    }

    #[test]
    fn normal_owners_send_an_empty_signature() {
        assert_eq!(Credentials::user("alice").signature(1), "");
        let mut c = Credentials::user("alice");
        c.root_password = Some("pw".into());
        assert_eq!(c.signature(1), "", "only root signs");
        assert!(!format!("{c:?}").contains("pw"));
    }
}
