//! `kind = "mqtt"`: the run's JSON published at QoS 1 to a topic of the
//! station's (default `nrf-provd/{station_id}/runs`); acknowledged when the
//! broker's PUBACK for that publish arrives, not before. A broker that is
//! down, refuses the connection or does not answer in time is retried.
//! TLS (`mqtts://`) is rustls with the system's trust store (as for nRF
//! Cloud); plain `mqtt://` only to this machine. An optional user name and
//! password (from a 0600 file) log in.
//!
//! One connection, kept open and polled by a task of its own (so the
//! broker sees the station as long as it runs), with a clean session: a
//! publish cut off by a failure is not replayed by the client beside the
//! outbox's own retry. The connection is made afresh after a failure or a
//! timeout, so nothing from an earlier attempt is mistaken for this one's
//! PUBACK.
//!
//! **Station status**: `{"state":"online"}`, retained, at each connect on
//! the status topic (the run topic's last level replaced by `status`:
//! `nrf-provd/<station>/status` by default), and `{"state":"offline"}`,
//! retained, as the connection's last will: the broker publishes it when
//! the station's connection ends without a goodbye (a crash, a pulled
//! cable, the daemon stopping). A subscriber that comes later reads the
//! last of the two.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    Transport,
};
use secure_file::Holds;
use tokio::sync::{Mutex, mpsc};
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
/// The retained status while the station's connection is up, and its
/// last will.
pub const ONLINE: &str = r#"{"state":"online"}"#;
pub const OFFLINE: &str = r#"{"state":"offline"}"#;
/// How long the connection's task waits before connecting again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Notes kept for a delivery that is not waiting (stale ones are dropped).
const NOTES: usize = 64;

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

/// Where the station's retained status goes: the run topic's last level
/// replaced by `status` (`factory/s1/runs` → `factory/s1/status`), or
/// `<topic>/status` for a topic of one level.
pub fn status_topic(topic: &str) -> String {
    match topic.rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/status"),
        None => format!("{topic}/status"),
    }
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
    options: MqttOptions,
    link: Mutex<Option<Link>>,
}

/// What the connection's task tells a delivery.
enum Note {
    /// A QoS 1 publish went out with this packet id.
    Sent(u16),
    Acked(u16),
    /// The connection failed (the task connects again by itself).
    Down(String),
}

/// The connection: its client, and the notes of its task, which polls it.
struct Link {
    client: AsyncClient,
    notes: mpsc::Receiver<Note>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // The socket closes without a DISCONNECT: the broker publishes
        // the last will (offline).
        self.task.abort();
    }
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
            .set_inflight(1)
            .set_last_will(LastWill::new(
                status_topic(settings.topic),
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
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
        let mut sink = MqttSink {
            name,
            topic: settings.topic.to_string(),
            timeout: settings.timeout,
            options,
            link: Mutex::new(None),
        };
        // Online from the start when there is a runtime to poll in;
        // otherwise at the first delivery.
        if tokio::runtime::Handle::try_current().is_ok() {
            let link = sink.connect();
            *sink.link.get_mut() = Some(link);
        }
        Ok(sink)
    }

    fn connect(&self) -> Link {
        // Room for a run's publish and the status published at connect.
        let (client, mut events) = AsyncClient::new(self.options.clone(), 2);
        events
            .network_options
            .set_connection_timeout(self.timeout.as_secs().max(1));
        let (notes_tx, notes) = mpsc::channel(NOTES);
        let task = tokio::spawn(drive(
            client.clone(),
            events,
            notes_tx,
            status_topic(&self.topic),
        ));
        Link {
            client,
            notes,
            task,
        }
    }
}

/// Poll the connection for as long as it lives, connecting again after a
/// failure; publish the retained online status at each connect.
async fn drive(
    client: AsyncClient,
    mut events: EventLoop,
    notes: mpsc::Sender<Note>,
    status_topic: String,
) {
    loop {
        let note = match events.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                // QoS 0: it never takes the one in-flight slot a run's
                // publish waits for (packet id 0, so never taken for one).
                let _ = client.try_publish(&status_topic, QoS::AtMostOnce, true, ONLINE);
                continue;
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => Note::Sent(pkid),
            Ok(Event::Incoming(Incoming::PubAck(ack))) => Note::Acked(ack.pkid),
            Ok(_) => continue,
            Err(e) => {
                let _ = notes.try_send(Note::Down(describe(&e)));
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        // Nobody waiting and the notes full: they are stale; drop it.
        let _ = notes.try_send(note);
    }
}

impl Link {
    /// Publish `body` and wait for the broker's PUBACK of that publish.
    async fn publish(&mut self, topic: &str, body: &[u8]) -> Result<(), String> {
        // What the task said before this publish is about earlier ones.
        while self.notes.try_recv().is_ok() {}
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.to_vec())
            .await
            .map_err(|e| format!("cannot queue the publish: {e}"))?;
        let mut ours = None;
        loop {
            match self.notes.recv().await {
                Some(Note::Sent(pkid)) => ours = Some(pkid),
                Some(Note::Acked(pkid)) if Some(pkid) == ours => return Ok(()),
                Some(Note::Acked(_)) => {}
                Some(Note::Down(error)) => return Err(error),
                None => return Err("the MQTT connection's task ended".into()),
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
        let mut link = self.link.lock().await;
        let connected = link.get_or_insert_with(|| self.connect());
        let published = tokio::time::timeout(
            // Connecting and the PUBACK each have the timeout.
            self.timeout * 2,
            connected.publish(&self.topic, &run.body),
        )
        .await;
        let failed = match published {
            Ok(Ok(())) => return Delivery::Ack,
            Ok(Err(error)) => error,
            Err(_) => "no PUBACK in time".to_string(),
        };
        // Whatever was in flight goes with this connection; the next
        // attempt connects afresh and publishes the run again.
        *link = None;
        Delivery::Retry {
            after: None,
            error: failed,
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

    #[test]
    fn the_status_goes_beside_the_runs() {
        assert_eq!(
            status_topic("nrf-provd/line3-st7/runs"),
            "nrf-provd/line3-st7/status"
        );
        assert_eq!(status_topic("factory/runs"), "factory/status");
        assert_eq!(status_topic("runs"), "runs/status");
    }
}
