//! `nrf-provd parse` and `nrf-provd verify`.
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use uuid::Uuid;

use super::{EXIT_FAIL, error_exit};
use crate::token::ClaimExpected;
use crate::token::{
    self, CheckName, Expected, Freshness, IdentityExpected, JwtExpected, JwtFreshness, KeyFormat,
    KeygenExpected, Token,
};
use crate::trust::TrustStore;

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Token text, quoted token, or a whole `%ATTESTTOKEN: "…"` / `%KEYGEN: "…"`
    /// / `%JWT: "…"` / `%CLAIMTOKEN: "…"` line. `-` or nothing reads standard
    /// input.
    #[arg(conflicts_with = "recover_key")]
    pub token: Option<String>,
    /// Print the device identity public key two `%JWT` tokens of one device
    /// share (ECDSA key recovery), or say there is none. The key can then be
    /// given to `verify --key`.
    #[arg(long, num_args = 2, value_names = ["JWT1", "JWT2"])]
    pub recover_key: Option<Vec<String>>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Token text, quoted token, or a whole response line; `-` or nothing reads stdin.
    pub token: Option<String>,
    /// Trust file: CSV `device_uuid,public_key` (base64 SPKI DER of P-256 keys).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "key",
        conflicts_with = "key"
    )]
    pub trust: Option<PathBuf>,
    /// The device identity public key to verify with instead of a trust file:
    /// base64 SubjectPublicKeyInfo DER (as `parse --recover-key` prints it)
    /// or a PEM `PUBLIC KEY` file.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// The kind the token must be, as the command that produced it returns:
    /// identity (%ATTESTTOKEN), keygen-csr / keygen-public-key (%KEYGEN
    /// format 0 / 1), jwt (%JWT) or claim (%CLAIMTOKEN). Default: the kind
    /// the token decodes as.
    #[arg(long, value_enum, value_name = "KIND")]
    pub kind: Option<ExpectKind>,
    /// Challenge sent with `AT%ATTESTTOKEN` or `AT%CLAIMTOKEN` (32 hex
    /// digits): the token must carry it. Identity and claim tokens only.
    /// Without it freshness is not checked.
    #[arg(long, value_name = "HEX32", value_parser = parse_challenge)]
    pub challenge: Option<[u8; 16]>,
    /// sec_tag requested with `AT%KEYGEN`. Key-generation tokens only.
    #[arg(long, value_name = "N")]
    pub sec_tag: Option<u32>,
    /// Device UUID seen elsewhere (e.g. `AT%DEVICEUUID`): the token must name it.
    #[arg(long, value_name = "UUID")]
    pub device_uuid: Option<Uuid>,
    /// The ownership public key written to the claim's sec_tag (PEM file
    /// or text, or base64 SubjectPublicKeyInfo DER): the claim token must
    /// bind its SHA-256. Claim tokens only.
    #[arg(long, value_name = "KEY")]
    pub ownership_key: Option<String>,
    /// Common name the CSR must carry. CSR tokens only.
    #[arg(long, value_name = "CN")]
    pub common_name: Option<String>,
    /// Expected JWT issuer (`iss`). JWTs only.
    #[arg(long, value_name = "ISS")]
    pub issuer: Option<String>,
    /// Time for JWT `iat`/`exp` checks, unix seconds (default: now). JWTs only.
    #[arg(long, value_name = "SECONDS")]
    pub now: Option<i64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The token kind `verify --kind` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExpectKind {
    Identity,
    KeygenCsr,
    KeygenPublicKey,
    Jwt,
    Claim,
}

impl ExpectKind {
    fn of(token: &Token) -> Self {
        match token {
            Token::Identity(_) => ExpectKind::Identity,
            Token::Keygen(t) if t.format == KeyFormat::Csr => ExpectKind::KeygenCsr,
            Token::Keygen(_) => ExpectKind::KeygenPublicKey,
            Token::Jwt(_) => ExpectKind::Jwt,
            Token::Claim(_) => ExpectKind::Claim,
        }
    }

    fn words(self) -> &'static str {
        match self {
            ExpectKind::Identity => "an identity token",
            ExpectKind::KeygenCsr => "a key-generation token with a CSR",
            ExpectKind::KeygenPublicKey => "a key-generation token with a public key",
            ExpectKind::Jwt => "a JWT",
            ExpectKind::Claim => "a device claim token",
        }
    }
}

