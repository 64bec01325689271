//! The station CA: signs the CSR a modem generated into a device certificate.
//!
//! x509-cert's builder with a p256 ECDSA key; the signature itself is
//! ring's (as every verification in nrf91-token is): a certificate is signed
//! for every board, and ring signs P-256 several times faster than p256's
//! arithmetic (`cargo bench -p nrf-provd-core --bench ca`). The CA key is
//! refused when group or others can read it or replace it (a directory on
//! its path they can write: [`secure_file`]), written with mode 0600,
//! and never printed (`Debug` shows the subject only).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::asn1::OctetString;
use der::pem::LineEnding;
use der::referenced::OwnedToRef;
use der::{Any, Decode, DecodePem, Encode, EncodePem, Tag};
use p256::ecdsa::signature::{self, Keypair, Signer};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rand::RngCore;
use x509_cert::Certificate;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned,
};
use x509_cert::time::{Time, Validity};

use secure_file::{self, Holds, UnsafeFile};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Others could read or replace the key (its mode, or a directory on
    /// its path).
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
    #[error("{}: not a {what}: {detail}", path.display())]
    Parse {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{}: CA key does not belong to the CA certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: certificate is not a CA (basicConstraints cA is not set)", path.display())]
    NotCa { path: PathBuf },
    #[error("{}: certificate may not sign certificates (its keyUsage lacks keyCertSign)", path.display())]
    NoCertSign { path: PathBuf },
    #[error(
        "{}: CA certificate expired on {not_after}; device certificates it signed would be refused — make a new CA (`nrf-provd ca create`) and point [ca] at it",
        path.display()
    )]
    Expired { path: PathBuf, not_after: String },
    #[error(
        "{}: CA certificate is not valid before {not_before} (check this station's clock)",
        path.display()
    )]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("device public key: {0}")]
    PublicKey(String),
    #[error("invalid common name {0:?}: must be 1 to 64 characters")]
    CommonName(String),
    #[error(
        "invalid subject {text:?}: {detail}; expected an RFC 4514 name such as `CN=Line 3 CA,O=Acme`"
    )]
    Subject { text: String, detail: String },
    #[error("{}: already exists; not overwritten", path.display())]
    Exists { path: PathBuf },
    #[error("cannot build certificate: {0}")]
    Build(String),
}

pub struct StationCa {
    cert: Certificate,
    key: SigningKey,
    /// The same key in ring, which signs the device certificates.
    signer: RingSigner,
    /// Where the certificate came from, for errors ("generated" if made here).
    origin: PathBuf,
}

/// When and for how long a device certificate is issued, and its serial.
/// Comes from the caller so that a station's clock and random source decide
/// (and a test can fix them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuance {
    pub now: SystemTime,
    /// Wanted validity; cut to the CA certificate's own end.
    pub validity: Duration,
    /// 16 random bytes.
    pub serial: [u8; 16],
}

impl Issuance {
    /// Now, by the system clock, with a serial from the OS random source.
    pub fn now(validity: Duration) -> Self {
        let mut serial = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut serial);
        Issuance {
            now: SystemTime::now(),
            validity,
            serial,
        }
    }
}

impl std::fmt::Debug for StationCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StationCa")
            .field("subject", &self.cert.tbs_certificate.subject.to_string())
            .finish_non_exhaustive()
    }
}

/// The CA key as the certificate builder's signer, signing with ring.
struct RingSigner {
    pair: ring::signature::EcdsaKeyPair,
    public: VerifyingKey,
    random: ring::rand::SystemRandom,
}

impl RingSigner {
    fn new(key: &SigningKey) -> Result<Self, CaError> {
        let random = ring::rand::SystemRandom::new();
        let pkcs8 = key.to_pkcs8_der().map_err(build_err)?;
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_bytes(),
            &random,
        )
        .map_err(|e| CaError::Build(format!("CA key refused by ring: {e}")))?;
        Ok(RingSigner {
            pair,
            public: *key.verifying_key(),
            random,
        })
    }
}

impl Keypair for RingSigner {
    type VerifyingKey = VerifyingKey;

