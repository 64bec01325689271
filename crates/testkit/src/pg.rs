//! A throwaway PostgreSQL cluster for one test: `initdb` into a directory
//! of its own, the server on a Unix socket in that directory (no TCP), a
//! password (SCRAM) the tests hand to nrf-provd through a 0600 file. Never
//! a system database. Dropped, it stops the server and removes the
//! directory, also when the test fails. [`cluster_with_tls`] also listens
//! on 127.0.0.1 (a free port) with TLS only (`ssl = on`, a certificate the
//! test made; pg_hba.conf takes TCP clients over `hostssl` alone).
//!
//! `initdb` and `postgres` refuse to run as root: as root (CI) they run as
//! the `postgres` user through `runuser`, in directories that user owns
//! under a 0755 parent. Under `CI=true` a cluster that cannot start fails
//! the test; elsewhere the test is skipped and says so on stderr.

pub mod certs;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const USER: &str = "nrf";
const PASSWORD: &str = "line-ledger-test-pw";

pub struct PgCluster {
    root: PathBuf,
    data: PathBuf,
    run: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    /// A 0600 file holding the password, for `[ledger] password_file`.
    pub password_file: PathBuf,
    running: bool,
    /// TCP with TLS: the port on 127.0.0.1, and the server's options.
    tls: Option<(u16, String)>,
}

/// The server's certificate (PEM) and its key (PKCS#8 PEM).
pub struct ServerTls {
    pub certificate_pem: String,
    pub key_pem: String,
}

/// Start a cluster for `test`, or `None` (said on stderr) when this machine
/// cannot and it is not CI.
pub fn cluster(test: &str) -> Option<PgCluster> {
    started(test, PgCluster::start(None))
}

/// As [`cluster`], also listening on 127.0.0.1 with TLS only.
pub fn cluster_with_tls(test: &str, tls: &ServerTls) -> Option<PgCluster> {
    started(test, PgCluster::start(Some(tls)))
}

