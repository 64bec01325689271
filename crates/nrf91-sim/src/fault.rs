//! Faults a simulated modem can be told to show, and their CLI grammar.
//!
//! ```text
//! SPEC     = TARGETS ":" FAULT
//! TARGETS  = "all" | N | N "-" M            (modem indices, inclusive range)
//! FAULT    = "urc-storm"                    notifications at random moments, also
//!                                           between an information line and the result
//!          | "garbage"                      bursts of noise bytes (each ended by CRLF)
//!                                           at power-on and at random moments
//!          | "unplug@" CMD                  board pulled halfway through the response to CMD
//!          | "stall@" CMD                   CMD is never answered (later commands are)
//!          | "cme=" CODE "@" CMD            CMD fails with +CME ERROR: CODE
//!                                           (plain ERROR until AT+CMEE=1)
//!          | "bad-signature"                one bit of every token signature flipped
//!          | "ignore-challenge"             %ATTESTTOKEN uses its own nonce
//!          | "replay"                       every token is the first one of its kind again
//!          | "wrong-uuid"                   tokens carry another UUID than %DEVICEUUID
//!          | "bad-digest"                   %KEYGEN digest does not match the DER
//!          | "claim-digest"                 %CLAIMTOKEN binds the digest of another
//!                                           ownership key than the one in the sec_tag
//!          | "claim-uuid"                   %CLAIMTOKEN names another device UUID
//!          | "untrusted-key"                tokens signed by a key that is not in the
//!                                           trust file (the board is left out of it)
//!          | "legacy-csr"                   CSR signatureAlgorithm with a NULL parameter,
//!                                           as older modem firmware encodes it
//!          | "flood=" SIZE "@" CMD          the first answer to CMD is preceded by SIZE bytes
//!                                           of 1 KiB information lines (SIZE: 200M, 64K, 5000)
//!          | "substitute=" KIND "@" TCMD    TCMD is answered with a genuine token of KIND
//!                                           under TCMD's own prefix, e.g.
//!                                           %ATTESTTOKEN: "<keygen token>"
//!          | "replay-jwts=" JWT ("," JWT)*  every %JWT is answered with these JWTs in turn
//!                                           (harvested from a genuine board; with
//!                                           untrusted-key: a keyless board replaying them)
//!          | "jwt-no-time"                  %JWT leaves out iat and exp whatever exp_delta
//!          | "second-uuid"                  the board says it is another device (%DEVICEUUID
//!                                           and every token) with the same identity key:
//!                                           one key under a second UUID
//!          | "other-signing-input"          %ATTESTTOKEN and %KEYGEN are signed by the identity
//!                                           key over other bytes than this project's COSE
//!                                           Sig_structure, as a real modem's may be (its
//!                                           %JWTs are standard)
//!          | "imei=" TEXT                   AT+CGSN (every form) answers TEXT
//!          | "hostile-text"                 AT+CGMM, AT+CGMR and %HWVERSION answer text that
//!                                           starts spreadsheet formulas (%HWVERSION quoted,
//!                                           with a tab and a CR inside)
//!          | "control-chars@" CCMD          CCMD's token holds control characters in its text:
//!                                           %JWT in iss (ESC, OSC, BEL) and jti (NUL),
//!                                           %KEYGEN in the CSR subject's CN (ESC, NUL)
//! KIND     = "identity" | "keygen" (CSR) | "keygen-pubkey" | "jwt"
//! TCMD     = ATTESTTOKEN | KEYGEN | JWT (spelled as CMD)
//! CCMD     = KEYGEN | JWT (spelled as CMD)
//! CMD      = a command name: KEYGEN, %KEYGEN, AT%KEYGEN, CFUN, AT (case-insensitive)
//! ```
//! Examples: `2:bad-signature`, `all:urc-storm`, `0-3:cme=518@KEYGEN`, `1:stall@CGSN`,
//! `0:substitute=keygen@ATTESTTOKEN`.
//!
//! `substitute` is the hostile board: one with no identity key of its own
//! that relays tokens captured from a genuine, trusted board, re-wrapped
//! under the prefix of the command it was asked. The token is genuine (made
//! and signed by the board's identity key exactly as the command that
//! normally makes KIND would), so only a host that checks the kind against
//! the command, and the token's bindings, can notice. What it is made for is
//! described in [`super::modem`] (a KIND that TCMD makes anyway, such as
//! `identity@ATTESTTOKEN`, is the genuine answer: the diagonal of a
//! kind-confusion matrix).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::syntax::normalize_name;

/// Which modems of a fleet a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTargets {
    All,
    /// Indices `first..=last`.
    Range(usize, usize),
}