    fn verifying_key(&self) -> VerifyingKey {
        self.public
    }
}

impl DynSignatureAlgorithmIdentifier for RingSigner {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        self.public.signature_algorithm_identifier()
    }
}

impl Signer<DerSignature> for RingSigner {
    fn try_sign(&self, message: &[u8]) -> Result<DerSignature, signature::Error> {
        let signed = self
            .pair
            .sign(&self.random, message)
            .map_err(|_| signature::Error::new())?;
        DerSignature::try_from(signed.as_ref())
    }
}

/// A signed device certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    pub der: Vec<u8>,
    /// Standard PEM with `\n` line ends.
    pub pem: String,
}

fn build_err(e: impl std::fmt::Display) -> CaError {
    CaError::Build(e.to_string())
}

/// `CN=<common_name>` as a UTF8String.
pub fn common_name(cn: &str) -> Result<Name, CaError> {
    if cn.is_empty() || cn.chars().count() > 64 {
        return Err(CaError::CommonName(cn.to_owned()));
    }
    let atv = AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value: Any::new(Tag::Utf8String, cn.as_bytes()).map_err(build_err)?,
    };
    let rdn = RelativeDistinguishedName::try_from(vec![atv]).map_err(build_err)?;
    Ok(RdnSequence(vec![rdn]))
}

/// A distinguished name from its RFC 4514 text, most significant part
/// last as people write it: `CN=Line 3 CA,O=Acme,C=DE`. Values are
/// UTF8Strings (C and serialNumber PrintableStrings, as RFC 5280 wants).
pub fn parse_subject(text: &str) -> Result<Name, CaError> {
    let error = |detail: &str| CaError::Subject {
        text: text.to_owned(),
        detail: detail.to_owned(),
    };
    if text.trim().is_empty() {
        return Err(error("empty"));
    }
    let name: Name = text
        .parse()
        .map_err(|_| error("an unknown attribute type, a missing `=` or a bad escape"))?;
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.value.value().is_empty() {
                let oid = atv.oid.to_string();
                let kind = const_oid::db::DB.by_oid(&atv.oid).unwrap_or(&oid);
                return Err(error(&format!("{kind} has an empty value")));
            }
        }
    }
    Ok(name)
}

/// A 16-byte serial from random bytes (RFC 5280 allows up to 20; unique
/// with overwhelming odds).
fn serial_number(mut bytes: [u8; 16]) -> Result<SerialNumber, CaError> {
    // Clear the top bit (else DER adds a 0x00 pad byte) and keep the first
    // byte non-zero (else DER drops it): always exactly 16 octets.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::new(&bytes).map_err(build_err)
}

/// An X.509 time: UTCTime through 2049, GeneralizedTime after, as RFC 5280
/// §4.1.2.5 requires (strict TLS stacks on devices check this).
fn x509_time(t: SystemTime) -> Result<Time, CaError> {
    let utc = der::asn1::UtcTime::from_system_time(t);
    match utc {
        Ok(utc) => Ok(Time::UtcTime(utc)),
        Err(_) => der::asn1::GeneralizedTime::from_system_time(t)
            .map(Time::GeneralTime)
            .map_err(build_err),
    }
}

fn show_time(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

fn parse_key(path: &Path, bytes: &[u8]) -> Result<SigningKey, CaError> {
    let parse_err = |detail: String| CaError::Parse {
        path: path.to_owned(),
        what: "P-256 private key (PEM, PKCS#8 or SEC1)",
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| parse_err(e.to_string()))?;
    let secret = if text.contains("BEGIN EC PRIVATE KEY") {
        p256::SecretKey::from_sec1_pem(text).map_err(|e| parse_err(e.to_string()))?
    } else {
        p256::SecretKey::from_pkcs8_pem(text).map_err(|e| parse_err(e.to_string()))?
    };
    Ok(SigningKey::from(secret))
}

fn extension<T: for<'a> Decode<'a>>(
    cert: &Certificate,
    oid: const_oid::ObjectIdentifier,
) -> Option<T> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|ext| ext.extn_id == oid)
        .and_then(|ext| T::from_der(ext.extn_value.as_bytes()).ok())
}

