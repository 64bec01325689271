//! The modem core: state and command handling as a pure function of
//! `(state, command line, now)`; no I/O, no wall clock, seeded randomness.
//!
//! Rules enforced (reference `nrf91.md`): key and credential writes only when
//! offline (`+CFUN` 0 or 4, else 518), missing entries 513, a key already in
//! the sec_tag 519, modem-owned sec_tags (> 2147483647) 514, bad parameters
//! 50, unknown commands `ERROR`. CME errors read `ERROR` until `AT+CMEE=1`.
//!
//! Unknown on real modems, chosen here (documented so a host does not rely on
//! them): `+CFUN` accepts 0, 1, 2, 4 (1 and 2 count as active); `%CMNG` write
//! accepts types 0..=5 (6..=11 are 514) and overwrites an existing entry; the
//! store holds 32 user entries (then 515); reading a private key (type 2) or
//! PSK (type 3) is 514; a generated key lists with the SHA-256 of its public
//! key DER; the unset modem clock counts from 2000-01-01T00:00:00Z at boot;
//! `%JWT` without a subject uses the device UUID as `sub` (as in Nordic's
//! SDK test token) and omits an empty audience; the JWT header carries `kid`
//! = hex SHA-256 of the signing key's SPKI DER, and header and claims JSON are
//! padded with spaces to a multiple of 3 bytes (as the SDK's sample token of
//! a real modem shows, so that base64 has no padding); `%KEYGEN` key type 8
//! always returns the public key (payload id 8) and reuses an existing key.
//!
//! Firmware (`ModemIdentity::firmware`, read as Nordic's installer reads
//! it): `%ATTESTTOKEN`, `%KEYGEN` and `%JWT` answer `ERROR` (an unknown
//! command) below 1.3.0, `%CLAIMTOKEN` below 1.3.4; an NTN build knows
//! them all. The `%CMNG` list's digests are printed whatever the version
//! (what older firmware prints is not known).
//!
//! `%CLAIMTOKEN=<tag>[,"<challenge>"]` answers in the layout this project
//! ASSUMES (`nrf91_token::claim`: Nordic does not publish it): message
//! type 4, device UUID, device type, firmware UUID, the SHA-256 of the
//! ownership public key's SubjectPublicKeyInfo DER in `(tag, 9)` (of the
//! content as written when it is not a PEM public key), and the
//! challenge when one was given; the COSE payload detached. No ownership
//! key in the tag: 529. sec_tags 2147483648..=2147483667 (Nordic's
//! debug-decryptable ones) are the host's to use, like 0..=2147483647.
//!
//! Under the substitute fault (a keyless board relaying tokens captured from
//! a genuine one) a token command answers, under its own prefix, a genuine
//! token of another kind; what that token is made for is documented at
//! `Modem::captured`. The command's parameters and the modem's rules are
//! checked as usual first, and the delay stays the command's own.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use rand::{Rng, RngCore, rngs::StdRng};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::SimStats;
use super::fault::{CapturedToken, Fault, FaultSet};
use super::identity::{ModemIdentity, derived_rng, spki_der};
use super::syntax::{self, Command, Form, Param, normalize_name};
use crate::at::cclk;
use crate::token::cose::{self, KID_IDENTITY, Signing};
use crate::token::csr;
use crate::token::encode::{
    self, ClaimBody, IdentityBody, KeygenPayload, MSG_TYPE_CLAIM, MSG_TYPE_IDENTITY_V1,
    PAYLOAD_ID_CSR, PAYLOAD_ID_PUBLIC_KEY,
};
use nrf91_at::modem::{FirmwareVersion, MIN_FOR_CLAIMTOKEN, MIN_FOR_TOKENS, ModemFirmware};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};

/// Highest user sec_tag; higher ones belong to the modem, except
/// Nordic's debug-decryptable ones ([`DEBUG_SEC_TAGS`]).
pub const MAX_USER_SEC_TAG: u64 = 2_147_483_647;
/// sec_tags whose credentials Nordic's tools can decrypt: a host may use
/// them (on a test station).
pub const DEBUG_SEC_TAGS: std::ops::RangeInclusive<u64> = 2_147_483_648..=2_147_483_667;

/// Whether a host may write and use `tag`.
fn host_tag(tag: u64) -> bool {
    tag <= MAX_USER_SEC_TAG || DEBUG_SEC_TAGS.contains(&tag)
}
/// User credential entries the simulated store holds before 515.
pub const STORE_CAPACITY: usize = 32;
/// Unix time of the unset modem clock at boot: 2000-01-01T00:00:00Z.
pub const UNSET_CLOCK_UNIX: i64 = 946_684_800;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalResult {
    Ok,
    Error,
    /// Only produced while `AT+CMEE=1`; otherwise a CME error is [`FinalResult::Error`].
    Cme(u16),
}

impl fmt::Display for FinalResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinalResult::Ok => f.write_str("OK"),
            FinalResult::Error => f.write_str("ERROR"),
            FinalResult::Cme(code) => write!(f, "+CME ERROR: {code}"),
        }
    }
}

/// What kind of work a command did; the latency table keys on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// Rejected before doing any work (syntax, parameters, state).
    Rejected,
    /// Reads and settings that touch no radio or flash.
    Query,
    /// `+CFUN` to an active mode (radio on).
    CfunUp,
    /// `+CFUN` from an active mode to an inactive one (detach, NVM write).
    CfunDown,
    /// `+CFUN` between inactive modes.
    CfunIdle,
    AttestToken,
    ClaimToken,
    KeygenCsr,
    KeygenPublicKey,
    Jwt,
    CmngWrite,
    CmngList,
    CmngRead,
    CmngDelete,
}

