//! `[[sink]]`: the downstreams every finished run is delivered to, read
//! into the core's [`SinkConfig`] with every mistake at its position. One
//! table shape for all kinds; a key of another kind is a mistake.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Source;
use crate::sink::{DEFAULT_TIMEOUT, SinkConfig, mqtt, webhook};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    kind: Option<Spanned<String>>,
    /// webhook, mqtt
    url: Option<Spanned<String>>,
    /// webhook
    secret_file: Option<Spanned<PathBuf>>,
    /// mqtt
    topic: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    /// command
    run: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

/// The kinds a `[[sink]]` may be.
const KINDS: &[&str] = &["webhook", "command", "mqtt"];

/// Every `[[sink]]` with its index in the file, each problem reported; a
/// sink with a problem is left out.
pub(super) fn validate(
    src: &Source,
    raws: Vec<RawSink>,
    station_id: &str,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Vec<(usize, SinkConfig)> {
    let mut sinks: Vec<(usize, SinkConfig)> = Vec::new();
    for (index, raw) in raws.into_iter().enumerate() {
        let span = src.span_of_array_element(&["sink"], index);
        let Some(sink) = validate_one(src, raw, span.clone(), station_id, &resolve) else {
            continue;
        };
        if sinks.iter().any(|(_, s)| s.name() == sink.name()) {
            src.report(src.at(
                span,
                format!(
                    "sink `{}` is configured twice; a run is delivered once to each",
                    sink.name()
                ),
            ));
            continue;
        }
        sinks.push((index, sink));
    }
    sinks
}

fn validate_one(
    src: &Source,
    raw: RawSink,
    span: std::ops::Range<usize>,
    station_id: &str,
    resolve: &impl Fn(PathBuf) -> PathBuf,
) -> Option<SinkConfig> {
    let Some(kind) = raw.kind else {
        src.report(src.at(
            span,
            "[[sink]] needs `kind`: \"webhook\", \"command\" or \"mqtt\"",
        ));
        return None;
    };
    let timeout = match raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(text) => match humantime::parse_duration(text.get_ref()) {
            Ok(t) if t > Duration::ZERO => t,
            _ => {
                src.report(src.at(
                    text.span(),
                    format!(
                        "sink timeout {:?}: expected a duration such as \"10s\" or \"500ms\"",
                        text.get_ref()
                    ),
                ));
                DEFAULT_TIMEOUT
            }
        },
    };
    // A key that belongs to another kind would be silently ignored.
    let stray = |key: &str, value_span: Option<std::ops::Range<usize>>| {
        if let Some(value_span) = value_span {
            src.report(src.at(
                value_span,
                format!("`{key}` is not a setting of a {:?} sink", kind.get_ref()),
            ));
        }
    };
    let mqtt_only = || {
        stray("topic", raw.topic.as_ref().map(Spanned::span));
        stray("username", raw.username.as_ref().map(Spanned::span));
        stray(
            "password_file",
            raw.password_file.as_ref().map(Spanned::span),
        );
    };
    match kind.get_ref().as_str() {
        "command" => {
            stray("url", raw.url.as_ref().map(Spanned::span));
            stray("secret_file", raw.secret_file.as_ref().map(Spanned::span));
            mqtt_only();
            let Some(run) = raw.run else {
                src.report(src.at(
                    span,
                    "a command sink needs `run`, the program and its arguments: run = [\"/usr/local/bin/mes-push\", \"--json\"]",
                ));
                return None;
            };
            if run.get_ref().first().is_none_or(String::is_empty) {
                src.report(src.at(run.span(), "sink run names no program"));
                return None;
            }
            Some(SinkConfig::Command {
                run: run.into_inner(),
                timeout,
            })
        }
        "webhook" => {
            stray("run", raw.run.as_ref().map(Spanned::span));
            mqtt_only();
            let url = match raw.url {
                None => {
                    src.report(src.at(
                        span.clone(),
                        "a webhook sink needs `url`, e.g. url = \"https://mes.example/api/provisioning-runs\"",
                    ));
                    None
                }
                Some(url) => match webhook::check_url(url.get_ref()) {
                    Ok(_) => Some(url.into_inner()),
                    Err(why) => {
                        src.report(src.at(url.span(), format!("sink url {why}")));
                        None
                    }
                },
            };
            let secret_file = match raw.secret_file {
                None => {
                    src.report(src.at(
                        span,
                        "a webhook sink needs `secret_file`, the HMAC key of its signature (mode 0600), \
                         e.g. secret_file = \"/etc/nrf-provd/webhook.secret\"",
                    ));
                    None
                }
                Some(file) => Some(resolve(file.into_inner())),
            };
            Some(SinkConfig::Webhook {
                url: url?,
                secret_file: secret_file?,
                timeout,
            })
        }
        "mqtt" => {
            stray("run", raw.run.as_ref().map(Spanned::span));
            stray("secret_file", raw.secret_file.as_ref().map(Spanned::span));
            let mqtt = Mqtt {
                url: raw.url,
                topic: raw.topic,
                username: raw.username,
                password_file: raw.password_file,
            };
            validate_mqtt(src, mqtt, span, station_id, timeout, resolve)
        }
        other => {
            src.report(src.at(
                kind.span(),
                format!(
                    "sink kind {other:?}: expected {}{}",
                    super::one_of(KINDS),
                    super::suggestion(other, KINDS)
                ),
            ));
            None
        }
    }
}

/// An mqtt sink's own keys.
struct Mqtt {
    url: Option<Spanned<String>>,
    topic: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
}

fn validate_mqtt(
    src: &Source,
    raw: Mqtt,
    span: std::ops::Range<usize>,
    station_id: &str,
    timeout: Duration,
    resolve: &impl Fn(PathBuf) -> PathBuf,
) -> Option<SinkConfig> {
    let url = match raw.url {
        None => {
            src.report(src.at(
                span.clone(),
                "an mqtt sink needs `url`, the broker, e.g. url = \"mqtts://broker.example:8883\"",
            ));
            None
        }
        Some(url) => match mqtt::check_url(url.get_ref()) {
            Ok(_) => Some(url.into_inner()),
            Err(why) => {
                src.report(src.at(url.span(), format!("sink url {why}")));
                None
            }
        },
    };
    let topic = match raw.topic {
        None => Some(mqtt::topic_for(mqtt::DEFAULT_TOPIC, station_id)),
        Some(template) => {
            let topic = mqtt::topic_for(template.get_ref(), station_id);
            match mqtt::check_topic(&topic) {
                Ok(()) => Some(topic),
                Err(why) => {
                    src.report(src.at(template.span(), format!("sink {why}")));
                    None
                }
            }
        }
    };
    if let (None, Some(file)) = (&raw.username, &raw.password_file) {
        src.report(src.at(
            file.span(),
            "`password_file` needs `username`: the broker logs a user in with both",
        ));
        return None;
    }
    Some(SinkConfig::Mqtt {
        url: url?,
        topic: topic?,
        client_id: format!("nrf-provd-{station_id}"),
        username: raw.username.map(Spanned::into_inner),
        password_file: raw.password_file.map(|f| resolve(f.into_inner())),
        timeout,
    })
}