impl FaultTargets {
    pub fn contains(&self, index: usize) -> bool {
        match *self {
            FaultTargets::All => true,
            FaultTargets::Range(first, last) => (first..=last).contains(&index),
        }
    }
}

/// Commands whose answer is a token: the ones `substitute` applies to.
pub const TOKEN_COMMANDS: [&str; 3] = ["ATTESTTOKEN", "KEYGEN", "JWT"];

/// A kind of genuine token the `substitute` fault hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "kebab-case")]
pub enum CapturedToken {
    /// An identity attestation token, as `%ATTESTTOKEN` makes.
    Identity,
    /// A key-generation token with a CSR, as `%KEYGEN=<tag>,2,0` makes.
    Keygen,
    /// A key-generation token with a public key, as `%KEYGEN=<tag>,2,1` makes.
    #[strum(serialize = "keygen-pubkey")]
    KeygenPublicKey,
    /// A JWT signed by the identity key, as `%JWT` makes.
    Jwt,
}

impl CapturedToken {
    pub const ALL: &[CapturedToken] = <CapturedToken as strum::VariantArray>::VARIANTS;

    /// The name in the fault grammar.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for CapturedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CapturedToken {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CapturedToken::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| FaultParseError::BadTokenKind(s.to_owned()))
    }
}

/// One misbehaviour. Command names are stored normalised (see
/// [`normalize_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    UrcStorm,
    Garbage,
    Unplug {
        command: String,
    },
    Stall {
        command: String,
    },
    Cme {
        code: u16,
        command: String,
    },
    BadSignature,
    IgnoreChallenge,
    Replay,
    WrongUuid,
    BadDigest,
    /// `%CLAIMTOKEN` binds the digest of another ownership key.
    ClaimDigest,
    /// `%CLAIMTOKEN` names another device UUID.
    ClaimUuid,
    UntrustedKey,
    LegacyCsr,
    /// The first answer to `command` is preceded by `bytes` of 1 KiB
    /// information lines: a response that would eat a host's memory.
    Flood {
        bytes: u64,
        command: String,
    },
    /// `command` (one of [`TOKEN_COMMANDS`]) answers with a genuine `token`.
    Substitute {
        token: CapturedToken,
        command: String,
    },
    /// Every `%JWT` answers with these JWTs, in turn (harvested earlier).
    ReplayJwts(Vec<String>),
    /// `%JWT` without `iat`/`exp`, whatever `exp_delta`.
    JwtNoTime,
    /// The board says it is another device, with the same identity key.
    SecondUuid,
    /// COSE signatures over other bytes than the project's `Sig_structure`.
    OtherSigningInput,
    /// `AT+CGSN` answers this text.
    Imei(String),
    /// Identify answers that are spreadsheet formulas with CR and tab.
    HostileText,
    /// `command` (`KEYGEN` or `JWT`) puts control characters in its token.
    ControlChars {
        command: String,
    },
}

/// A fault and the modems it applies to (`--fault 2:bad-signature`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    pub targets: FaultTargets,
    pub fault: Fault,
}