/// The expectation the flags describe for a token of kind `kind`, or why a
/// flag names a binding that kind cannot carry.
fn expected(args: &VerifyArgs, kind: ExpectKind) -> Result<Expected, String> {
    let refuse =
        |flag: &str, why: &str| Err(format!("{flag} does not apply to {}: {why}", kind.words()));
    if !matches!(kind, ExpectKind::Identity | ExpectKind::Claim) && args.challenge.is_some() {
        return refuse(
            "--challenge",
            "only an identity token (%ATTESTTOKEN) or a claim token (%CLAIMTOKEN) carries a host challenge; the nonce of a key-generation token is the modem's own, a JWT has none",
        );
    }
    if kind != ExpectKind::Claim && args.ownership_key.is_some() {
        return refuse(
            "--ownership-key",
            "only a claim token (%CLAIMTOKEN) binds an ownership key",
        );
    }
    let keygen = matches!(kind, ExpectKind::KeygenCsr | ExpectKind::KeygenPublicKey);
    if !keygen && args.sec_tag.is_some() {
        return refuse(
            "--sec-tag",
            "only a key-generation token (%KEYGEN) carries a sec_tag",
        );
    }
    if kind != ExpectKind::KeygenCsr && args.common_name.is_some() {
        return refuse("--common-name", "only a CSR carries a subject common name");
    }
    if kind != ExpectKind::Jwt && args.issuer.is_some() {
        return refuse("--issuer", "only a JWT carries an issuer");
    }
    if kind != ExpectKind::Jwt && args.now.is_some() {
        return refuse("--now", "only a JWT carries a time (iat/exp)");
    }
    let keygen_expected = |format| {
        Expected::Keygen(KeygenExpected {
            format,
            sec_tag: args.sec_tag,
            device_uuid: args.device_uuid,
            common_name: args.common_name.clone(),
        })
    };
    Ok(match kind {
        ExpectKind::Identity => Expected::Identity(IdentityExpected {
            freshness: args
                .challenge
                .map_or(Freshness::NotChecked, Freshness::Challenge),
            device_uuid: args.device_uuid,
        }),
        ExpectKind::Claim => Expected::Claim(ClaimExpected {
            freshness: args
                .challenge
                .map_or(Freshness::NotChecked, Freshness::Challenge),
            device_uuid: args.device_uuid,
            ownership_key_digest: match &args.ownership_key {
                Some(text) => Some(token::claim::ownership_key_digest(
                    &token::recover::parse_public_key(text)
                        .map_err(|e| format!("--ownership-key: {e}"))?,
                )),
                None => None,
            },
        }),
        ExpectKind::KeygenCsr => keygen_expected(KeyFormat::Csr),
        ExpectKind::KeygenPublicKey => keygen_expected(KeyFormat::PublicKey),
        ExpectKind::Jwt => Expected::Jwt(JwtExpected {
            device_uuid: args.device_uuid,
            // Offline nobody knows the challenge or the clock a station
            // set: said plainly below, as for an identity token.
            freshness: JwtFreshness::NotChecked {
                now: args.now.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64)
                }),
            },
            audience: None,
            issuer: args.issuer.clone(),
        }),
    })
}

/// The keys to verify with: the trust file, or the one key given for the
/// token's device.
fn keys(args: &VerifyArgs, token: &Token) -> Result<TrustStore, String> {
    if let Some(path) = &args.trust {
        return TrustStore::load(path).map_err(|e| format!("trust file: {e}"));
    }
    let text = args.key.as_deref().unwrap_or_default();
    let spki = crate::token::recover::parse_public_key(text).map_err(|e| format!("--key: {e}"))?;
    let mut store = TrustStore::new();
    if let Some(uuid) = token.device_uuid() {
        store
            .insert(uuid, &spki)
            .map_err(|e| format!("--key: {e}"))?;
    }
    Ok(store)
}

fn parse_challenge(text: &str) -> Result<[u8; 16], String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, expected 16 (32 hex digits)", b.len()))
}

/// The token text from the argument or stdin. Stdin may hold a whole AT
/// response: blank lines and a final `OK` are skipped.
fn input(arg: Option<&str>) -> Result<String, String> {
    let text = match arg {
        Some(text) if text != "-" => return Ok(text.to_string()),
        _ => {
            let mut buf = String::new();
            std::io::stdin()
                .read_to_string(&mut buf)
                .map_err(|e| format!("reading standard input: {e}"))?;
            buf
        }
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "OK")
        .collect();
    match lines.as_slice() {
        [] => Err("no token on standard input".into()),
        [one] => Ok(one.to_string()),
        many => many
            .iter()
            .find(|l| l.starts_with('%'))
            .map(|l| l.to_string())
            .ok_or_else(|| {
                format!(
                    "{} lines on standard input; give one token (or one %…: line)",
                    many.len()
                )
            }),
    }
}

fn decode_input(arg: Option<&str>) -> Result<Token, String> {
    let text = input(arg)?;
    token::decode(&text).map_err(|e| e.to_string())
}

pub async fn parse(args: ParseArgs) -> ExitCode {
    if let Some(jwts) = &args.recover_key {
        return recover_key(jwts, args.json);
    }
    let token = match decode_input(args.token.as_deref()) {
        Ok(token) => token,
        Err(e) => return error_exit(e),
    };
    if args.json {
        println!("{}", token.to_json());
    } else {
        for line in token.describe().lines() {
            println!("{}", crate::text::Escaped(line));
        }
    }
    ExitCode::SUCCESS
}