fn started(test: &str, cluster: Result<PgCluster, String>) -> Option<PgCluster> {
    match cluster {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "{test}: cannot start a PostgreSQL server: {why} (scripts/test-deps installs it)"
            );
            // Straight to stderr: libtest hides a passing test's eprintln!.
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped: cannot start a PostgreSQL server: {why} (run scripts/test-deps)"
            );
            None
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The newest installed server's binaries (Debian keeps them off PATH).
fn server_bin() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e}"))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb".to_string())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl PgCluster {
    fn start(tls: Option<&ServerTls>) -> Result<PgCluster, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let bin = server_bin()?;
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(format!(
            "nrf-provd-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        // Reachable by the postgres user; what is secret lives below.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let mut cluster = PgCluster {
            data: root.join("data"),
            run: root.join("run"),
            password_file: root.join("ledger.password"),
            root,
            bin,
            as_postgres,
            running: false,
            tls: None,
        };
        cluster.init()?;
        if let Some(tls) = tls {
            cluster.tls = Some(cluster.set_up_tls(tls)?);
        }
        cluster.start_server()?;
        Ok(cluster)
    }

    /// Certificate and key where the server reads them, pg_hba.conf taking
    /// TCP clients over TLS only, and a free port: the server's options.
    fn set_up_tls(&self, tls: &ServerTls) -> Result<(u16, String), String> {
        let cert = self.data.join("server.crt");
        let key = self.data.join("server.key");
        std::fs::write(&cert, &tls.certificate_pem).map_err(|e| e.to_string())?;
        self.for_server(&cert, 0o644)?;
        std::fs::write(&key, &tls.key_pem).map_err(|e| e.to_string())?;
        self.for_server(&key, 0o600)?;
        let hba = self.data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .map_err(|e| e.to_string())?;
        self.for_server(&hba, 0o600)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        );
        Ok((port, options))
    }

    /// The TCP port of a cluster with TLS.
    pub fn tls_port(&self) -> u16 {
        self.tls.as_ref().map_or(0, |(port, _)| *port)
    }

    fn dir_for_server(&self, path: &Path, mode: u32) -> Result<(), String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.for_server(path, mode)
    }

    /// `path` owned by the server's user, with `mode`.
    fn for_server(&self, path: &Path, mode: u32) -> Result<(), String> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| e.to_string())?;
        if self.as_postgres {
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(path)
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "chown postgres {}: {}",
                    path.display(),
                    text(&out.stderr)
                ));
            }
        }
        Ok(())
    }

    /// Run a server program, as the postgres user when we are root.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn checked(&self, mut command: Command, what: &str) -> Result<Output, String> {
        let out = command
            .current_dir(&self.root)
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "{what} failed ({}): {}{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            ))
        }
    }

    fn init(&self) -> Result<(), String> {
        self.dir_for_server(&self.data, 0o700)?;
        self.dir_for_server(&self.run, 0o755)?;
        let init_password = self.run.join("initdb.password");
        std::fs::write(&init_password, PASSWORD).map_err(|e| e.to_string())?;
        self.for_server(&init_password, 0o600)?;
        std::fs::write(&self.password_file, format!("{PASSWORD}\n")).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&self.password_file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        let mut initdb = self.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                USER,
                "-A",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", init_password.display()));
        self.checked(initdb, "initdb")?;
        let _ = std::fs::remove_file(&init_password);
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), String> {
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.run.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                // fsync off: a test's data need not survive the machine,
                // only the server (whose WAL the kernel still holds).
                "-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off {}",
                self.run.display(),
                self.tls
                    .as_ref()
                    .map_or("", |(_, options)| options.as_str())
            ))
            .arg("start");
        self.checked(pg_ctl, "pg_ctl start")
            .map_err(|e| format!("{e}\nserver log:\n{}", self.server_log()))?;
        self.running = true;
        Ok(())
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.run.join("server.log")).unwrap_or_default()
    }

    /// The URL a station's `[ledger] url` names (the password comes from
    /// [`Self::password_file`]).
    pub fn url(&self) -> String {
        let port = self
            .tls
            .as_ref()
            .map(|(port, _)| format!("&port={port}"))
            .unwrap_or_default();
        format!(
            "postgres://{USER}@/postgres?host={}{port}",
            self.run.display()
        )
    }

    /// A URL over TCP to a cluster with TLS: `host` names the server (the
    /// name its certificate is checked against), `query` the rest.
    pub fn tcp_url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://{USER}@{host}:{}/postgres?{query}",
            self.tls_port()
        )
    }

    /// `[ledger]` for a station's config.
    pub fn ledger_section(&self, mode: &str, extra: &str) -> String {
        format!(
            "\n[ledger]\nurl = \"{}\"\npassword_file = \"{}\"\nmode = \"{mode}\"\nforward_interval = 0.2\nclaim_timeout = 2\nconnect_timeout = 2\n{extra}\n",
            self.url(),
            self.password_file.display()
        )
    }

    /// Library settings for the same server.
    pub fn settings(&self) -> nrf_provd_core::ledger::PgSettings {
        let mut config = nrf_provd_core::ledger::LedgerConfig::for_url(self.url());
        config.password = nrf_provd_core::ledger::PasswordSource::File(self.password_file.clone());
        nrf_provd_core::ledger::PgSettings::new(&config).expect("ledger settings")
    }

    pub fn ledger(&self) -> nrf_provd_core::ledger::PostgresLedger {
        nrf_provd_core::ledger::PostgresLedger::new(&self.settings()).expect("ledger")
    }

    /// A plain client, for looking at the tables.
    pub async fn client(&self) -> tokio_postgres::Client {
        let mut config: tokio_postgres::Config = self.url().parse().expect("url");
        config.password(PASSWORD);
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the test server: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Kill the server as a crash would (`pg_ctl stop -m immediate`).
    pub fn kill(&mut self) {
        if !self.running {
            return;
        }
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"]);
        if let Err(e) = self.checked(pg_ctl, "pg_ctl stop") {
            panic!("{e}");
        }
        self.running = false;
    }

    /// Start it again after [`Self::kill`] (crash recovery, same data).
    pub fn restart(&mut self) {
        if let Err(e) = self.start_server() {
            panic!("restart the test server: {e}");
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut pg_ctl = self.server_command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-m", "immediate", "stop"]);
            let _ = pg_ctl.current_dir(&self.root).output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