/// A CA certificate to install on the modem (`[ca] install`): what the
/// device will trust, so refused, as the trust file, when others could
/// change it.
pub fn read_install_pem(path: &Path) -> Result<String, CaError> {
    let io = |source| CaError::Io {
        path: path.to_owned(),
        action: "cannot read the CA certificate to install",
        source,
    };
    let file = secure_file::open(path, "CA certificate to install", Holds::Trust)
        .map_err(|refusal| refusal.into_error(io))?;
    std::io::read_to_string(file).map_err(io)
}

/// Who written files belong to (`ca create --owner`).
pub type Owner = (nix::unistd::Uid, nix::unistd::Gid);

/// Write `bytes` to `path` atomically (temporary file, fsync, rename) with
/// `mode` and, when given, `owner`. Unless `replace`, a file already at
/// `path` is an error and stays as it was (the temporary file is
/// hard-linked into place, which fails when the name exists, rather than
/// renamed over it). Nothing here follows a symlink: the temporary file is
/// created new (`O_EXCL`), mode and owner are set on its descriptor before
/// it gets its name, and rename and link replace or refuse a name, never
/// what it points to.
fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    replace: bool,
    owner: Option<Owner>,
) -> Result<(), CaError> {
    let io = |action| {
        move |source| CaError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A stale temporary file from an earlier crash would make create_new fail.
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("cannot create"))?;
    if let Some((uid, gid)) = owner {
        use std::os::fd::AsRawFd;
        nix::unistd::fchown(file.as_raw_fd(), Some(uid), Some(gid))
            .map_err(|e| io("cannot change the owner")(e.into()))?;
    }
    // The process umask may have cleared bits; never widen, only set exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot set mode"))?;
    file.write_all(bytes).map_err(io("cannot write"))?;
    file.sync_all().map_err(io("cannot sync"))?;
    if replace {
        return std::fs::rename(&tmp, path).map_err(io("cannot rename into place"));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(CaError::Exists {
            path: path.to_owned(),
        }),
        Err(e) => Err(io("cannot link into place")(e)),
    }
}

impl StationCa {
    /// Load a CA certificate and its key (PEM). The key must not be readable
    /// by group or others and must match the certificate, which must be a CA
    /// that may sign certificates and is valid now (by the system clock).
    pub fn load(cert_pem: &Path, key_pem: &Path) -> Result<Self, CaError> {
        let ca = Self::load_unchecked(cert_pem, key_pem)?;
        ca.check_valid_at(SystemTime::now())?;
        Ok(ca)
    }

    /// Refuse a CA certificate that is not valid at `now`.
    pub fn check_valid_at(&self, now: SystemTime) -> Result<(), CaError> {
        let validity = &self.cert.tbs_certificate.validity;
        let not_before = validity.not_before.to_system_time();
        let not_after = validity.not_after.to_system_time();
        if now < not_before {
            return Err(CaError::NotYetValid {
                path: self.origin.clone(),
                not_before: show_time(not_before),
            });
        }
        if now > not_after {
            return Err(CaError::Expired {
                path: self.origin.clone(),
                not_after: show_time(not_after),
            });
        }
        Ok(())
    }

    /// When the CA certificate stops being valid.
    pub fn not_after(&self) -> SystemTime {
        self.cert
            .tbs_certificate
            .validity
            .not_after
            .to_system_time()
    }