impl FaultSpec {
    pub fn new(targets: FaultTargets, fault: Fault) -> Self {
        Self { targets, fault }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FaultParseError {
    #[error("fault spec {0:?} has no ':' (expected TARGETS:FAULT, e.g. 2:bad-signature)")]
    NoColon(String),
    #[error("bad modem index or range {0:?} (expected all, N or N-M)")]
    BadTargets(String),
    #[error("unknown fault {0:?}")]
    UnknownFault(String),
    #[error("fault {0:?} needs a command: {0}@KEYGEN")]
    MissingCommand(String),
    #[error("fault {0:?} takes no command")]
    UnexpectedCommand(String),
    #[error("bad CME error code {0:?} (expected 1..=65535)")]
    BadCode(String),
    #[error("bad flood size {0:?} (expected bytes, e.g. 5000, 64K or 200M)")]
    BadSize(String),
    #[error("unknown token kind {0:?} (expected identity, keygen, keygen-pubkey or jwt)")]
    BadTokenKind(String),
    #[error("substitute applies to a token command (ATTESTTOKEN, KEYGEN or JWT), not {0:?}")]
    NotATokenCommand(String),
    #[error("control-chars applies to KEYGEN or JWT, not {0:?}")]
    NotATextCommand(String),
    #[error("replay-jwts takes JWTs separated by commas, not {0:?}")]
    BadJwts(String),
    #[error("imei= takes the text AT+CGSN answers, without quotes, ':' or '@'; got {0:?}")]
    BadImeiText(String),
}

impl FromStr for FaultTargets {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FaultParseError::BadTargets(s.to_owned());
        if s.eq_ignore_ascii_case("all") {
            return Ok(FaultTargets::All);
        }
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let n = s.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if first > last {
            return Err(bad());
        }
        Ok(FaultTargets::Range(first, last))
    }
}

impl FromStr for FaultSpec {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (targets, fault) = s
            .split_once(':')
            .ok_or_else(|| FaultParseError::NoColon(s.to_owned()))?;
        Ok(FaultSpec {
            targets: targets.trim().parse()?,
            fault: fault.trim().parse()?,
        })
    }
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (head, command) = match s.split_once('@') {
            Some((head, cmd)) if !normalize_name(cmd).is_empty() => {
                (head, Some(normalize_name(cmd)))
            }
            Some((head, _)) => return Err(FaultParseError::MissingCommand(head.to_owned())),
            None => (s, None),
        };
        let head_lower = head.to_ascii_lowercase();
        let needs = |make: fn(String) -> Fault| {
            command
                .clone()
                .map(make)
                .ok_or_else(|| FaultParseError::MissingCommand(head.to_owned()))
        };
        let fault = match head_lower.as_str() {
            "unplug" => return needs(|command| Fault::Unplug { command }),
            "stall" => return needs(|command| Fault::Stall { command }),
            _ if head_lower.starts_with("cme=") => {
                let code_text = &head[4..];
                let code = code_text
                    .parse::<u16>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| FaultParseError::BadCode(code_text.to_owned()))?;
                let command =
                    command.ok_or_else(|| FaultParseError::MissingCommand(head.to_owned()))?;
                return Ok(Fault::Cme { code, command });
            }
            _ if head_lower.starts_with("flood=") => {
                let size = head.get("flood=".len()..).unwrap_or_default();
                let bytes =
                    parse_size(size).ok_or_else(|| FaultParseError::BadSize(size.to_owned()))?;
                let command =
                    command.ok_or_else(|| FaultParseError::MissingCommand(head.to_owned()))?;
                return Ok(Fault::Flood { bytes, command });
            }
            _ if head_lower.starts_with("substitute=") => {
                let token = head
                    .get("substitute=".len()..)
                    .unwrap_or_default()
                    .parse()?;
                let command =
                    command.ok_or_else(|| FaultParseError::MissingCommand(head.to_owned()))?;
                if !TOKEN_COMMANDS.contains(&command.as_str()) {
                    return Err(FaultParseError::NotATokenCommand(command));
                }
                return Ok(Fault::Substitute { token, command });
            }
            "control-chars" => {
                let command =
                    command.ok_or_else(|| FaultParseError::MissingCommand(head.to_owned()))?;
                if !["KEYGEN", "JWT"].contains(&command.as_str()) {
                    return Err(FaultParseError::NotATextCommand(command));
                }
                return Ok(Fault::ControlChars { command });
            }
            _ if head_lower.starts_with("replay-jwts=") => {
                let list = head.get("replay-jwts=".len()..).unwrap_or_default();
                let jwts: Vec<String> = list.split(',').map(|j| j.trim().to_owned()).collect();
                let jwt_like = |j: &String| {
                    j.split('.').count() == 3
                        && j.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                };
                if !jwts.iter().all(jwt_like) {
                    return Err(FaultParseError::BadJwts(list.to_owned()));
                }
                Fault::ReplayJwts(jwts)
            }
            _ if head_lower.starts_with("imei=") => {
                let text = head.get("imei=".len()..).unwrap_or_default();
                if text.contains('"') {
                    return Err(FaultParseError::BadImeiText(text.to_owned()));
                }
                Fault::Imei(text.to_owned())
            }
            "jwt-no-time" => Fault::JwtNoTime,
            "second-uuid" => Fault::SecondUuid,
            "other-signing-input" => Fault::OtherSigningInput,
            "hostile-text" => Fault::HostileText,
            "urc-storm" | "urc" => Fault::UrcStorm,
            "garbage" => Fault::Garbage,
            "bad-signature" => Fault::BadSignature,
            "ignore-challenge" => Fault::IgnoreChallenge,
            "replay" => Fault::Replay,
            "wrong-uuid" => Fault::WrongUuid,
            "bad-digest" => Fault::BadDigest,
            "claim-digest" => Fault::ClaimDigest,
            "claim-uuid" => Fault::ClaimUuid,
            "untrusted-key" => Fault::UntrustedKey,
            "legacy-csr" => Fault::LegacyCsr,
            _ => return Err(FaultParseError::UnknownFault(head.to_owned())),
        };
        if command.is_some() {
            return Err(FaultParseError::UnexpectedCommand(head.to_owned()));
        }
        Ok(fault)
    }
}

