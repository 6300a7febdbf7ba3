//! Errors the client reports for operations, each saying what happened so the SCSI layer can
//! log it and pick a sense code.

use super::proto::mds::StatusCode;

/// The name of an MDS status code (`kFileNotExists`), or the number if unknown.
pub fn mds_status_name(code: i32) -> String {
    StatusCode::try_from(code)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("status {code}"))
}

/// Why a read or write failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// Offset or length is not a multiple of the volume's block size (libcurve: NOT_ALIGNED).
    #[error("offset {offset} length {len} not aligned to the volume's {block_size}-byte blocks")]
    NotAligned {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: usize,
        /// The volume's block size.
        block_size: u32,
    },
    /// The range runs past the end of the volume.
    #[error("range at {offset} of {len} bytes ends past the volume's {length} bytes")]
    OutOfRange {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: usize,
        /// Volume length.
        length: u64,
    },
    /// No volume is open.
    #[error("no volume is open")]
    NotOpen,
    /// The operation id is already in flight.
    #[error("operation id {0} is already in flight")]
    DuplicateOp(u64),
    /// Retried until the deadline without success.
    #[error("gave up after {elapsed_ms} ms of retries; last: {last}")]
    Deadline {
        /// How long it tried.
        elapsed_ms: u64,
        /// The last failure seen.
        last: String,
    },
    /// A chunk server refused the request in a way no retry fixes.
    #[error("chunk server refused: {0}")]
    Refused(String),
    /// The volume's session ended (volume deleted or replaced, or closed).
    #[error("volume session ended: {0}")]
    SessionEnded(String),
    /// The caller cancelled it.
    #[error("cancelled")]
    Cancelled,
}

/// Why an MDS call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MdsError {
    /// The MDS answered with a status other than kOK.
    #[error("MDS {method}: {}", mds_status_name(*status))]
    Status {
        /// The method.
        method: &'static str,
        /// The StatusCode.
        status: i32,
    },
    /// No MDS answered before the deadline.
    #[error("MDS {method}: no answer after {elapsed_ms} ms; last: {last}")]
    Deadline {
        /// The method.
        method: &'static str,
        /// How long it tried.
        elapsed_ms: u64,
        /// The last failure seen.
        last: String,
    },
    /// The reply lacked something it must carry.
    #[error("MDS {method}: bad reply: {detail}")]
    BadReply {
        /// The method.
        method: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A request the client cannot make in its current state.
    #[error("{0}")]
    Usage(String),
}

impl MdsError {
    /// The MDS status code, when the MDS answered with one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            MdsError::Status { status, .. } => StatusCode::try_from(*status).ok(),
            _ => None,
        }
    }
}
