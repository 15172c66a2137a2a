//! TLS as libpq's `sslmode` has it: `prefer` and `require` encrypt without checking the
//! server's certificate (unless `sslrootcert` names a CA, which makes `require` check the
//! chain, as libpq does), `verify-ca` checks the chain, `verify-full` the chain and the
//! host name. Without `sslrootcert`, the CAs are the system's.

use std::sync::Arc;

use latchkey_model::{Error, ErrorKind, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Config, TlsMode};

/// What the connector checks of the server's certificate.
#[derive(Debug)]
enum Check {
    /// Nothing: the connection is encrypted, the server not authenticated.
    Nothing,
    /// That a trusted CA signed it.
    Chain(Arc<RootCertStore>),
    /// That a trusted CA signed it for the host connected to.
    ChainAndName(Arc<rustls::client::WebPkiServerVerifier>),
}

#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

/// The connector for `config` (whose `sslmode` tokio-postgres applies: disable, prefer,
/// require).
pub(crate) fn connector(config: &Config) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check = match (config.tls, &config.root_cert) {
        (TlsMode::Disable | TlsMode::Prefer, _) | (TlsMode::Require, None) => Check::Nothing,
        (TlsMode::Require | TlsMode::VerifyCa, root) => Check::Chain(Arc::new(roots(root.as_deref())?)),
        (TlsMode::VerifyFull, root) => {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(root.as_deref())?),
                provider.clone(),
            )
            .build()
            .map_err(|e| Error::new(ErrorKind::InvalidScope, format!("TLS: {e}")))?;
            Check::ChainAndName(verifier)
        }
    };
    let verifier = Arc::new(Verifier { check, provider: provider.clone() });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Unsupported, format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(tls))
}

/// The CAs of the PEM file `file`, or the system's.
fn roots(file: Option<&str>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let bad = |why: String| Error::new(ErrorKind::InvalidScope, why);
    match file {
        Some(file) => {
            let pem = std::fs::read(file).map_err(|e| bad(format!("cannot read sslrootcert {file:?}: {e}")))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| bad(format!("sslrootcert {file:?} is not PEM: {e}")))?;
                roots.add(cert).map_err(|e| bad(format!("sslrootcert {file:?} holds a bad certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(format!("sslrootcert {file:?} holds no certificate")));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
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
            Check::Chain(roots) => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )?;
                Ok(ServerCertVerified::assertion())
            }
            Check::ChainAndName(verifier) => {
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