/// `5000`, `64K`, `200M`, `1G` (powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor).filter(|b| *b > 0)
}

impl fmt::Display for FaultTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FaultTargets::All => f.write_str("all"),
            FaultTargets::Range(a, b) if a == b => write!(f, "{a}"),
            FaultTargets::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::UrcStorm => f.write_str("urc-storm"),
            Fault::Garbage => f.write_str("garbage"),
            Fault::Unplug { command } => write!(f, "unplug@{command}"),
            Fault::Stall { command } => write!(f, "stall@{command}"),
            Fault::Flood { bytes, command } => write!(f, "flood={bytes}@{command}"),
            Fault::Cme { code, command } => write!(f, "cme={code}@{command}"),
            Fault::BadSignature => f.write_str("bad-signature"),
            Fault::IgnoreChallenge => f.write_str("ignore-challenge"),
            Fault::Replay => f.write_str("replay"),
            Fault::WrongUuid => f.write_str("wrong-uuid"),
            Fault::BadDigest => f.write_str("bad-digest"),
            Fault::ClaimDigest => f.write_str("claim-digest"),
            Fault::ClaimUuid => f.write_str("claim-uuid"),
            Fault::UntrustedKey => f.write_str("untrusted-key"),
            Fault::LegacyCsr => f.write_str("legacy-csr"),
            Fault::Substitute { token, command } => write!(f, "substitute={token}@{command}"),
            Fault::ReplayJwts(jwts) => write!(f, "replay-jwts={}", jwts.join(",")),
            Fault::JwtNoTime => f.write_str("jwt-no-time"),
            Fault::SecondUuid => f.write_str("second-uuid"),
            Fault::OtherSigningInput => f.write_str("other-signing-input"),
            Fault::Imei(text) => write!(f, "imei={text}"),
            Fault::HostileText => f.write_str("hostile-text"),
            Fault::ControlChars { command } => write!(f, "control-chars@{command}"),
        }
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.targets, self.fault)
    }
}

/// The faults that apply to one modem, for quick checks while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSet {
    pub faults: Vec<Fault>,
}

impl FaultSet {
    /// The faults of `specs` that target modem `index`.
    pub fn for_index(specs: &[FaultSpec], index: usize) -> Self {
        Self {
            faults: specs
                .iter()
                .filter(|s| s.targets.contains(index))
                .map(|s| s.fault.clone())
                .collect(),
        }
    }

    pub fn has(&self, fault: &Fault) -> bool {
        self.faults.contains(fault)
    }

    /// The CME error injected for a command with normalised name `name`.
    pub fn cme_for(&self, name: &str) -> Option<u16> {
        self.faults.iter().find_map(|f| match f {
            Fault::Cme { code, command } if command == name => Some(*code),
            _ => None,
        })
    }

    /// Bytes of flood before the first answer to `name`, if any.
    pub fn flood_for(&self, name: &str) -> Option<u64> {
        self.faults.iter().find_map(|f| match f {
            Fault::Flood { bytes, command } if command == name => Some(*bytes),
            _ => None,
        })
    }

