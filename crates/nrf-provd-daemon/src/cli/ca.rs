//! `nrf-provd ca create`: make the station CA that signs device
//! certificates, and print the `[ca]` lines for station.toml.
//!
//! Exit status: 0 written; 2 on bad arguments, a file that already exists
//! (without `--force`) or an I/O error.
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use der::Decode;

use super::error_exit;
use crate::ca::{self, StationCa};
use secure_file::{self, DirectoryCheck};

/// File names inside `--out`, as config/station.toml names them.
pub const CERTIFICATE_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "ca.key";
const DEFAULT_DAYS: u32 = 3650;

#[derive(Debug, clap::Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create a station CA: a P-256 key (ca.key, mode 0600) and a
    /// self-signed CA certificate (ca.pem), and print the `[ca]` lines to
    /// paste into station.toml.
    #[command(after_help = CREATE_HELP)]
    Create(CreateArgs),
}

const CREATE_HELP: &str = "\
Example (the packaged service runs as user nrf-provd, which must be able to read the key):
  sudo nrf-provd ca create --out /etc/nrf-provd --owner nrf-provd --subject 'CN=Line 3 CA,O=Acme'";

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Directory for ca.pem and ca.key (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Subject of the CA certificate as an RFC 4514 name, e.g.
    /// `CN=Line 3 CA,O=Acme`. Default: `CN=nrf-provd station CA <hostname>`.
    #[arg(long, value_name = "DN")]
    pub subject: Option<String>,
    /// Validity of the CA certificate in days, from now.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Give both files to this user and its primary group (needs root),
    /// e.g. the service user `nrf-provd`.
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Replace ca.pem and ca.key if they exist (the old key is lost: devices
    /// certified by it no longer chain to the new CA).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: CaArgs) -> ExitCode {
    match args.command {
        CaCommand::Create(args) => create(args),
    }
}

fn create(args: CreateArgs) -> ExitCode {
    match create_files(&args) {
        Ok(created) => {
            print!("{}", created.paste_text());
            if args.owner.is_none() && nix::unistd::geteuid().is_root() {
                eprintln!(
                    "note: the key belongs to root; the packaged service runs as nrf-provd and \
                     cannot read it: add `--owner nrf-provd` (with --force) or `chown nrf-provd: {}`",
                    created.key.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(message) => error_exit(message),
    }
}

/// What `ca create` made.
#[derive(Debug)]
pub struct Created {
    /// Absolute paths.
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub subject: String,
    /// RFC 3339, UTC.
    pub not_after: String,
}

impl Created {
    /// TOML to paste into station.toml: comments, then the `[ca]` table.
    pub fn paste_text(&self) -> String {
        format!(
            "# Station CA {subject}, valid until {not_after}.\n\
             # Keep ca.key secret (mode 0600); ca.pem may be shared.\n\
             [ca]\n\
             certificate = {certificate}\n\
             key = {key}\n",
            subject = self.subject,
            not_after = self.not_after,
            certificate = toml_string(&self.certificate),
            key = toml_string(&self.key),
        )
    }
}

fn toml_string(path: &Path) -> String {
    // Display is lossless here: the paths were checked to be UTF-8.
    toml::Value::String(path.display().to_string()).to_string()
}

/// Generate the CA and write it into `args.out`.
pub fn create_files(args: &CreateArgs) -> Result<Created, String> {
    let subject = match &args.subject {
        Some(text) => ca::parse_subject(text).map_err(|e| e.to_string())?,
        None => ca::common_name(&default_common_name()).map_err(|e| e.to_string())?,
    };
    let owner = args.owner.as_deref().map(lookup_owner).transpose()?;
    if let Some((uid, _)) = owner {
        let me = nix::unistd::geteuid();
        if !me.is_root() && me != uid {
            return Err(format!(
                "--owner {}: only root can give files to another user",
                args.owner.as_deref().unwrap_or_default()
            ));
        }
    }

    // 0755 whatever the umask allows: a group-writable directory would be refused below.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&args.out)
        .map_err(|e| format!("{}: cannot create directory: {e}", args.out.display()))?;
    let dir =
        std::fs::canonicalize(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    if dir.to_str().is_none() {
        return Err(format!(
            "{}: the path is not UTF-8, which station.toml cannot name",
            dir.display()
        ));
    }
    // The key is refused at load when others could replace it: refuse such
    // a directory now, and so never write where a name can be swapped.
    let file_owner = owner.map_or_else(nix::unistd::geteuid, |(uid, _)| uid);
    secure_file::check_directories(&dir, file_owner.as_raw()).map_err(|e| match e {
        DirectoryCheck::Io(e) => format!("{}: {e}", dir.display()),
        DirectoryCheck::Unsafe(problem) => format!("--out {}: {problem}", args.out.display()),
    })?;
    let certificate = dir.join(CERTIFICATE_FILE);
    let key = dir.join(KEY_FILE);

    let validity = Duration::from_secs(u64::from(args.days) * 86_400);
    let station_ca =
        StationCa::generate_with_subject(subject, std::time::SystemTime::now(), validity)
            .map_err(|e| e.to_string())?;
    // Owner and mode are set on the new files' descriptors, never by a
    // name someone could have pointed elsewhere meanwhile.
    station_ca
        .write_owned(&certificate, &key, args.force, owner)
        .map_err(|e| match e {
            ca::CaError::Exists { path } => format!(
                "{}: already exists; not overwritten (pass --force to replace the CA)",
                path.display()
            ),
            other => other.to_string(),
        })?;

    let cert = x509_cert::Certificate::from_der(&station_ca.certificate_der())
        .map_err(|e| format!("the new certificate does not parse: {e}"))?;
    Ok(Created {
        certificate,
        key,
        subject: station_ca.subject().to_string(),
        not_after: rfc3339(cert.tbs_certificate.validity.not_after.to_system_time()),
    })
}

/// `nrf-provd station CA <hostname>`, cut to the 64 characters a CN may have.
fn default_common_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut cn = format!("nrf-provd station CA {host}");
    if let Some((at, _)) = cn.char_indices().nth(64) {
        cn.truncate(at);
    }
    cn
}

fn lookup_owner(name: &str) -> Result<(nix::unistd::Uid, nix::unistd::Gid), String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok((user.uid, user.gid)),
        Ok(None) => Err(format!("--owner {name}: no such user")),
        Err(e) => Err(format!("--owner {name}: cannot look the user up: {e}")),
    }
}

fn rfc3339(time: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "(unknown)".into())
}
