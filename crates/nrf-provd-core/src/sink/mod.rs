//! Downstream sinks (an MES, a site's script): every finished run delivered
//! to each configured sink, at least once, oldest first, and idempotent by
//! the run's uid at the receiver.
//!
//! The outbox is the station's SQLite (`ledger::deliveries`): a run owes a
//! delivery to each sink configured when it finished, written in the
//! transaction that finishes it. Each sink has a task of its own
//! ([`deliver`]), on a thread of the sinks' own: a sink that is down or
//! slow holds neither the station nor the other sinks.
//!
//! A sink is one implementation of [`Sink`] in a file of this module and
//! its arm in [`open`] (the registry), with its settings in [`SinkConfig`].
//! The line's shared ledger is a sink of the same outbox that sends
//! batches: its task is `ledger::line`'s forwarder (`SinkId::LINE`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::ledger::{RunId, RunRecord};

mod command;
pub mod deliver;
pub mod health;
pub mod mqtt;
pub mod webhook;

pub use command::CommandSink;
pub use deliver::{Deliveries, StartError, start};
pub use health::SinkHealth;
pub use mqtt::MqttSink;
pub use webhook::WebhookSink;

/// A run as every sink sends it: the JSON the HTTP API gives a viewer
/// ([`RunRecord::write_json`]; no token text, CSR or certificate).
#[derive(Debug, Clone)]
pub struct RunJson {
    pub id: RunId,
    pub uid: Uuid,
    /// What a receiver dedupes by: the run's uid, or `<uid>:amended` once a
    /// line's conflict amended the run after it finished (sent again then,
    /// and not to be dropped as a duplicate).
    pub key: String,
    pub body: Vec<u8>,
}

impl RunJson {
    pub fn of(run: &RunRecord) -> RunJson {
        let mut body = Vec::new();
        run.write_json(&mut body, false);
        let uid = run.uid.hyphenated();
        RunJson {
            id: run.id,
            uid: run.uid,
            // Only an amendment sets `conflict` (ledger::outbox::Conflict).
            key: match run.reason_code {
                Some(crate::record::ReasonCode::Conflict) => format!("{uid}:amended"),
                _ => uid.to_string(),
            },
            body,
        }
    }
}

/// What a sink made of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver has it: the run leaves this sink's outbox.
    Ack,
    /// Not now (down, busy, timed out): try again, after `after` when the
    /// receiver said so, else after the sink's backoff.
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// The receiver refused it for good: a dead letter with its answer,
    /// kept until retried by hand; the next runs go on.
    Dead { answer: String },
}

/// One downstream.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Kind and URL (and topic) or command, e.g. `command /usr/local/bin/mes-push --json`:
    /// how the outbox, `/metrics` and `deliveries` name it.
    fn name(&self) -> &str;
    /// Deliver `run` once. Never panics on what the receiver answers; the
    /// caller bounds it with [`SinkConfig::deadline`] too.
    async fn deliver(&self, run: &RunJson) -> Delivery;
}

/// A configured sink (`[[sink]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// Run a program with the run's JSON on stdin; exit 0 acknowledges.
    Command { run: Vec<String>, timeout: Duration },
    /// POST the run's JSON to `url`, signed with the secret in `secret_file`.
    Webhook {
        url: String,
        secret_file: PathBuf,
        timeout: Duration,
    },
    /// Publish the run's JSON at QoS 1 to `topic` on the broker at `url`;
    /// the broker's PUBACK acknowledges.
    Mqtt {
        url: String,
        /// The topic with `{station_id}` already replaced.
        topic: String,
        /// The station's MQTT client id (unique per broker).
        client_id: String,
        username: Option<String>,
        password_file: Option<PathBuf>,
        timeout: Duration,
    },
}

/// The default for a sink's `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl SinkConfig {
    /// Its name in the outbox (see [`Sink::name`]); never a secret.
    pub fn name(&self) -> String {
        match self {
            SinkConfig::Command { run, .. } => format!("command {}", run.join(" ")),
            SinkConfig::Webhook { url, .. } => format!("webhook {url}"),
            SinkConfig::Mqtt { url, topic, .. } => format!("mqtt {url} {topic}"),
        }
    }

    /// How long one delivery may take in all before it counts as a retry.
    pub fn deadline(&self) -> Duration {
        match self {
            SinkConfig::Command { timeout, .. } => *timeout + Duration::from_secs(1),
            // Connecting and answering each have the timeout.
            SinkConfig::Webhook { timeout, .. } | SinkConfig::Mqtt { timeout, .. } => {
                *timeout * 2 + Duration::from_secs(1)
            }
        }
    }
}

/// Why a sink could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {detail}")]
    Invalid { sink: String, detail: String },
}

/// The registry: a configured sink's implementation.
pub fn open(config: &SinkConfig) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(match config {
        SinkConfig::Command { run, timeout } => Arc::new(CommandSink::new(run.clone(), *timeout)?),
        SinkConfig::Webhook {
            url,
            secret_file,
            timeout,
        } => Arc::new(WebhookSink::new(url, secret_file, *timeout)?),
        SinkConfig::Mqtt {
            url,
            topic,
            client_id,
            username,
            password_file,
            timeout,
        } => Arc::new(MqttSink::new(&mqtt::MqttSettings {
            url,
            topic,
            client_id,
            username: username.as_deref(),
            password_file: password_file.as_deref(),
            timeout: *timeout,
        })?),
    })
}