    pub fn stalls(&self, name: &str) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f, Fault::Stall { command } if command == name))
    }

    pub fn unplugs(&self, name: &str) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f, Fault::Unplug { command } if command == name))
    }

    /// The JWTs every `%JWT` answers with, in turn (`replay-jwts`).
    pub fn replayed_jwts(&self) -> Option<&[String]> {
        self.faults.iter().find_map(|f| match f {
            Fault::ReplayJwts(jwts) => Some(jwts.as_slice()),
            _ => None,
        })
    }

    /// The text `AT+CGSN` answers instead of the IMEI (`imei=`).
    pub fn imei_text(&self) -> Option<&str> {
        self.faults.iter().find_map(|f| match f {
            Fault::Imei(text) => Some(text.as_str()),
            _ => None,
        })
    }

    /// Whether the token of `name` (`KEYGEN`, `JWT`) holds control characters.
    pub fn control_chars(&self, name: &str) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f, Fault::ControlChars { command } if command == name))
    }

    /// The token kind a command with normalised name `name` answers with
    /// instead of its own (the first matching `substitute` fault).
    pub fn substitute_for(&self, name: &str) -> Option<CapturedToken> {
        self.faults.iter().find_map(|f| match f {
            Fault::Substitute { token, command } if command == name => Some(*token),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        let cases = [
            (
                "2:bad-signature",
                FaultTargets::Range(2, 2),
                Fault::BadSignature,
            ),
            ("all:urc-storm", FaultTargets::All, Fault::UrcStorm),
            (
                "0-3:cme=518@KEYGEN",
                FaultTargets::Range(0, 3),
                Fault::Cme {
                    code: 518,
                    command: "KEYGEN".into(),
                },
            ),
            (
                "1:stall@at+cgsn",
                FaultTargets::Range(1, 1),
                Fault::Stall {
                    command: "CGSN".into(),
                },
            ),
            (
                "ALL:unplug@%KEYGEN",
                FaultTargets::All,
                Fault::Unplug {
                    command: "KEYGEN".into(),
                },
            ),
            ("4:legacy-csr", FaultTargets::Range(4, 4), Fault::LegacyCsr),
            (
                "0:substitute=keygen@ATTESTTOKEN",
                FaultTargets::Range(0, 0),
                Fault::Substitute {
                    token: CapturedToken::Keygen,
                    command: "ATTESTTOKEN".into(),
                },
            ),
            (
                "3:replay-jwts=a.b.c,d-e.f_g.h",
                FaultTargets::Range(3, 3),
                Fault::ReplayJwts(vec!["a.b.c".into(), "d-e.f_g.h".into()]),
            ),
            ("0:jwt-no-time", FaultTargets::Range(0, 0), Fault::JwtNoTime),
            (
                "0:second-uuid",
                FaultTargets::Range(0, 0),
                Fault::SecondUuid,
            ),
            (
                "0:other-signing-input",
                FaultTargets::Range(0, 0),
                Fault::OtherSigningInput,
            ),
            (
                "0:imei=000000000000001",
                FaultTargets::Range(0, 0),
                Fault::Imei("000000000000001".into()),
            ),
            (
                "0:hostile-text",
                FaultTargets::Range(0, 0),
                Fault::HostileText,
            ),
            (
                "0:control-chars@%JWT",
                FaultTargets::Range(0, 0),
                Fault::ControlChars {
                    command: "JWT".into(),
                },
            ),
            (
                "1-2:substitute=JWT@at%keygen",
                FaultTargets::Range(1, 2),
                Fault::Substitute {
                    token: CapturedToken::Jwt,
                    command: "KEYGEN".into(),
                },
            ),
        ];
        for (text, targets, fault) in cases {
            let spec: FaultSpec = text.parse().unwrap();
            assert_eq!(spec, FaultSpec::new(targets, fault), "{text}");
            // Display round-trips through the parser.
            assert_eq!(spec.to_string().parse::<FaultSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        for bad in [
            "bad-signature",
            "x:replay",
            "3-1:replay",
            "1:nonsense",
            "1:stall",
            "1:unplug@",
            "1:cme=0@KEYGEN",
            "1:cme=abc@KEYGEN",
            "1:cme=518",
            "1:replay@KEYGEN",
            "1:substitute=keygen",
            "1:substitute=@JWT",
            "1:substitute=csr@JWT",
            "1:substitute=jwt@CGSN",
            "1:substitute=identity@",
            "1:replay-jwts=",
            "1:replay-jwts=a.b",
            "1:control-chars",
            "1:control-chars@CGSN",
            "1:imei=\"1\"",
        ] {
            assert!(bad.parse::<FaultSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fault_set_selects_by_index() {
        let specs: Vec<FaultSpec> = ["0:replay", "1-2:bad-digest", "all:cme=513@CMNG"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let one = FaultSet::for_index(&specs, 1);
        assert!(!one.has(&Fault::Replay));
        assert!(one.has(&Fault::BadDigest));
        assert_eq!(one.cme_for("CMNG"), Some(513));
        assert_eq!(one.cme_for("KEYGEN"), None);
    }

    #[test]
    fn every_substitution_round_trips_and_is_found_by_command() {
        let words: Vec<&str> = CapturedToken::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(words, ["identity", "keygen", "keygen-pubkey", "jwt"]);
        for &token in CapturedToken::ALL {
            for command in TOKEN_COMMANDS {
                let text = format!("0:substitute={token}@%{command}");
                let spec: FaultSpec = text.parse().unwrap();
                assert_eq!(spec.to_string().parse::<FaultSpec>().unwrap(), spec);
                let set = FaultSet::for_index(&[spec], 0);
                assert_eq!(set.substitute_for(command), Some(token), "{text}");
                let others = TOKEN_COMMANDS.iter().filter(|c| **c != command);
                for other in others {
                    assert_eq!(set.substitute_for(other), None, "{text} on {other}");
                }
            }
        }
    }
}
