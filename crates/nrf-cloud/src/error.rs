//! What can go wrong talking to nRF Cloud, and how a run records it.

/// The outcome of a call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// nRF Cloud answered and said no (a 4xx other than 401/403/429): its
    /// `message`, or the body text when it sent none.
    #[error("nRF Cloud refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// 401/403: the API key itself was refused; no device was judged.
    #[error(
        "nRF Cloud refused the API key (HTTP {status}): {message} — check the key and its role (editor or higher)"
    )]
    Unauthorized { status: u16, message: String },
    /// No usable answer after every attempt: timeouts, refused or reset
    /// connections, 5xx or 429.
    #[error("nRF Cloud unreachable after {attempts} attempt(s): {last}")]
    Unreachable { attempts: u32, last: String },
    /// A success status with a body that is not what the contract says.
    #[error("nRF Cloud answered HTTP {status} with an unexpected body: {detail}")]
    Malformed { status: u16, detail: String },
    /// More rows than one request may carry; nothing was sent.
    #[error("{rows} rows in one request; nRF Cloud takes at most {max} (nothing was sent)")]
    TooManyRows { rows: usize, max: usize },
    /// A row that cannot be written as the contract's CSV; nothing was sent.
    #[error("row {row}: {problem} (nothing was sent)")]
    InvalidRow { row: usize, problem: String },
    /// A bulk operation still running when the caller's deadline passed.
    #[error("bulk operation {id} still {status} after {waited_s} s")]
    StillRunning {
        id: String,
        status: String,
        waited_s: u64,
    },
    /// Settings or TLS setup that cannot work.
    #[error("nRF Cloud client configuration: {0}")]
    Config(String),
}

/// The reason code a run records when nRF Cloud did not vouch for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudReason {
    /// nRF Cloud judged the device and refused it.
    Rejected,
    /// No verdict was obtained (no answer, a refused key, an answer that does
    /// not parse): the device was not judged, and may pass another time.
    Unreachable,
}

impl CloudReason {
    /// `cloud_rejected` or `cloud_unreachable`.
    pub fn code(self) -> &'static str {
        match self {
            CloudReason::Rejected => "cloud_rejected",
            CloudReason::Unreachable => "cloud_unreachable",
        }
    }
}

impl CloudError {
    /// The reason code for a run: only [`CloudError::Rejected`] is a verdict
    /// on the device; everything else means there was none. Nothing maps to
    /// a pass.
    pub fn reason(&self) -> CloudReason {
        match self {
            CloudError::Rejected { .. } => CloudReason::Rejected,
            _ => CloudReason::Unreachable,
        }
    }

    /// True when no verdict was obtained (see [`CloudError::reason`]).
    pub fn is_unreachable(&self) -> bool {
        self.reason() == CloudReason::Unreachable
    }

    /// True for faults of the station's own setup (bad key, bad settings,
    /// rows the caller built wrong) that retrying later will not fix.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            CloudError::Unauthorized { .. }
                | CloudError::Config(_)
                | CloudError::TooManyRows { .. }
                | CloudError::InvalidRow { .. }
        )
    }
}
