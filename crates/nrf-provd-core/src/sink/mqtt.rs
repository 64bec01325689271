//! `kind = "mqtt"`: the run's JSON published at QoS 1 to a topic of the
//! station's (default `nrf-provd/{station_id}/runs`); acknowledged when the
//! broker's PUBACK for that publish arrives, not before. A broker that is
//! down, refuses the connection or does not answer in time is retried.
//! TLS (`mqtts://`) is rustls with the system's trust store (as for nRF
//! Cloud); plain `mqtt://` only to this machine. An optional user name and
//! password (from a 0600 file) log in.
//!
//! One connection, used only while a delivery runs (the sink's task sends
//! one run at a time): a clean session, so a publish cut off by a failure
//! is not replayed by the client beside the outbox's own retry.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Url;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS, Transport,
};
use secure_file::Holds;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::{Delivery, RunJson, Sink, SinkError};
use crate::cloud::is_loopback_host;

/// The topic when the config names none; `{station_id}` is replaced.
pub const DEFAULT_TOPIC: &str = "nrf-provd/{station_id}/runs";
/// A password file longer than this is not a password but a mistake.
const MAX_PASSWORD: u64 = 4096;
/// The MQTT keep-alive; a connection idle longer than this is assumed
/// gone (the broker drops it after 1.5 times this) and made afresh.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The largest run JSON the client sends (the broker may allow less).
const MAX_PACKET: usize = 1 << 20;

/// A broker URL as configured: `mqtts://host[:port]`, or `mqtt://` to this
/// machine only (the runs and the password would cross the network in
/// clear); no credentials, path or query in it. Gives host, port and TLS.
pub fn check_url(text: &str) -> Result<(String, u16, bool), String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{text:?} names no host"))?;
    let tls = match url.scheme() {
        "mqtts" => true,
        "mqtt" if is_loopback_host(host) => false,
        "mqtt" => {
            return Err(format!(
                "{text:?}: plain mqtt:// to another machine would send the runs and the password in clear; \
                 use mqtts:// (mqtt:// is for this machine only: 127.0.0.0/8, ::1, localhost)"
            ));
        }
        other => return Err(format!("{text:?}: scheme {other}:// is not mqtt(s)://")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} must not carry credentials (use `username` and `password_file`)"
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?}: a broker URL is mqtt(s)://host:port; the topic is `topic`"
        ));
    }
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port, tls))
}

/// A topic to publish to: not empty, no wildcard (`+`, `#`) and no NUL,
/// at most MQTT's 65535 bytes.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > usize::from(u16::MAX) {
        return Err(format!("topic {topic:?} must be 1 to 65535 bytes"));
    }
    if let Some(c) = topic.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        return Err(format!(
            "topic {topic:?} holds {c:?}: a wildcard (or NUL) cannot be published to"
        ));
    }
    Ok(())
}

/// `template` with `{station_id}` replaced.
pub fn topic_for(template: &str, station_id: &str) -> String {
    template.replace("{station_id}", station_id)
}

/// Why an MQTT password file is not used.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("{}: cannot read the MQTT password: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Unsafe(#[from] secure_file::UnsafeFile),
    #[error("{}: the MQTT password is empty, not UTF-8 or longer than {MAX_PASSWORD} bytes", path.display())]
    Invalid { path: PathBuf },
}

/// The MQTT password from `path`: refused when others may read it (or its
/// directories let others replace it); trailing whitespace dropped.
pub fn read_password(path: &Path) -> Result<Zeroizing<String>, PasswordError> {
    let io = |source| PasswordError::Io {
        path: path.to_owned(),
        source,
    };
    let file = secure_file::open(path, "MQTT password", Holds::Secret)
        .map_err(|refusal| refusal.into_error(io))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PASSWORD + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let invalid = || PasswordError::Invalid {
        path: path.to_owned(),
    };
    if bytes.len() as u64 > MAX_PASSWORD {
        return Err(invalid());
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    let text = text.trim_end();
    if text.is_empty() {
        return Err(invalid());
    }
    Ok(Zeroizing::new(text.to_string()))
}

/// The settings of an MQTT sink (`SinkConfig::Mqtt`'s).
pub struct MqttSettings<'a> {
    pub url: &'a str,
    pub topic: &'a str,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub timeout: Duration,
}

pub struct MqttSink {
    name: String,
    topic: String,
    timeout: Duration,
    connection: Mutex<Connection>,
}

struct Connection {
    client: AsyncClient,
    events: EventLoop,
    /// When the event loop was last polled: past [`KEEP_ALIVE`] the
    /// connection is made afresh rather than found dead by a delivery.
    last_polled: Option<Instant>,
}

