//! A throwaway Mosquitto broker for one test: its own config file in a
//! directory of its own, one listener on 127.0.0.1 (a free port, kept
//! across a stop and start), anonymous clients. Its sessions persist into
//! that directory only, so a subscriber's session survives the broker's
//! restart and a test can tell what the broker took while the subscriber
//! was away. Dropped, it stops the broker, also when the test fails.
//!
//! Under `CI=true` a broker that cannot start fails the test; elsewhere the
//! test is skipped and says so on stderr (as for [`crate::pg`]).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian's `mosquitto` package installs the broker.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// Start a broker for `test`, or `None` (said on stderr) when this machine
/// cannot and it is not CI.
pub fn broker(test: &str, dir: &Path) -> Option<Broker> {
    match Broker::start(dir) {
        Ok(broker) => Some(broker),
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "{test}: cannot start a Mosquitto broker: {why} (scripts/test-deps installs it)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped: cannot start a Mosquitto broker: {why} (run scripts/test-deps)"
            );
            None
        }
    }
}

impl Broker {
    fn start(dir: &Path) -> Result<Broker, String> {
        if !Path::new(MOSQUITTO).exists() {
            return Err(format!("no {MOSQUITTO}"));
        }
        let port = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // As root Mosquitto would switch to its own user, who cannot write here.
        let user = if nix::unistd::geteuid().is_root() {
            "user root\n"
        } else {
            ""
        };
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n\
             persistence true\npersistence_location {}/\n{user}log_dest stderr\n",
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), config).map_err(|e| e.to_string())?;
        let mut broker = Broker {
            dir,
            port,
            child: None,
        };
        broker.resume()?;
        Ok(broker)
    }

    /// The URL a client configures: `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop the broker (SIGTERM: it saves its sessions) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, with the sessions it saved; returns
    /// once it accepts connections.
    pub fn resume(&mut self) -> Result<(), String> {
        let log =
            std::fs::File::create(self.dir.join("mosquitto.log")).map_err(|e| e.to_string())?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{MOSQUITTO}: {e}"))?;
        self.child = Some(child);
        for _ in 0..200 {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log =
                    std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
                return Err(format!("mosquitto exited ({status}): {}", log.trim()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err(format!(
            "mosquitto did not listen on port {} within 10 s",
            self.port
        ))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