    fn load_unchecked(cert_pem: &Path, key_pem: &Path) -> Result<Self, CaError> {
        let cert_bytes = std::fs::read(cert_pem).map_err(|source| CaError::Io {
            path: cert_pem.to_owned(),
            action: "cannot read CA certificate",
            source,
        })?;
        let cert = Certificate::from_pem(&cert_bytes).map_err(|e| CaError::Parse {
            path: cert_pem.to_owned(),
            what: "PEM certificate",
            detail: e.to_string(),
        })?;
        let is_ca =
            extension::<BasicConstraints>(&cert, const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS)
                .is_some_and(|bc| bc.ca);
        if !is_ca {
            return Err(CaError::NotCa {
                path: cert_pem.to_owned(),
            });
        }
        // A keyUsage, when present, must allow signing certificates.
        let may_sign = extension::<KeyUsage>(&cert, const_oid::db::rfc5280::ID_CE_KEY_USAGE)
            .is_none_or(|ku| ku.key_cert_sign());
        if !may_sign {
            return Err(CaError::NoCertSign {
                path: cert_pem.to_owned(),
            });
        }

        let io = |source| CaError::Io {
            path: key_pem.to_owned(),
            action: "cannot read CA key",
            source,
        };
        let mut key_file = secure_file::open(key_pem, "CA key", Holds::Secret)
            .map_err(|refusal| refusal.into_error(io))?;
        let mut key_bytes = zeroize::Zeroizing::new(Vec::new());
        key_file.read_to_end(&mut key_bytes).map_err(io)?;
        let key = parse_key(key_pem, &key_bytes)?;

        let spki_der = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(build_err)?;
        let cert_key =
            p256::PublicKey::from_public_key_der(&spki_der).map_err(|e| CaError::Parse {
                path: cert_pem.to_owned(),
                what: "certificate with a P-256 public key",
                detail: e.to_string(),
            })?;
        if cert_key != p256::PublicKey::from(key.verifying_key()) {
            return Err(CaError::KeyMismatch {
                cert: cert_pem.to_owned(),
                key: key_pem.to_owned(),
            });
        }
        Ok(StationCa {
            cert,
            signer: RingSigner::new(&key)?,
            key,
            origin: cert_pem.to_owned(),
        })
    }

    /// A fresh self-signed CA with a random key, valid from now (demo, tests).
    pub fn generate(common_name_text: &str, validity: Duration) -> Result<Self, CaError> {
        Self::generate_valid_from(common_name_text, SystemTime::now(), validity)
    }

    /// A fresh self-signed CA valid from `now` for `validity`.
    pub fn generate_valid_from(
        common_name_text: &str,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Self, CaError> {
        Self::generate_with_subject(common_name(common_name_text)?, now, validity)
    }

    /// A fresh self-signed CA with a random P-256 key and any subject, valid
    /// from `now` for `validity`. Extensions (x509-cert's root profile):
    /// basicConstraints cA=true and keyUsage keyCertSign + cRLSign, both
    /// critical; subjectKeyIdentifier.
    pub fn generate_with_subject(
        subject: Name,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Self, CaError> {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(build_err)?;
        let mut serial = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut serial);
        let builder = CertificateBuilder::new(
            Profile::Root,
            serial_number(serial)?,
            Validity {
                not_before: x509_time(now)?,
                not_after: x509_time(now + validity)?,
            },
            subject,
            spki,
            &key,
        )
        .map_err(build_err)?;
        let cert = builder.build::<DerSignature>().map_err(build_err)?;
        Ok(StationCa {
            cert,
            signer: RingSigner::new(&key)?,
            key,
            origin: PathBuf::from("(generated)"),
        })
    }

    /// Write the certificate (mode 0644) and key (PKCS#8 PEM, mode 0600),
    /// each atomically.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
        self.write_owned(cert_path, key_path, true, None)
    }

    /// As [`StationCa::write`], but never over an existing file: when
    /// either path exists, nothing is written and the error names it.
    pub fn write_new(&self, cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
        self.write_owned(cert_path, key_path, false, None)
    }

    /// [`StationCa::write`] (`replace`) or [`StationCa::write_new`], both
    /// files given to `owner` before they get their names.
    pub fn write_owned(
        &self,
        cert_path: &Path,
        key_path: &Path,
        replace: bool,
        owner: Option<Owner>,
    ) -> Result<(), CaError> {
        if !replace {
            for path in [key_path, cert_path] {
                if path.symlink_metadata().is_ok() {
                    return Err(CaError::Exists {
                        path: path.to_owned(),
                    });
                }
            }
        }
        let key_pem = self.key.to_pkcs8_pem(LineEnding::LF).map_err(build_err)?;
        write_atomic(key_path, key_pem.as_bytes(), 0o600, replace, owner)?;
        let pem = self.certificate_pem();
        let written = write_atomic(cert_path, pem.as_bytes(), 0o644, replace, owner);
        if written.is_err() && !replace {
            // Appeared since the check above: leave no key without its certificate.
            let _ = std::fs::remove_file(key_path);
        }
        written
    }

