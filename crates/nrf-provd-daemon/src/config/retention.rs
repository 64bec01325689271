//! `[retention]`: how long a finished run keeps its payload (steps, tokens,
//! artifacts) before the core's retention may compact it. Absent: kept
//! forever.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Source;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    keep_full: Option<Spanned<String>>,
}

/// `keep_full` as a duration (`"90d"`), or `None` (keep everything) with
/// the problem reported when it is not one.
pub(super) fn validate(src: &Source, raw: Option<RawRetention>) -> Option<Duration> {
    let text = raw?.keep_full?;
    match humantime::parse_duration(text.get_ref()) {
        Ok(keep) if keep > Duration::ZERO => Some(keep),
        _ => {
            src.report(src.at(
                text.span(),
                format!(
                    "retention.keep_full {:?}: expected a duration such as \"90d\" or \"12weeks\"",
                    text.get_ref()
                ),
            ));
            None
        }
    }
}
