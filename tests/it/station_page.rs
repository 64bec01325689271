//! The station page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/test-deps`), driven over
//! WebDriver: tiles go idle → running → passed without a reload, a faulted
//! board's tile says why, and after the daemon restarts the page reconnects
//! by itself. The screenshot in the README is taken here
//! (`NRF_PROVD_SCREENSHOT=docs/station-page.png` writes it there).
//!
//! Without Chromium the test fails under `CI=true` and, elsewhere, says on
//! stderr that it skipped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use fantoccini::{Client, ClientBuilder};

use crate::station_support::{Daemon, Env};
use nrf91_sim::fault::FaultSet;
use nrf91_sim::pty::PtyPort;
use nrf91_sim::server::{SessionConfig, run_session};
use nrf91_sim::{Latency, Modem, ModemIdentity, SimDialect};
use rand::SeedableRng;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: [&str; 2] = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

/// The browser binary, or why the test cannot run.
pub(crate) fn browser() -> Result<&'static str, String> {
    if !Path::new(CHROMEDRIVER).exists() {
        return Err(format!(
            "{CHROMEDRIVER} is missing (Debian package chromium-driver)"
        ));
    }
    CHROMIUM
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| "Chromium is missing (Debian package chromium)".to_string())
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// chromedriver on a port of its own, killed when dropped.
pub(crate) struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    pub(crate) fn start() -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn open_browser(driver: &Driver, binary: &str, profile: &Path) -> Client {
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1600,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": binary, "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

/// Evaluate `script` until `done` holds for its value (bounded: a hang is
/// a failure, not a timing assertion).
pub(crate) async fn until(
    browser: &Client,
    what: &str,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        last = browser.execute(script, vec![]).await.expect("script");
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let html = browser.source().await.unwrap_or_default();
    panic!("{what}: not within 120 s (last {last}); page:\n{html}");
}

pub(crate) fn tile_js(port: &str, expression: &str) -> String {
    format!(
        "const t = document.querySelector('.tile[data-port=\"{port}\"]'); return t ? {expression} : null;"
    )
}

pub(crate) async fn tile_state(browser: &Client, port: &str, state: &str) -> Value {
    until(
        browser,
        &format!("tile {port} {state}"),
        &tile_js(port, "t.dataset.state"),
        |v| v == state,
    )
    .await
}

/// Records, inside the page, every state each tile showed; survives only
/// as long as the page is not reloaded.
const WATCH_TILES: &str = r#"
window.__seen = {};
const note = n => {
  if (!n.dataset || !n.dataset.port) return;
  const s = (window.__seen[n.dataset.port] = window.__seen[n.dataset.port] || []);
  if (s[s.length - 1] !== n.dataset.state) s.push(n.dataset.state);
};
document.querySelectorAll('.tile').forEach(note);
new MutationObserver(ms => ms.forEach(m => m.addedNodes.forEach(note)))
  .observe(document.getElementById('tiles'), { childList: true });
return true;
"#;

/// A fixture slot with no board in it: a port whose bytes go nowhere (as
/// a UART's with nothing on the other end), until a board is put in.
struct EmptyFixture {
    void: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<PtyPort>,
    )>,
    identity: ModemIdentity,
}

impl EmptyFixture {
    fn new(link: &Path, identity: ModemIdentity) -> EmptyFixture {
        use tokio::io::AsyncReadExt;
        let mut port = PtyPort::open(link).expect("pty");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let void = tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    _ = &mut stopped => return port,
                    read = port.read(&mut buf) => {
                        if read.is_err() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        });
        EmptyFixture {
            void: Some((stop, void)),
            identity,
        }
    }

    fn trust_line(&self) -> String {
        format!(
            "{},{}\n",
            self.identity.device_uuid,
            base64::engine::general_purpose::STANDARD.encode(self.identity.public_key_spki_der())
        )
    }

    /// Put a board in: a modem session on the fixture's port.
    async fn insert_board(&mut self) {
        let (stop, void) = self.void.take().expect("no board yet");
        let _ = stop.send(());
        let port = void.await.expect("the port back");
        let modem = Arc::new(std::sync::Mutex::new(Modem::new(
            self.identity.clone(),
            FaultSet::default(),
        )));
        if let Ok(mut m) = modem.lock() {
            m.boot();
        }
        let cfg = SessionConfig {
            dialect: SimDialect::Raw,
            latency: Latency::Realistic,
            baud: None,
            faults: FaultSet::default(),
            rng: rand::rngs::StdRng::seed_from_u64(99),
            costs: None,
            // A pty in real time, as the fleet's boards.
            precise: true,
        };
        tokio::spawn(async move {
            let mut port = port;
            let _ = run_session(&mut port, modem, cfg).await;
        });
    }
}