/// The modem's answer to one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Information lines, without terminators. A line may contain CRLF
    /// inside a quoted string (`%CMNG` read of a PEM).
    pub info: Vec<String>,
    pub result: FinalResult,
    pub kind: CommandKind,
}

impl Reply {
    fn ok(info: Vec<String>, kind: CommandKind) -> Self {
        Self {
            info,
            result: FinalResult::Ok,
            kind,
        }
    }

    fn error() -> Self {
        Self {
            info: Vec::new(),
            result: FinalResult::Error,
            kind: CommandKind::Rejected,
        }
    }

    /// Every line of the reply, information lines then the final result.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.info.clone();
        lines.push(self.result.to_string());
        lines
    }
}

/// One entry of the credential store.
#[derive(Clone)]
enum Credential {
    /// Written with `%CMNG=0`: content exactly as written.
    Written(String),
    /// Generated inside the modem by `%KEYGEN`.
    Generated(SigningKey),
}

impl Credential {
    fn sha256_hex(&self) -> String {
        let digest = match self {
            Credential::Written(content) => Sha256::digest(content.as_bytes()),
            Credential::Generated(key) => Sha256::digest(spki_der(key)),
        };
        hex::encode_upper(digest)
    }
}

#[derive(Debug, Clone, Copy)]
struct ClockSetting {
    unix_at_set: i64,
    tz_quarters: i32,
    set_at: Instant,
}

/// The first token of each kind, for the replay fault.
#[derive(Default, Clone)]
struct FirstTokens {
    attest: Option<String>,
    keygen: Option<String>,
    jwt: Option<String>,
    claim: Option<String>,
}

/// Result type of command handlers: an error is already a finished reply.
type Handled = Result<Reply, Reply>;

/// What a token command was asked to make, once its parameters and the
/// modem's state allowed it.
enum TokenOrder {
    Identity { challenge: Option<[u8; 16]> },
    Keygen(KeygenOrder),
    Jwt(JwtOrder),
}

/// A key-generation token to make.
struct KeygenOrder {
    /// At most `u32::MAX`.
    tag: u64,
    key_type: u8,
    /// A CSR (payload id 9), else the public key (payload id 8).
    csr: bool,
    subject: x509_cert::name::Name,
    usage: x509_cert::ext::pkix::KeyUsage,
    /// The key already in the slot (key type 8 reuses it), else a new one.
    existing: Option<SigningKey>,
    /// Keep the key in the credential store, as a real `%KEYGEN` does.
    store: bool,
}

/// A JWT to make.
struct JwtOrder {
    exp_delta: u64,
    subject: Option<String>,
    audience: Option<String>,
    key: SigningKey,
    /// The modem clock (Unix seconds) when the command arrived.
    issued_at: i64,
}

/// A simulated nRF91 modem core.
pub struct Modem {
    identity: Arc<ModemIdentity>,
    faults: FaultSet,
    rng: StdRng,
    /// Signs tokens instead of the identity key under the untrusted-key fault.
    rogue_key: SigningKey,
    /// The UUID tokens carry under the wrong-uuid fault.
    other_uuid: Uuid,
    // Session state, reset by `boot`.
    cfun: u8,
    cmee: bool,
    clock: Option<ClockSetting>,
    booted_at: Option<Instant>,
    // Persistent state ("flash").
    store: BTreeMap<(u64, u8), Credential>,
    first: FirstTokens,
    /// The last sec_tag a host named (`%KEYGEN`, `%CMNG`, `%JWT`).
    last_sec_tag: Option<u64>,
    stats: SimStats,
    /// One-shot faults already shown (see [`Modem::first_time`]).
    once: std::collections::HashSet<String>,
    /// How many `%JWT`s the replay-jwts fault has answered.
    jwts_replayed: usize,
    /// Repeatable signatures, or cheap ones ([`Modem::signing`]).
    signing: Signing,
}