impl MqttSink {
    pub fn new(settings: &MqttSettings<'_>) -> Result<MqttSink, SinkError> {
        let name = format!("mqtt {} {}", settings.url, settings.topic);
        let invalid = |detail: String| SinkError::Invalid {
            sink: name.clone(),
            detail,
        };
        let (host, port, tls) = check_url(settings.url).map_err(&invalid)?;
        check_topic(settings.topic).map_err(&invalid)?;
        let mut options = MqttOptions::new(settings.client_id, host, port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_inflight(1);
        if tls {
            let mut config = crate::cloud::tls_config().map_err(|e| invalid(e.to_string()))?;
            // The nRF Cloud client asks for HTTP; a broker speaks MQTT.
            config.alpn_protocols.clear();
            options.set_transport(Transport::tls_with_config(config.into()));
        }
        match (settings.username, settings.password_file) {
            (Some(user), password) => {
                let password = match password {
                    Some(path) => read_password(path).map_err(|e| invalid(e.to_string()))?,
                    None => Zeroizing::new(String::new()),
                };
                options.set_credentials(user, password.as_str());
            }
            (None, Some(_)) => {
                return Err(invalid("`password_file` needs `username`".into()));
            }
            (None, None) => {}
        }
        let (client, mut events) = AsyncClient::new(options, 1);
        events
            .network_options
            .set_connection_timeout(settings.timeout.as_secs().max(1));
        Ok(MqttSink {
            name,
            topic: settings.topic.to_string(),
            timeout: settings.timeout,
            connection: Mutex::new(Connection {
                client,
                events,
                last_polled: None,
            }),
        })
    }
}

impl Connection {
    /// Publish `body` and wait for the broker's PUBACK of that publish.
    async fn publish(&mut self, topic: &str, body: &[u8]) -> Result<(), String> {
        if self
            .last_polled
            .is_some_and(|at| at.elapsed() >= KEEP_ALIVE)
        {
            // Dropped by the broker by now; a new connection, clean session.
            self.events.clean();
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.to_vec())
            .await
            .map_err(|e| format!("cannot queue the publish: {e}"))?;
        let mut ours = None;
        loop {
            let event = self.events.poll().await;
            self.last_polled = Some(Instant::now());
            match event.map_err(|e| describe(&e))? {
                Event::Outgoing(Outgoing::Publish(pkid)) => ours = Some(pkid),
                Event::Incoming(Incoming::PubAck(ack)) if Some(ack.pkid) == ours => return Ok(()),
                _ => {}
            }
        }
    }
}

/// A connection error in words (the broker's refusal named).
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}

#[async_trait]
impl Sink for MqttSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, run: &RunJson) -> Delivery {
        let mut connection = self.connection.lock().await;
        let published = tokio::time::timeout(
            // Connecting and the PUBACK each have the timeout.
            self.timeout * 2,
            connection.publish(&self.topic, &run.body),
        )
        .await;
        match published {
            Ok(Ok(())) => Delivery::Ack,
            Ok(Err(error)) => Delivery::Retry { after: None, error },
            Err(_) => {
                // Whatever was in flight is dropped; the next attempt
                // connects afresh and publishes the run again.
                connection.events.clean();
                Delivery::Retry {
                    after: None,
                    error: "no PUBACK in time".to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mqtt_goes_only_to_this_machine() {
        assert_eq!(
            check_url("mqtt://127.0.0.1:1884"),
            Ok(("127.0.0.1".into(), 1884, false))
        );
        assert_eq!(check_url("mqtt://[::1]"), Ok(("::1".into(), 1883, false)));
        assert_eq!(
            check_url("mqtts://broker.example"),
            Ok(("broker.example".into(), 8883, true))
        );
        let refused = check_url("mqtt://broker.example:1883").unwrap_err();
        assert!(refused.contains("in clear"), "{refused}");
        assert!(check_url("mqtts://user:pw@broker.example").is_err());
        assert!(check_url("mqtts://broker.example/runs").is_err());
        assert!(check_url("https://broker.example").is_err());
    }

    #[test]
    fn a_topic_is_the_template_for_this_station_and_never_a_wildcard() {
        assert_eq!(
            topic_for(DEFAULT_TOPIC, "line3-st7"),
            "nrf-provd/line3-st7/runs"
        );
        assert!(check_topic("nrf-provd/line3-st7/runs").is_ok());
        assert!(check_topic("nrf-provd/+/runs").is_err());
        assert!(check_topic("nrf-provd/#").is_err());
        assert!(check_topic("").is_err());
    }
}
