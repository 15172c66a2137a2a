//! TLS as libpq's `sslmode` has it: `prefer` encrypts without checking the server's
//! certificate; `require` too, unless a root file is there (`sslrootcert`, by default
//! `~/.postgresql/root.crt`), which makes it check the chain; `verify-ca` checks the chain
//! and `verify-full` the chain and the host name, against the root file, which must be
//! there, or against the system's CAs with `sslrootcert=system` (`verify-full` only, as
//! libpq 16). A server certificate that is itself in the root file is trusted as it is (a
//! self-signed server). Certificates must be X.509 v3, and `verify-full` finds the host in
//! the subject alternative names (rustls), not in the common name.

use std::sync::Arc;

use latchkey_model::{Error, ErrorKind, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Config, TlsMode};

/// What the connector checks of the server's certificate.
#[derive(Debug)]
enum Check {
    /// Nothing: the connection is encrypted, the server not authenticated.
    Nothing,
    /// That a trusted CA signed it (or that it is one of them).
    Chain(Roots),
    /// That a trusted CA signed it for the host connected to (or that it is one of them,
    /// for that host).
    ChainAndName(Roots, Arc<rustls::client::WebPkiServerVerifier>),
}

/// The trusted certificates, as a store and as they were read (to trust a server
/// certificate that is one of them).
#[derive(Debug)]
struct Roots {
    store: Arc<RootCertStore>,
    pinned: Vec<CertificateDer<'static>>,
}

#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

/// The root file libpq reads when `sslrootcert` is not given.
fn default_root_file(config: &Config) -> Option<String> {
    let home = config.home.as_deref()?;
    let file = std::path::Path::new(home).join(".postgresql/root.crt");
    file.is_file().then(|| file.display().to_string())
}

/// The connector for `config` (whose `sslmode` tokio-postgres applies: disable, prefer,
/// require).
pub(crate) fn connector(config: &Config) -> Result<Connector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let invalid = |why: String| Error::new(ErrorKind::InvalidScope, why);
    let root = config.root_cert.clone().or_else(|| default_root_file(config));
    let system = root.as_deref() == Some("system");
    if system && config.tls != TlsMode::VerifyFull {
        return Err(invalid("sslrootcert=system needs sslmode=verify-full (as libpq)".into()));
    }
    let needed = |root: Option<String>| {
        root.ok_or_else(|| {
            invalid(
                "sslmode verify-ca and verify-full need a root file: sslrootcert=FILE, ~/.postgresql/root.crt, \
                 or sslrootcert=system for the system's CAs (with verify-full)"
                    .into(),
            )
        })
    };
    let check = match (config.tls, root) {
        (TlsMode::Disable | TlsMode::Prefer, _) | (TlsMode::Require, None) => Check::Nothing,
        (TlsMode::Require | TlsMode::VerifyCa, root) => Check::Chain(roots(&needed(root)?)?),
        (TlsMode::VerifyFull, root) => {
            let roots = roots(&needed(root)?)?;
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots.store.clone(), provider.clone())
                    .build()
                    .map_err(|e| invalid(format!("TLS: {e}")))?;
            Check::ChainAndName(roots, verifier)
        }
    };
    let verifier = Arc::new(Verifier { check, provider: provider.clone() });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Unsupported, format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Connector(MakeRustlsConnect::new(tls)))
}

/// The certificates of the PEM file `file`, or the system's CAs for `system`.
fn roots(file: &str) -> Result<Roots> {
    let mut store = RootCertStore::empty();
    let mut pinned = Vec::new();
    let bad = |why: String| Error::new(ErrorKind::InvalidScope, why);
    if file == "system" {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = store.add(cert);
        }
        return Ok(Roots { store: Arc::new(store), pinned });
    }
    let pem = std::fs::read(file).map_err(|e| bad(format!("cannot read sslrootcert {file:?}: {e}")))?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| bad(format!("sslrootcert {file:?} is not PEM: {e}")))?;
        // A certificate webpki will not take as a CA (a v1 one, say) can still be pinned.
        let _ = store.add(cert.clone());
        pinned.push(cert);
    }
    if pinned.is_empty() {
        return Err(bad(format!("sslrootcert {file:?} holds no certificate")));
    }
    Ok(Roots { store: Arc::new(store), pinned })
}

impl Roots {
    /// Whether the server's certificate is one of the trusted ones, byte for byte.
    fn pins(&self, end_entity: &CertificateDer<'_>) -> bool {
        self.pinned.iter().any(|cert| cert.as_ref() == end_entity.as_ref())
    }
}

/// The rustls connector, with a name for Unix sockets: tokio-postgres asks for a TLS
/// connector for the empty host name of a socket (where TLS is never negotiated), which
/// rustls refuses as a name.
#[derive(Clone)]
pub(crate) struct Connector(MakeRustlsConnect);

impl<S> MakeTlsConnect<S> for Connector
where
    MakeRustlsConnect: MakeTlsConnect<S>,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> std::result::Result<Self::TlsConnect, Self::Error> {
        let domain = if domain.is_empty() { "localhost" } else { domain };
        MakeTlsConnect::<S>::make_tls_connect(&mut self.0, domain)
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            Check::Nothing => Ok(ServerCertVerified::assertion()),
            Check::Chain(roots) if roots.pins(end_entity) => Ok(ServerCertVerified::assertion()),
            Check::Chain(roots) => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &roots.store,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )?;
                Ok(ServerCertVerified::assertion())
            }
            Check::ChainAndName(roots, _) if roots.pins(end_entity) => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Check::ChainAndName(_, verifier) => {
                verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