/// `parse --recover-key JWT1 JWT2`: exit 0 with the key, 1 when the two
/// JWTs share none, 2 when they are not JWTs.
fn recover_key(texts: &[String], json: bool) -> ExitCode {
    let mut jwts = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match token::decode(text) {
            Ok(Token::Jwt(jwt)) => jwts.push(jwt),
            Ok(other) => {
                return error_exit(format!(
                    "JWT{}: is {}, not a JWT (%JWT signs with the identity key over a standard input)",
                    i + 1,
                    other.kind().with_article()
                ));
            }
            Err(e) => return error_exit(format!("JWT{}: {e}", i + 1)),
        }
    }
    let [first, second] = jwts.as_slice() else {
        return error_exit("--recover-key takes two JWTs");
    };
    let device = first.issuer_uuid();
    match token::recover::recover_common_key(first, second) {
        Ok(key) => {
            let (base64, pem) = token::recover::describe_key(&key);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "device_uuid": device.map(|u| u.to_string()),
                        "public_key": base64,
                        "public_key_pem": pem,
                    })
                );
            } else {
                match device {
                    Some(uuid) => println!("identity public key of device {uuid} (from iss):"),
                    None => println!("identity public key (iss names no device UUID):"),
                }
                println!("  {base64}");
                print!("{pem}");
                if let Some(uuid) = device {
                    println!(
                        "trust file line:
  {uuid},{base64}"
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(err @ token::recover::RecoverError::NoCommonKey) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "public_key": null, "reason": err.to_string() })
                );
            } else {
                println!("NO COMMON KEY: {err}");
            }
            ExitCode::from(EXIT_FAIL)
        }
        Err(err) => error_exit(err),
    }
}

pub async fn verify(args: VerifyArgs) -> ExitCode {
    let token = match decode_input(args.token.as_deref()) {
        Ok(token) => token,
        Err(e) => return error_exit(e),
    };
    let trust = match keys(&args, &token) {
        Ok(trust) => trust,
        Err(e) => return error_exit(e),
    };
    // Flags are judged against the kind asked for (or the token's own);
    // a token of another kind then fails the `kind` check.
    let kind = args.kind.unwrap_or_else(|| ExpectKind::of(&token));
    let expected = match expected(&args, kind) {
        Ok(expected) => expected,
        Err(e) => return error_exit(e),
    };
    let verdict = token::verify::verify(&token, &expected, &trust);
    let authentic = verdict.authentic();
    let unfresh = matches!(
        &expected,
        Expected::Identity(IdentityExpected {
            freshness: Freshness::NotChecked,
            ..
        }) | Expected::Claim(ClaimExpected {
            freshness: Freshness::NotChecked,
            ..
        }) | Expected::Jwt(JwtExpected {
            freshness: JwtFreshness::NotChecked { .. },
            ..
        })
    ) && verdict.check(CheckName::Kind).is_some_and(|c| c.passed);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "authentic": authentic,
                "kind": token.kind(),
                "freshness_checked": !unfresh,
                "device_uuid": token.device_uuid().map(|u| u.to_string()),
                "checks": verdict.checks,
                "token": token.to_json(),
            })
        );
    } else {
        let device = token
            .device_uuid()
            .map_or_else(|| "unknown device".to_string(), |u| format!("device {u}"));
        println!(
            "{}: {} token of {device}",
            if authentic {
                "AUTHENTIC"
            } else {
                "NOT AUTHENTIC"
            },
            token.kind()
        );
        for check in &verdict.checks {
            println!(
                "  {:<4} {:<14} {}",
                if check.passed { "ok" } else { "FAIL" },
                check.name,
                crate::text::Escaped(&check.detail)
            );
        }
        let judged = verdict.check(CheckName::Kind).is_some_and(|c| c.passed);
        if judged && verdict.check(CheckName::Signature).is_none() {
            println!("  FAIL signature      not checked: no trusted key for this device");
        }
        if let Expected::Claim(ClaimExpected {
            ownership_key_digest: None,
            ..
        }) = &expected
        {
            println!(
                "  note ownership      NOT CHECKED: no --ownership-key given, so a claim token for another owner's key would pass"
            );
        }
        if unfresh && token.kind() == crate::token::TokenKind::Jwt {
            println!(
                "  note freshness      NOT CHECKED: only the station that asked for a JWT knows its challenge (sub) and the clock it set, so a harvested or replayed JWT would pass"
            );
        } else if unfresh {
            println!(
                "  note freshness      NOT CHECKED: no --challenge given, so a stale or replayed token would pass"
            );
        }
    }
    if authentic {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAIL)
    }
}