impl Modem {
    /// A board with `identity`, freshly out of the factory, showing `faults`.
    /// All randomness derives from the identity key, so runs repeat.
    pub fn new(mut identity: ModemIdentity, faults: FaultSet) -> Self {
        let secret: [u8; 32] = identity.signing_key.to_bytes().into();
        let seed = u64::from_be_bytes(Sha256::digest(secret)[..8].try_into().unwrap_or([0; 8]));
        if faults.has(&Fault::SecondUuid) {
            // The same key, and a device UUID of its own.
            identity.device_uuid =
                uuid::Builder::from_random_bytes(derived_rng(seed, 0, "second uuid").r#gen())
                    .into_uuid();
        }
        // Another modem holding the same key (second-uuid) makes its own
        // nonces.
        let second = u32::from(faults.has(&Fault::SecondUuid));
        let mut rng = derived_rng(seed, second, "modem");
        let rogue_key = SigningKey::random(&mut derived_rng(seed, 0, "rogue key"));
        let other_uuid = uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid();
        let mut store = BTreeMap::new();
        // Modem-owned entries a real list may show (contents are placeholders).
        store.insert(
            (4_294_967_292, 10),
            Credential::Written("simulated Nordic identity root CA".into()),
        );
        store.insert(
            (4_294_967_293, 11),
            Credential::Written("simulated Nordic public key".into()),
        );
        Self {
            identity: Arc::new(identity),
            faults,
            rng,
            rogue_key,
            other_uuid,
            cfun: 0,
            cmee: false,
            clock: None,
            booted_at: None,
            store,
            first: FirstTokens::default(),
            last_sec_tag: None,
            stats: SimStats::default(),
            once: std::collections::HashSet::new(),
            jwts_replayed: 0,
            signing: Signing::Deterministic,
        }
    }

    pub fn identity(&self) -> &ModemIdentity {
        &self.identity
    }

    pub fn identity_arc(&self) -> Arc<ModemIdentity> {
        Arc::clone(&self.identity)
    }

    pub fn faults(&self) -> &FaultSet {
        &self.faults
    }

    /// Sign tokens as `signing` says: deterministically (the default: a
    /// board on a paused clock repeats its records byte for byte) or, for a
    /// board in real time, with ring's cheaper randomised signatures.
    #[must_use]
    pub fn signing(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// True the first time `what` is asked of this board (kept across
    /// replugs, like flash): one-shot faults.
    pub fn first_time(&mut self, what: &str) -> bool {
        self.once.insert(what.to_string())
    }

    /// Add modelled time (command delay, wire time) to the statistics.
    pub fn add_busy(&mut self, busy: Duration) {
        self.stats.modelled_busy += busy;
    }

    /// Current functional mode (`+CFUN`).
    pub fn cfun(&self) -> u8 {
        self.cfun
    }

    /// Power-on: session state resets as on a real boot (functional mode 0,
    /// CME errors off, clock unset); credentials and keys persist like flash.
    pub fn boot(&mut self) {
        self.cfun = 0;
        self.cmee = false;
        self.clock = None;
        self.booted_at = None;
        self.stats.sessions += 1;
    }

    /// Handle one command line (without its terminator) at time `now`.
    pub fn handle(&mut self, line: &str, now: Instant) -> Reply {
        self.booted_at.get_or_insert(now);
        self.stats.commands += 1;
        let Ok(command) = syntax::parse(line) else {
            return Reply::error();
        };
        if let Some(code) = self.faults.cme_for(&fault_key(&command)) {
            return self.cme(code);
        }
        self.dispatch(&command, now).unwrap_or_else(|reply| reply)
    }

    fn dispatch(&mut self, command: &Command, now: Instant) -> Handled {
        use CommandKind::Query;
        use Form::{Action, Read, Set, Test};
        let id = &self.identity;
        let one = |line: String| Ok(Reply::ok(vec![line], Query));
        match (command.name.as_str(), &command.form) {
            ("", Action) => Ok(Reply::ok(Vec::new(), Query)),
            ("+CMEE", _) => self.cmee_command(&command.form),
            ("+CFUN", _) => self.cfun_command(&command.form),
            ("+CGSN", _) => self.cgsn(&command.form),
            // The hostile-text fault: what a person or a spreadsheet reads
            // must not act on it.
            // (A bare line ends at a CR; inside quotes a CR stays.)
            ("+CGMR", Action) if self.faults.has(&Fault::HostileText) => {
                one(format!("@SUM(1+1)*cmd|' /C calc'!A0 {}", id.firmware))
            }
            ("+CGMM", Action) if self.faults.has(&Fault::HostileText) => one(format!(
                "=HYPERLINK(\"http://x.invalid/\",\"{}\")",
                id.model
            )),
            ("%HWVERSION", Action) if self.faults.has(&Fault::HostileText) => one(format!(
                "%HWVERSION: \"-2+3\t{}\rINFO forged line\"",
                id.hw_version()
            )),
            ("+CGMR", Action) => one(id.firmware.clone()),
            ("+CGMM", Action) => one(id.model.clone()),
            ("+CGMI", Action) => one("Nordic Semiconductor ASA".into()),
            ("%HWVERSION", Action) => one(format!("%HWVERSION: {}", id.hw_version())),
            ("%SHORTSWVER", Action) => one(format!("%SHORTSWVER: {}", id.short_sw_version())),
            ("%XMODEMUUID", Action) => one(format!("%XMODEMUUID: {}", id.firmware_uuid)),
            // nRF91x1 only: an nRF9160 does not know the command.
            ("%DEVICEUUID", Action) if id.chip() != "nRF9160" => {
                one(format!("%DEVICEUUID: {}", id.device_uuid))
            }
            ("+CCLK", Set(params)) => self.set_clock(params, now),
            ("+CCLK", Read) => one(format!("+CCLK: \"{}\"", self.clock_text(now))),
            ("%ATTESTTOKEN" | "%KEYGEN" | "%JWT", _) if self.firmware_below(MIN_FOR_TOKENS) => {
                Err(Reply::error())
            }
            ("%CLAIMTOKEN", _) if self.firmware_below(MIN_FOR_CLAIMTOKEN) => Err(Reply::error()),
            ("%ATTESTTOKEN", Action | Set(_)) => self.attest(&command.form),
            ("%CLAIMTOKEN", Set(params)) => self.claim(params),
            ("%KEYGEN", Set(params)) => self.keygen(params),
            ("%KEYGEN", Action | Read | Test) => Err(self.cme(50)),
            ("%JWT", Action | Set(_)) => self.jwt(&command.form, now),
            ("%CMNG", Set(params)) => self.cmng(params),
            _ => Err(Reply::error()),
        }
    }

    /// Whether this board's firmware is older than `minimum`.
    fn firmware_below(&self, minimum: FirmwareVersion) -> bool {
        ModemFirmware::parse(&self.identity.firmware).below(minimum)
    }

    /// `%CLAIMTOKEN=<tag>[,"<challenge>"]`.
    fn claim(&mut self, params: &[Param]) -> Handled {
        let bad = || self.cme(50);
        let tag = params
            .first()
            .and_then(Param::number)
            .filter(|t| *t <= u64::from(u32::MAX))
            .ok_or_else(bad)?;
        let challenge = match params.get(1..).unwrap_or_default() {
            [] => None,
            [Param::Quoted(text)] => Some(parse_challenge(text).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        let owner = match self.store.get(&(tag, 9)) {
            Some(Credential::Written(content)) if host_tag(tag) => content.clone(),
            _ => return Err(self.cme(529)),
        };
        let spki = p256::PublicKey::from_public_key_pem(owner.trim())
            .ok()
            .and_then(|key| key.to_public_key_der().ok())
            .map_or_else(|| owner.as_bytes().to_vec(), |der| der.as_bytes().to_vec());
        let mut digest = encode::ownership_key_digest(&spki);
        if self.faults.has(&Fault::ClaimDigest) {
            flip_last_bit(&mut digest);
        }
        let device_uuid = if self.faults.has(&Fault::ClaimUuid) {
            self.other_uuid
        } else {
            self.token_uuid()
        };
        let body = encode::claim_body(&ClaimBody {
            msg_type: MSG_TYPE_CLAIM,
            device_uuid: device_uuid.into_bytes(),
            device_type: self.identity.device_type,
            firmware_uuid: self.identity.firmware_uuid.into_bytes(),
            ownership_key_digest: digest,
            challenge,
        });
        let fresh = encode::join_b64(&body, &self.sign_cose(&body, true));
        let mut first = std::mem::take(&mut self.first.claim);
        let token = self.replayed(&mut first, fresh);
        self.first.claim = first;
        Ok(Reply::ok(
            vec![format!("%CLAIMTOKEN: \"{token}\"")],
            CommandKind::ClaimToken,
        ))
    }

    /// A CME error as the host sees it: numeric after `AT+CMEE=1`, else `ERROR`.
    fn cme(&self, code: u16) -> Reply {
        Reply {
            info: Vec::new(),
            result: if self.cmee {
                FinalResult::Cme(code)
            } else {
                FinalResult::Error
            },
            kind: CommandKind::Rejected,
        }
    }

    fn offline(&self) -> bool {
        !matches!(self.cfun, 1 | 2)
    }

    fn require_offline(&self) -> Result<(), Reply> {
        if self.offline() {
            Ok(())
        } else {
            Err(self.cme(518))
        }
    }

    fn cmee_command(&mut self, form: &Form) -> Handled {
        match form {
            Form::Set(p) if p.len() == 1 => match p.first().and_then(Param::number) {
                Some(n @ (0 | 1)) => {
                    self.cmee = n == 1;
                    Ok(Reply::ok(Vec::new(), CommandKind::Query))
                }
                _ => Err(self.cme(50)),
            },
            Form::Read => Ok(Reply::ok(
                vec![format!("+CMEE: {}", u8::from(self.cmee))],
                CommandKind::Query,
            )),
            Form::Test => Ok(Reply::ok(vec!["+CMEE: (0,1)".into()], CommandKind::Query)),
            _ => Err(self.cme(50)),
        }
    }

    fn cfun_command(&mut self, form: &Form) -> Handled {
        match form {
            Form::Set(p) if p.len() == 1 => {
                let mode = match p.first().and_then(Param::number) {
                    Some(m @ (0 | 1 | 2 | 4)) => m as u8,
                    _ => return Err(self.cme(50)),
                };
                let was_active = !self.offline();
                self.cfun = mode;
                let kind = match (was_active, self.offline()) {
                    (false, false) | (true, false) => CommandKind::CfunUp,
                    (true, true) => CommandKind::CfunDown,
                    (false, true) => CommandKind::CfunIdle,
                };
                Ok(Reply::ok(Vec::new(), kind))
            }
            Form::Read => Ok(Reply::ok(
                vec![format!("+CFUN: {}", self.cfun)],
                CommandKind::Query,
            )),
            Form::Test => Ok(Reply::ok(
                vec!["+CFUN: (0,1,2,4)".into()],
                CommandKind::Query,
            )),
            _ => Err(self.cme(50)),
        }
    }

    fn cgsn(&self, form: &Form) -> Handled {
        // The imei= fault: whatever text the fault says.
        let imei = self.faults.imei_text().unwrap_or(&self.identity.imei);
        let svn = "13";
        let line = match form {
            Form::Action => imei.to_owned(),
            Form::Test => "+CGSN: (0-3)".into(),
            Form::Set(p) if p.len() == 1 => match p.first().and_then(Param::number) {
                Some(0) => imei.to_owned(),
                Some(1) => format!("+CGSN: \"{imei}\""),
                Some(2) => format!("+CGSN: \"{}{svn}\"", imei.get(..14).unwrap_or(imei)),
                Some(3) => format!("+CGSN: \"{svn}\""),
                _ => return Err(self.cme(50)),
            },
            _ => return Err(self.cme(50)),
        };
        Ok(Reply::ok(vec![line], CommandKind::Query))
    }

    fn set_clock(&mut self, params: &[Param], now: Instant) -> Handled {
        let parsed = match params {
            [p] => p.quoted().and_then(cclk::parse),
            _ => None,
        };
        let Some((unix, tz_quarters)) = parsed else {
            return Err(self.cme(50));
        };
        self.clock = Some(ClockSetting {
            unix_at_set: unix,
            tz_quarters,
            set_at: now,
        });
        Ok(Reply::ok(Vec::new(), CommandKind::Query))
    }

    /// Unix time of the modem clock at `now`.
    fn unix_now(&self, now: Instant) -> i64 {
        let since =
            |t: Instant| i64::try_from(now.saturating_duration_since(t).as_secs()).unwrap_or(0);
        match self.clock {
            Some(c) => c.unix_at_set.saturating_add(since(c.set_at)),
            None => UNSET_CLOCK_UNIX.saturating_add(self.booted_at.map_or(0, since)),
        }
    }

    fn clock_text(&self, now: Instant) -> String {
        let tz = self.clock.map_or(0, |c| c.tz_quarters);
        cclk::format(self.unix_now(now), tz)
    }

    /// The UUID tokens carry (another one under the wrong-uuid fault).
    fn token_uuid(&self) -> Uuid {
        if self.faults.has(&Fault::WrongUuid) {
            self.other_uuid
        } else {
            self.identity.device_uuid
        }
    }

    /// The key that signs as "device identity key".
    fn identity_signer(&self) -> &SigningKey {
        if self.faults.has(&Fault::UntrustedKey) {
            &self.rogue_key
        } else {
            &self.identity.signing_key
        }
    }

    /// COSE_Sign1 over `payload` by the identity signer, with one bit of the
    /// signature flipped under the bad-signature fault (the signature is the
    /// last item of the COSE_Sign1, so its last byte is the encoding's).
    fn sign_cose(&self, payload: &[u8], detached: bool) -> Vec<u8> {
        let mut signed = if self.faults.has(&Fault::OtherSigningInput) {
            // The identity key over bytes this project does not build: what
            // a real modem's unpublished signing input looks like to a host.
            let message = [b"the modem's own signing input".as_slice(), payload].concat();
            let signature = cose::es256(self.identity_signer(), &message, self.signing);
            cose::encode_sign1(
                &cose::protected_es256(),
                KID_IDENTITY,
                (!detached).then_some(payload),
                &signature.to_bytes(),
            )
        } else {
            cose::sign1_as(
                self.signing,
                self.identity_signer(),
                KID_IDENTITY,
                payload,
                detached,
            )
        };
        if self.faults.has(&Fault::BadSignature) {
            flip_last_bit(&mut signed);
        }
        signed
    }

    fn nonce(&mut self) -> [u8; 16] {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        nonce
    }

    /// Apply the replay fault: the first token of a kind is returned forever.
    fn replayed(&self, first: &mut Option<String>, fresh: String) -> String {
        match first {
            Some(old) if self.faults.has(&Fault::Replay) => old.clone(),
            Some(_) => fresh,
            None => {
                *first = Some(fresh.clone());
                fresh
            }
        }
    }

    fn attest(&mut self, form: &Form) -> Handled {
        let challenge = match form {
            Form::Action => None,
            Form::Set(p) => match p.as_slice() {
                [Param::Quoted(text)] => Some(parse_challenge(text).ok_or_else(|| self.cme(50))?),
                _ => return Err(self.cme(50)),
            },
            _ => return Err(self.cme(50)),
        };
        self.answer(
            "ATTESTTOKEN",
            TokenOrder::Identity { challenge },
            CommandKind::AttestToken,
        )
    }

    fn keygen(&mut self, params: &[Param]) -> Handled {
        self.note_sec_tag(params.first());
        let order = self.keygen_order(params)?;
        let kind = if order.csr {
            CommandKind::KeygenCsr
        } else {
            CommandKind::KeygenPublicKey
        };
        self.answer("KEYGEN", TokenOrder::Keygen(order), kind)
    }

    fn jwt(&mut self, form: &Form, now: Instant) -> Handled {
        if let Form::Set(params) = form {
            if params.len() == 6 {
                self.note_sec_tag(params.get(4));
            }
        }
        let order = self.jwt_order(form, now)?;
        if let Some(jwts) = self.faults.replayed_jwts().filter(|j| !j.is_empty()) {
            // Whatever was asked: the harvested JWTs, in turn.
            let jwt = jwts[self.jwts_replayed % jwts.len()].clone();
            self.jwts_replayed += 1;
            return Ok(Reply::ok(
                vec![format!("%JWT: \"{jwt}\"")],
                CommandKind::Jwt,
            ));
        }
        self.answer("JWT", TokenOrder::Jwt(order), CommandKind::Jwt)
    }

    /// Remember a sec_tag a host named: a substituted key-generation token
    /// is made for the last one (see [`Modem::captured`]).
    fn note_sec_tag(&mut self, param: Option<&Param>) {
        if let Some(tag) = param
            .and_then(Param::number)
            .filter(|t| *t <= u64::from(u32::MAX))
        {
            self.last_sec_tag = Some(tag);
        }
    }

    /// The reply of token command `command` (normalised name, also its
    /// response prefix): the token `order` asks for, or under the substitute
    /// fault a genuine token of another kind. `kind` (the latency) stays the
    /// command's own: the relay answers in the time the command takes.
    fn answer(&mut self, command: &str, order: TokenOrder, kind: CommandKind) -> Handled {
        let token = match self.faults.substitute_for(command) {
            Some(captured) => self.captured(captured, order)?,
            None => self.make_token(order)?,
        };
        Ok(Reply::ok(vec![format!("%{command}: \"{token}\"")], kind))
    }

    /// The substitute fault: a genuine token of kind `captured`, made and
    /// signed exactly as the command that normally makes it would, for what
    /// the answered command asked where that applies:
    /// - identity: the challenge of an `%ATTESTTOKEN`; for another command
    ///   the board's own nonce (a captured token answers no challenge of
    ///   this host);
    /// - keygen / keygen-pubkey: for a `%KEYGEN`, its sec_tag, subject and
    ///   key usage, the key kept in the slot as usual, only the format is
    ///   KIND's; for another command a fresh key, not stored, for the last
    ///   sec_tag a host named in `%KEYGEN`, `%CMNG` or `%JWT` (else nRF
    ///   Cloud's 16842753, the plan's default), subject `CN=<device UUID>`,
    ///   the default key usage;
    /// - jwt: for a `%JWT`, its claims and key; for another command the
    ///   identity key with no subject, audience or time (`exp_delta` 0).
    fn captured(&mut self, captured: CapturedToken, asked: TokenOrder) -> Result<String, Reply> {
        let order = match (captured, asked) {
            (CapturedToken::Identity, TokenOrder::Identity { challenge }) => {
                TokenOrder::Identity { challenge }
            }
            (CapturedToken::Identity, _) => TokenOrder::Identity { challenge: None },
            (CapturedToken::Keygen | CapturedToken::KeygenPublicKey, TokenOrder::Keygen(order)) => {
                TokenOrder::Keygen(KeygenOrder {
                    csr: captured == CapturedToken::Keygen,
                    ..order
                })
            }
            (CapturedToken::Keygen | CapturedToken::KeygenPublicKey, _) => {
                let tag = self
                    .last_sec_tag
                    .unwrap_or(u64::from(nrf91_at::DEFAULT_SEC_TAG));
                let subject = csr::parse_subject(&format!("CN={}", self.identity.device_uuid))
                    .map_err(|_| self.cme(523))?;
                let usage =
                    csr::parse_key_usage(csr::DEFAULT_KEY_USAGE).map_err(|_| self.cme(523))?;
                TokenOrder::Keygen(KeygenOrder {
                    tag,
                    key_type: 2,
                    csr: captured == CapturedToken::Keygen,
                    subject,
                    usage,
                    existing: None,
                    store: false,
                })
            }
            (CapturedToken::Jwt, TokenOrder::Jwt(order)) => TokenOrder::Jwt(order),
            (CapturedToken::Jwt, TokenOrder::Identity { .. } | TokenOrder::Keygen(_)) => {
                TokenOrder::Jwt(JwtOrder {
                    exp_delta: 0,
                    subject: None,
                    audience: None,
                    key: self.identity_signer().clone(),
                    issued_at: 0,
                })
            }
        };
        self.make_token(order)
    }

    fn make_token(&mut self, order: TokenOrder) -> Result<String, Reply> {
        match order {
            TokenOrder::Identity { challenge } => Ok(self.identity_token(challenge)),
            TokenOrder::Keygen(order) => self.keygen_token(order),
            TokenOrder::Jwt(order) => Ok(self.jwt_token(order)),
        }
    }

    /// An identity token with `challenge` as its nonce (the board's own
    /// nonce without one, or under the ignore-challenge fault).
    fn identity_token(&mut self, challenge: Option<[u8; 16]>) -> String {
        let own = self.nonce();
        let nonce = match challenge {
            Some(c) if !self.faults.has(&Fault::IgnoreChallenge) => c,
            _ => own,
        };
        let body = encode::identity_body(&IdentityBody {
            msg_type: MSG_TYPE_IDENTITY_V1,
            device_uuid: self.token_uuid().into_bytes(),
            device_type: self.identity.device_type,
            firmware_uuid: self.identity.firmware_uuid.into_bytes(),
            nonce,
        });
        let fresh = encode::join_b64(&body, &self.sign_cose(&body, true));
        let mut first = std::mem::take(&mut self.first.attest);
        let token = self.replayed(&mut first, fresh);
        self.first.attest = first;
        self.stats.attest_tokens += 1;
        token
    }

    /// Check a `%KEYGEN`'s parameters and the modem's state.
    fn keygen_order(&self, params: &[Param]) -> Result<KeygenOrder, Reply> {
        let bad = || self.cme(50);
        if params.len() < 2 || params.len() > 5 {
            return Err(bad());
        }
        let tag = params
            .first()
            .and_then(Param::number)
            .filter(|t| *t <= u64::from(u32::MAX));
        let key_type = params
            .get(1)
            .and_then(Param::number)
            .filter(|t| matches!(t, 2 | 8));
        let format = match params.get(2) {
            None | Some(Param::Empty) => Some(0),
            Some(p) => p.number().filter(|f| matches!(f, 0 | 1)),
        };
        let (Some(tag), Some(key_type), Some(format)) = (tag, key_type, format) else {
            return Err(bad());
        };
        let subject = match optional_string(params.get(3)).map_err(|()| bad())? {
            Some(attrs) => csr::parse_subject(attrs).map_err(|_| bad())?,
            None => csr::parse_subject(&format!("CN={}", self.identity.device_uuid))
                .map_err(|_| bad())?,
        };
        let usage = optional_string(params.get(4))
            .map_err(|()| bad())?
            .unwrap_or(csr::DEFAULT_KEY_USAGE);
        let usage = csr::parse_key_usage(usage).map_err(|_| bad())?;
        self.require_offline()?;
        if !host_tag(tag) {
            return Err(self.cme(514));
        }
        let key_type = key_type as u8;
        let existing = match self.store.get(&(tag, key_type)) {
            Some(Credential::Generated(key)) if key_type == 8 => Some(key.clone()),
            Some(_) if key_type == 2 => return Err(self.cme(519)),
            _ => None,
        };
        if existing.is_none() && self.user_entries() >= STORE_CAPACITY {
            return Err(self.cme(515));
        }
        Ok(KeygenOrder {
            tag,
            key_type,
            csr: format == 0 && key_type == 2,
            subject,
            usage,
            existing,
            store: true,
        })
    }

    /// A key-generation token: the key (made now unless the order reuses
    /// one), its CSR or public key, bound to the device by a signed payload.
    fn keygen_token(&mut self, order: KeygenOrder) -> Result<String, Reply> {
        let key = order
            .existing
            .unwrap_or_else(|| SigningKey::random(&mut self.rng));
        let der = if order.csr {
            let subject = if self.faults.control_chars("KEYGEN") {
                let cn = common_name_of(&order.subject).unwrap_or_default();
                csr::parse_subject(&format!("CN={cn}\u{1b}[2J\u{0}")).map_err(|_| self.cme(523))?
            } else {
                order.subject
            };
            let der = csr::build_csr_as(self.signing, &key, subject, order.usage)
                .map_err(|_| self.cme(523))?;
            if self.faults.has(&Fault::LegacyCsr) {
                csr::legacy_algorithm(&der).map_err(|_| self.cme(523))?
            } else {
                der
            }
        } else {
            spki_der(&key)
        };
        let mut digest = encode::sha256(&der);
        if self.faults.has(&Fault::BadDigest) {
            flip_last_bit(&mut digest);
        }
        let payload = encode::keygen_payload(&KeygenPayload {
            payload_id: if order.csr {
                PAYLOAD_ID_CSR
            } else {
                PAYLOAD_ID_PUBLIC_KEY
            },
            device_uuid: self.token_uuid().into_bytes(),
            sec_tag: order.tag as u32,
            digest,
            nonce: self.nonce(),
        });
        let fresh = encode::join_b64(&der, &self.sign_cose(&payload, false));
        if order.store {
            self.store
                .insert((order.tag, order.key_type), Credential::Generated(key));
        }
        let mut first = std::mem::take(&mut self.first.keygen);
        let token = self.replayed(&mut first, fresh);
        self.first.keygen = first;
        self.stats.keygen_tokens += 1;
        Ok(token)
    }

    /// Check a `%JWT`'s parameters and find its signing key.
    fn jwt_order(&self, form: &Form, now: Instant) -> Result<JwtOrder, Reply> {
        let params: &[Param] = match form {
            Form::Set(p) => p,
            _ => &[],
        };
        let bad = || self.cme(50);
        if params.len() > 6 || params.len() == 5 {
            return Err(bad());
        }
        let number_or_zero = |p: Option<&Param>| match p {
            None | Some(Param::Empty) => Some(0),
            Some(p) => p.number(),
        };
        if number_or_zero(params.first()) != Some(0) {
            return Err(bad());
        }
        let exp_delta = number_or_zero(params.get(1))
            .filter(|d| *d <= u64::from(u32::MAX))
            .ok_or_else(bad)?;
        let subject = optional_string(params.get(2))
            .map_err(|()| bad())?
            .map(str::to_owned);
        let audience = optional_string(params.get(3))
            .map_err(|()| bad())?
            .map(str::to_owned);
        let key = if params.len() == 6 {
            let tag = params.get(4).and_then(Param::number).ok_or_else(bad)?;
            let key_type = params
                .get(5)
                .and_then(Param::number)
                .filter(|t| matches!(t, 2 | 8))
                .ok_or_else(bad)?;
            self.stored_signing_key(tag, key_type as u8)?
        } else {
            self.identity_signer().clone()
        };
        Ok(JwtOrder {
            exp_delta,
            subject,
            audience,
            key,
            issued_at: self.unix_now(now),
        })
    }

    fn jwt_token(&mut self, order: JwtOrder) -> String {
        let chip = self.identity.chip().to_owned();
        let uuid = self.token_uuid().to_string();
        let mut random = [0u8; 16];
        self.rng.fill_bytes(&mut random);
        let (iss, jti) = (
            format!("{chip}.{uuid}"),
            format!(
                "{chip}.{}.{}",
                self.identity.firmware_uuid,
                hex::encode(random)
            ),
        );
        let (iss, jti) = if self.faults.control_chars("JWT") {
            // A window title changed, a log line cut short; `iss` still
            // ends in the device UUID, so nothing else about it fails.
            (
                format!("{chip}\u{1b}]0;owned\u{7}.{uuid}"),
                format!("{jti}\u{0}x"),
            )
        } else {
            (iss, jti)
        };
        let mut claims = vec![
            ("iss", json_string(&iss)),
            ("jti", json_string(&jti)),
            (
                "sub",
                json_string(order.subject.as_deref().unwrap_or(&uuid)),
            ),
        ];
        if let Some(aud) = &order.audience {
            claims.push(("aud", json_string(aud)));
        }
        if order.exp_delta > 0 && !self.faults.has(&Fault::JwtNoTime) {
            let iat = order.issued_at;
            claims.push(("iat", iat.to_string()));
            claims.push((
                "exp",
                iat.saturating_add(order.exp_delta as i64).to_string(),
            ));
        }
        let kid = hex::encode(Sha256::digest(spki_der(&order.key)));
        let header = padded_json(&[
            ("typ", json_string("JWT")),
            ("alg", json_string("ES256")),
            ("kid", json_string(&kid)),
        ]);
        let claims = padded_json(&claims);
        let mut fresh = encode::jwt_exact_as(self.signing, &header, &claims, &order.key);
        if self.faults.has(&Fault::BadSignature) {
            fresh = flip_jwt_signature_bit(&fresh);
        }
        let mut first = std::mem::take(&mut self.first.jwt);
        let token = self.replayed(&mut first, fresh);
        self.first.jwt = first;
        self.stats.jwts += 1;
        token
    }

    /// The private key in `(tag, key_type)` for `%JWT`: 513 if absent, 514
    /// if present but unusable (not a P-256 private key).
    fn stored_signing_key(&self, tag: u64, key_type: u8) -> Result<SigningKey, Reply> {
        match self.store.get(&(tag, key_type)) {
            None => Err(self.cme(513)),
            Some(_) if tag > MAX_USER_SEC_TAG => Err(self.cme(514)),
            Some(Credential::Generated(key)) => Ok(key.clone()),
            Some(Credential::Written(pem)) => p256::SecretKey::from_sec1_pem(pem)
                .ok()
                .or_else(|| p256::SecretKey::from_pkcs8_pem(pem).ok())
                .map(SigningKey::from)
                .ok_or_else(|| self.cme(514)),
        }
    }

    fn user_entries(&self) -> usize {
        self.store
            .keys()
            .filter(|(tag, _)| *tag <= MAX_USER_SEC_TAG)
            .count()
    }

    fn cmng(&mut self, params: &[Param]) -> Handled {
        self.note_sec_tag(params.get(1));
        let bad = || self.cme(50);
        let op = params.first().and_then(Param::number).ok_or_else(bad)?;
        let tag = match params.get(1) {
            None | Some(Param::Empty) => None,
            Some(p) => Some(
                p.number()
                    .filter(|t| *t <= u64::from(u32::MAX))
                    .ok_or_else(bad)?,
            ),
        };
        let kind = match params.get(2) {
            None | Some(Param::Empty) => None,
            Some(p) => Some(p.number().filter(|t| *t <= 11).ok_or_else(bad)? as u8),
        };
        match op {
            0 => {
                let (Some(tag), Some(kind)) = (tag, kind) else {
                    return Err(bad());
                };
                let content = match params.get(3) {
                    Some(Param::Quoted(c)) if !c.is_empty() => c.clone(),
                    _ => return Err(bad()),
                };
                match params.get(4) {
                    None | Some(Param::Empty | Param::Quoted(_)) if params.len() <= 5 => {}
                    _ => return Err(bad()),
                }
                self.require_offline()?;
                if !host_tag(tag) || (kind > 5 && kind != 9) {
                    return Err(self.cme(514));
                }
                if !self.store.contains_key(&(tag, kind)) && self.user_entries() >= STORE_CAPACITY {
                    return Err(self.cme(515));
                }
                self.store.insert((tag, kind), Credential::Written(content));
                self.stats.cmng_writes += 1;
                Ok(Reply::ok(Vec::new(), CommandKind::CmngWrite))
            }
            1 => {
                if params.len() > 3 {
                    return Err(bad());
                }
                let lines = self
                    .store
                    .iter()
                    .filter(|((t, k), _)| {
                        tag.is_none_or(|w| w == *t) && kind.is_none_or(|w| w == *k)
                    })
                    .map(|((t, k), c)| format!("%CMNG: {t},{k},\"{}\"", c.sha256_hex()))
                    .collect();
                Ok(Reply::ok(lines, CommandKind::CmngList))
            }
            2 => {
                let (Some(tag), Some(kind), 3) = (tag, kind, params.len()) else {
                    return Err(bad());
                };
                let entry = self.store.get(&(tag, kind)).ok_or_else(|| self.cme(513))?;
                match entry {
                    Credential::Written(content)
                        if tag <= MAX_USER_SEC_TAG && kind != 2 && kind != 3 =>
                    {
                        let line = format!(
                            "%CMNG: {tag},{kind},\"{}\",\"{content}\"",
                            entry.sha256_hex()
                        );
                        Ok(Reply::ok(vec![line], CommandKind::CmngRead))
                    }
                    _ => Err(self.cme(514)),
                }
            }
            3 => {
                let (Some(tag), Some(kind), 3) = (tag, kind, params.len()) else {
                    return Err(bad());
                };
                self.require_offline()?;
                if !self.store.contains_key(&(tag, kind)) {
                    return Err(self.cme(513));
                }
                if tag > MAX_USER_SEC_TAG {
                    return Err(self.cme(514));
                }
                self.store.remove(&(tag, kind));
                Ok(Reply::ok(Vec::new(), CommandKind::CmngDelete))
            }
            _ => Err(bad()),
        }
    }
}

/// The normalised name a fault's `@CMD` is matched against (`AT` for `AT`).
pub fn fault_key(command: &Command) -> String {
    if command.name.is_empty() {
        "AT".to_owned()
    } else {
        normalize_name(&command.name)
    }
}

/// The fault key of a raw command line, if it parses as a command.
pub fn line_fault_key(line: &str) -> Option<String> {
    syntax::parse(line).ok().map(|c| fault_key(&c))
}

/// An optional quoted string parameter: absent, empty or `""` give `None`;
/// an unquoted token is a parameter error.
fn optional_string(param: Option<&Param>) -> Result<Option<&str>, ()> {
    match param {
        None | Some(Param::Empty) => Ok(None),
        Some(Param::Quoted(text)) if text.is_empty() => Ok(None),
        Some(Param::Quoted(text)) => Ok(Some(text)),
        Some(Param::Bare(_)) => Err(()),
    }
}

/// A 32-hex-character challenge as the 16-byte nonce it replaces.
fn parse_challenge(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}

fn flip_last_bit(bytes: &mut [u8]) {
    if let Some(last) = bytes.last_mut() {
        *last ^= 0x01;
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A JSON object with members in the given order (values already JSON),
/// padded with spaces to a multiple of 3 bytes as the modem does.
fn padded_json(members: &[(&str, String)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(name, value)| format!("{}:{value}", json_string(name)))
        .collect();
    let mut json = format!("{{{}}}", body.join(","));
    while json.len() % 3 != 0 {
        json.push(' ');
    }
    json
}

/// The CN of a subject, for the control-chars fault.
fn common_name_of(subject: &x509_cert::name::Name) -> Option<String> {
    subject.to_string().split(',').find_map(|part| {
        part.trim()
            .strip_prefix("CN=")
            .map(|cn| cn.trim_end_matches(',').to_owned())
    })
}

/// The bad-signature fault on a JWT: the last bit of its signature flipped.
fn flip_jwt_signature_bit(jwt: &str) -> String {
    let Some((input, signature)) = jwt.rsplit_once('.') else {
        return jwt.to_owned();
    };
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    flip_last_bit(&mut bytes);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests;