    pub fn certificate_pem(&self) -> String {
        // Encoding a certificate we parsed or built cannot fail.
        self.cert.to_pem(LineEnding::LF).unwrap_or_default()
    }

    pub fn certificate_der(&self) -> Vec<u8> {
        self.cert.to_der().unwrap_or_default()
    }

    pub fn subject(&self) -> &Name {
        &self.cert.tbs_certificate.subject
    }

    /// Sign a device certificate with subject `CN=<common_name>` for the
    /// P-256 key in `public_key_spki_der` (SubjectPublicKeyInfo DER, e.g.
    /// from the modem's CSR).
    pub fn sign_device(
        &self,
        common_name_text: &str,
        public_key_spki_der: &[u8],
        issuance: Issuance,
    ) -> Result<DeviceCertificate, CaError> {
        self.sign_device_with_subject(
            common_name(common_name_text)?,
            public_key_spki_der,
            issuance,
        )
    }

    /// As [`StationCa::sign_device`] with any subject (e.g. the CSR's own).
    /// Extensions: basicConstraints cA=false, keyUsage digitalSignature,
    /// extKeyUsage clientAuth, subject and authority key identifiers. The
    /// certificate never outlives the CA certificate, and an expired CA
    /// signs nothing.
    pub fn sign_device_with_subject(
        &self,
        subject: Name,
        public_key_spki_der: &[u8],
        issuance: Issuance,
    ) -> Result<DeviceCertificate, CaError> {
        self.check_valid_at(issuance.now)?;
        let not_after = (issuance.now + issuance.validity).min(self.not_after());
        // Parsing as a P-256 key also checks the point is on the curve.
        let device_key = p256::PublicKey::from_public_key_der(public_key_spki_der)
            .map_err(|e| CaError::PublicKey(format!("not a P-256 SubjectPublicKeyInfo: {e}")))?;
        let spki_der = device_key.to_public_key_der().map_err(build_err)?;
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).map_err(build_err)?;

        // AKI must equal the CA's own SKI when it has one (it may have been
        // computed differently by another tool).
        let ca_key_id = match extension::<SubjectKeyIdentifier>(
            &self.cert,
            const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
        ) {
            Some(ski) => ski.0,
            None => {
                let ca_spki = SubjectPublicKeyInfoOwned::from_key(*self.key.verifying_key())
                    .map_err(build_err)?;
                SubjectKeyIdentifier::try_from(ca_spki.owned_to_ref())
                    .map_err(build_err)?
                    .0
            }
        };
        let device_key_id =
            SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(build_err)?;

        let mut builder = CertificateBuilder::new(
            Profile::Manual {
                issuer: Some(self.cert.tbs_certificate.subject.clone()),
            },
            serial_number(issuance.serial)?,
            Validity {
                not_before: x509_time(issuance.now)?,
                not_after: x509_time(not_after)?,
            },
            subject,
            spki,
            &self.signer,
        )
        .map_err(build_err)?;
        builder
            .add_extension(&BasicConstraints {
                ca: false,
                path_len_constraint: None,
            })
            .map_err(build_err)?;
        builder
            .add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))
            .map_err(build_err)?;
        builder
            .add_extension(&ExtendedKeyUsage(vec![
                const_oid::db::rfc5280::ID_KP_CLIENT_AUTH,
            ]))
            .map_err(build_err)?;
        builder.add_extension(&device_key_id).map_err(build_err)?;
        builder
            .add_extension(&AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(ca_key_id.as_bytes()).map_err(build_err)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            })
            .map_err(build_err)?;
        let cert = builder.build::<DerSignature>().map_err(build_err)?;
        Ok(DeviceCertificate {
            der: cert.to_der().map_err(build_err)?,
            pem: cert.to_pem(LineEnding::LF).map_err(build_err)?,
        })
    }
}