fn screenshot_path() -> PathBuf {
    std::env::var_os("NRF_PROVD_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("station-page.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_station_page_follows_the_boards_live_and_reconnects_after_a_restart() {
    let binary = match browser() {
        Ok(binary) => binary,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{why}: scripts/test-deps installs it, and CI must run this test")
        }
        Err(why) => {
            eprintln!("SKIPPED station_page: {why}; run scripts/test-deps to install it");
            return;
        }
    };
    // Boards 0 and 2 pass, 1 and 3 fail (a forged signature, a key nobody
    // trusts); fixture 4 is empty until a board is put in; 5 stays empty.
    let env = Env::new(
        4,
        Latency::Realistic,
        &["1:bad-signature", "3:untrusted-key"],
    )
    .await;
    let ports = env.dir.path().join("ports");
    let mut late = EmptyFixture::new(&ports.join("ttySIM4"), ModemIdentity::from_seed(7, 4));
    let _empty = EmptyFixture::new(&ports.join("ttySIM5"), ModemIdentity::from_seed(7, 5));
    let mut trust = std::fs::read_to_string(env.trust_file()).expect("trust file");
    trust.push_str(&late.trust_line());
    std::fs::write(env.trust_file(), trust).expect("trust file");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = env.write_config(|t| {
        *t = t
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{listen}\""),
            )
            .replace("station_id = \"test\"", "station_id = \"line1-station07\"");
        // A downstream that refuses every run: the page's Downstream table.
        t.push_str(
            "\n[[sink]]\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"cat >/dev/null; exit 3\"]\n",
        );
    });
    let port = |i: usize| ports.join(format!("ttySIM{i}")).display().to_string();

    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let browser = open_browser(&driver, binary, profile.path()).await;
    let mut daemon = Daemon::spawn(&config);
    assert_eq!(daemon.http_addr().await, listen);
    browser
        .goto(&format!("http://{listen}/"))
        .await
        .expect("load the page");
    until(
        &browser,
        "page live",
        "return document.getElementById('link').dataset.state",
        |v| v == "live",
    )
    .await;
    browser
        .execute(WATCH_TILES, vec![])
        .await
        .expect("watch tiles");

    // The faulted boards say why, in words.
    tile_state(&browser, &port(1), "failed").await;
    let reason = browser
        .execute(&tile_js(&port(1), "t.innerText"), vec![])
        .await
        .expect("tile text");
    let reason = reason.as_str().unwrap_or_default();
    assert!(reason.contains("FAILED"), "{reason}");
    assert!(reason.contains("at attest"), "{reason}");
    assert!(reason.contains("signature"), "{reason}");
    assert!(reason.contains("IMEI 35"), "{reason}");
    tile_state(&browser, &port(3), "failed").await;
    let untrusted = browser
        .execute(&tile_js(&port(3), "t.innerText"), vec![])
        .await
        .expect("tile text");
    assert!(
        untrusted
            .as_str()
            .is_some_and(|t| t.contains("key_trusted")),
        "{untrusted}"
    );
    tile_state(&browser, &port(0), "passed").await;
    tile_state(&browser, &port(2), "passed").await;
    tile_state(&browser, &port(4), "idle").await;
    tile_state(&browser, &port(5), "idle").await;

    // A board goes into the empty fixture: idle → running → passed, live.
    late.insert_board().await;
    tile_state(&browser, &port(4), "running").await;
    until(
        &browser,
        "tile 4 at keygen",
        &tile_js(&port(4), "t.querySelector('.step').textContent"),
        |v| v.as_str().is_some_and(|s| s.starts_with("keygen")),
    )
    .await;
    // Who the board says it is shows while it runs, not only at the end.
    let running = browser
        .execute(&tile_js(&port(4), "t.innerText"), vec![])
        .await
        .expect("tile text");
    assert!(
        running.as_str().is_some_and(|t| t.contains("IMEI 35")),
        "{running}"
    );
    // The sink that refuses: its row says what it owes and that it retries.
    let row = until(
        &browser,
        "the Downstream table lists the sink retrying",
        "const b = document.getElementById('sinks-box'); \
         const r = document.querySelector('#sinks tbody tr'); \
         return b && !b.hidden && r ? [...r.cells].map(c => c.textContent) : null;",
        |v| {
            v.as_array().is_some_and(|cells| {
                cells.len() == 5 && cells[3].as_str().is_some_and(|n| n != "0")
            })
        },
    )
    .await;
    let cells: Vec<&str> = row
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(cells[0].starts_with("command sh -c"), "{cells:?}");
    assert!(
        cells[1].parse::<u32>().is_ok_and(|owed| owed >= 1),
        "{cells:?}"
    );
    assert!(cells[2].ends_with("ago"), "{cells:?}");
    let png = browser.screenshot().await.expect("screenshot");
    let shot = screenshot_path();
    std::fs::write(&shot, &png).expect("write screenshot");
    eprintln!("station page screenshot: {}", shot.display());
    tile_state(&browser, &port(4), "passed").await;
    let seen = browser
        .execute(&format!("return window.__seen['{}']", port(4)), vec![])
        .await
        .expect("seen");
    let seen: Vec<&str> = seen
        .as_array()
        .unwrap_or_else(|| panic!("the page was reloaded: {seen}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = |s: &str| seen.iter().position(|x| *x == s);
    assert!(
        matches!((at("idle"), at("running"), at("passed")), (Some(i), Some(r), Some(p)) if i < r && r < p),
        "tile 4 showed {seen:?}"
    );
    let counters = browser
        .execute(
            "return ['c-boards','c-passed','c-failed'].map(id => document.getElementById(id).textContent)",
            vec![],
        )
        .await
        .expect("counters");
    assert_eq!(counters, json!(["5", "3", "2"]));
    let failures = browser
        .execute(
            "return document.querySelectorAll('#failures tbody tr').length",
            vec![],
        )
        .await
        .expect("failures");
    assert_eq!(failures, json!(2));

    // The daemon restarts: the page says it is not live, then reconnects
    // by itself (no reload: the page's own record survives).
    assert!(daemon.stop().await.success());
    until(
        &browser,
        "page notices",
        "return document.getElementById('link').dataset.state",
        |v| v == "reconnecting",
    )
    .await;
    let stale = browser
        .execute("return document.getElementById('stale').hidden", vec![])
        .await
        .expect("stale banner");
    assert_eq!(stale, json!(false), "the page says it is not live");
    let mut daemon = Daemon::spawn(&config);
    assert_eq!(daemon.http_addr().await, listen);
    until(
        &browser,
        "page reconnects",
        "return document.getElementById('link').dataset.state",
        |v| v == "live",
    )
    .await;
    let kept = browser
        .execute("return typeof window.__seen", vec![])
        .await
        .expect("seen");
    assert_eq!(kept, json!("object"), "reconnected without a reload");
    // The new daemon's boards appear on the same page.
    daemon.runs_finished(1).await;
    until(
        &browser,
        "a tile from the new daemon",
        "return document.querySelectorAll('.tile[data-state=\"running\"], .tile[data-state=\"passed\"], .tile[data-state=\"failed\"]').length",
        |v| v.as_u64().is_some_and(|n| n >= 1),
    )
    .await;
    assert!(daemon.stop().await.success());
    let _ = browser.close().await;
}
