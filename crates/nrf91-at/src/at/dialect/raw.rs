//! `raw`: the AT host library (`at_client` sample) and Serial LTE Modem.
//! The host writes `AT...` and the line ending; no echo by default; lines
//! arrive as the modem printed them.
use super::{Dialect, DialectRules};

pub struct Raw;

impl Dialect {
    pub const RAW: Dialect = Dialect::new(&Raw);
}

impl DialectRules for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn frame(&self, command: &str) -> String {
        command.to_string()
    }
}
