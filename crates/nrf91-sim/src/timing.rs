//! How long a simulated modem takes: per-command delays and wire time.
//!
//! `--latency realistic` delays each reply by the time a real nRF91 needs
//! before it answers. The figures are estimates from public reports and
//! Nordic's tools' timeouts, not measurements; key generation takes the
//! longest:
//!
//! | command                                   | delay   |
//! |-------------------------------------------|---------|
//! | rejected (syntax, parameters, state)      | 2 ms    |
//! | `AT`, identity/version reads, `+CMEE`, `+CCLK`, `+CFUN?` | 5 ms |
//! | `+CFUN` between inactive modes (0 <-> 4)  | 20 ms   |
//! | `+CFUN=1`/`=2` (radio on)                 | 50 ms   |
//! | `+CFUN` from active to 0/4 (detach, NVM)  | 400 ms  |
//! | `%ATTESTTOKEN`                            | 60 ms   |
//! | `%JWT`                                    | 120 ms  |
//! | `%KEYGEN` public key (format 1)           | 900 ms  |
//! | `%KEYGEN` CSR (format 0)                  | 1200 ms |
//! | `%CMNG` write                             | 150 ms  |
//! | `%CMNG` list                              | 30 ms   |
//! | `%CMNG` read                              | 20 ms   |
//! | `%CMNG` delete                            | 80 ms   |
//!
//! With a baud rate, output bytes are paced at 10 bits a byte (8N1), so a
//! 600-byte `%KEYGEN` line takes about 52 ms at 115200 baud.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::Latency;
use super::modem::CommandKind;

/// The modelled cost of one answered command, for measuring a host against
/// the least time its commands could take (`nrf-provd bench`). Logged once
/// the reply is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandCost {
    /// Wall-clock time the command line was complete: comparable with the
    /// station's run timestamps, also across processes.
    pub received: SystemTime,
    /// The modelled delay before the reply.
    pub delay: Duration,
    /// Wire time of the command line at the baud rate. Not enforced: the
    /// pty delivers the host's bytes at once.
    pub wire_in: Duration,
    /// Wire time of the reply at the baud rate (enforced by pacing).
    pub wire_out: Duration,
    /// Wall-clock time the reply was written and its wire time was over.
    /// `answered − received − enforced()` is the simulator's own overshoot
    /// (timer rounding, scheduling), not the host's.
    pub answered: SystemTime,
}

impl CommandCost {
    /// What the simulated board enforces: delay plus paced reply.
    pub fn enforced(&self) -> Duration {
        self.delay + self.wire_out
    }
}

/// Where a slot's sessions append their [`CommandCost`]s until taken.
pub type CostLog = Arc<Mutex<Vec<CommandCost>>>;

/// The modelled delay before a reply to a command of `kind`.
pub fn command_delay(latency: Latency, kind: CommandKind) -> Duration {
    if latency == Latency::None {
        return Duration::ZERO;
    }
    let ms = match kind {
        CommandKind::Rejected => 2,
        CommandKind::Query => 5,
        CommandKind::CfunIdle => 20,
        CommandKind::CfunUp => 50,
        CommandKind::CfunDown => 400,
        CommandKind::AttestToken => 60,
        // Assumed as %ATTESTTOKEN: the modem signs a digest.
        CommandKind::ClaimToken => 60,
        CommandKind::Jwt => 120,
        CommandKind::KeygenPublicKey => 900,
        CommandKind::KeygenCsr => 1200,
        CommandKind::CmngWrite => 150,
        CommandKind::CmngList => 30,
        CommandKind::CmngRead => 20,
        CommandKind::CmngDelete => 80,
    };
    Duration::from_millis(ms)
}

/// Time `bytes` take on a UART at `baud` (8N1: 10 bits a byte); zero
/// without a baud rate.
pub fn wire_time(baud: Option<u32>, bytes: usize) -> Duration {
    match baud {
        Some(baud) if baud > 0 => {
            let bits = u128::try_from(bytes)
                .unwrap_or(u128::MAX)
                .saturating_mul(10);
            let nanos = bits.saturating_mul(1_000_000_000) / u128::from(baud);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        }
        _ => Duration::ZERO,
    }
}

/// Bytes to write per pacing step: about 5 ms of wire time, at least 1.
pub fn pacing_chunk(baud: u32) -> usize {
    usize::try_from(baud / 10 / 200).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_is_the_slowest_and_none_is_zero() {
        let all = [
            CommandKind::Rejected,
            CommandKind::Query,
            CommandKind::CfunIdle,
            CommandKind::CfunUp,
            CommandKind::CfunDown,
            CommandKind::AttestToken,
            CommandKind::Jwt,
            CommandKind::KeygenPublicKey,
            CommandKind::CmngWrite,
            CommandKind::CmngList,
            CommandKind::CmngRead,
            CommandKind::CmngDelete,
        ];
        let csr = command_delay(Latency::Realistic, CommandKind::KeygenCsr);
        for kind in all {
            assert!(command_delay(Latency::Realistic, kind) < csr, "{kind:?}");
            assert_eq!(command_delay(Latency::None, kind), Duration::ZERO);
        }
    }

    #[test]
    fn wire_time_at_115200() {
        assert_eq!(wire_time(Some(115_200), 11_520), Duration::from_secs(1));
        assert_eq!(wire_time(None, 1000), Duration::ZERO);
        assert_eq!(wire_time(Some(0), 1000), Duration::ZERO);
        assert_eq!(pacing_chunk(115_200), 57);
        assert_eq!(pacing_chunk(300), 1);
    }
}
