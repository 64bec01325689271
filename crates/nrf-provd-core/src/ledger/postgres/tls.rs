//! TLS to the line's PostgreSQL: rustls with ring, as the nRF Cloud client
//! (no OpenSSL), doing what libpq's `sslmode` says ([`LedgerTls`]):
//!
//! - `verify-full`: the certificate chains to a CA in `sslrootcert` and
//!   names the host of the URL (rustls's own WebPKI verifier);
//! - `verify-ca`, and `require`/`prefer` with a `sslrootcert`: the chain
//!   only, as libpq;
//! - `require`/`prefer` without one: encrypted, the server not
//!   authenticated (its handshake signature is still checked), as libpq.
//!
//! The CA file decides which server is trusted, so it is opened as the
//! trust file is ([`secure_file`]).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{LedgerTls, SslMode};
use secure_file::{self, Holds};

/// The connector `tls` asks for.
pub(super) fn connector(tls: &LedgerTls) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &tls.root_cert {
        Some(path) if tls.mode != SslMode::Disable => Some(Arc::new(load_roots(path)?)),
        _ => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (tls.mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?
        }
        (_, roots) => Arc::new(ChainOnly {
            roots,
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17's direct TLS (`sslnegotiation=direct`) requires it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

/// The CA certificates of `path` (PEM), refused when others could change
/// the file or when it holds none.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let mut file = secure_file::open(path, "ledger CA file (sslrootcert)", Holds::Trust).map_err(
        |refusal| match refusal {
            secure_file::Refusal::Io(e) => format!("{shown}: cannot read the ledger CA file: {e}"),
            secure_file::Refusal::Unsafe(problem) => problem.to_string(),
        },
    )?;
    let mut pem = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut pem)
        .map_err(|e| format!("{shown}: cannot read the ledger CA file: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{shown}: not a PEM certificate file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{shown}: not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{shown}: no certificate in the ledger CA file (sslrootcert wants the PEM of the CA that signed the server's certificate)"
        ));
    }
    Ok(roots)
}

/// `verify-ca` (the chain to `roots`, not the name) or, without roots,
/// nothing about the certificate: libpq's `require` without a CA file.
/// Either way the server must prove it holds the certificate's key.
#[derive(Debug)]
struct ChainOnly {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS failure of `error` in words: which check the server's certificate
/// failed. `None` when the error is not about TLS.
pub(super) fn failure(error: &tokio_postgres::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = cause {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map_or(err, |inner| inner as &(dyn std::error::Error + 'static));
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            use rustls::CertificateError as Cert;
            let hint = match tls {
                rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => {
                    "the server's certificate is not signed by a CA in sslrootcert"
                }
                rustls::Error::InvalidCertificate(
                    Cert::NotValidForName | Cert::NotValidForNameContext { .. },
                ) => "the server's certificate does not name the host of the URL (verify-full)",
                rustls::Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
                    "the server's certificate has expired"
                }
                _ => "the TLS handshake failed",
            };
            return Some(format!("TLS: {hint} ({tls})"));
        }
        if err.to_string() == "server does not support TLS" {
            return Some(
                "TLS: the server does not offer TLS, which sslmode asks for (`ssl = on` in its postgresql.conf)".into(),
            );
        }
        cause = err.source();
    }
    None
}
