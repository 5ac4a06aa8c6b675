//! TLS client configuration (rustls 0.23, ring provider): trust roots, ALPN, and the
//! `insecureSkipVerify` verifier. The record layer is driven by hand in `conn.rs`.
//!
//! Invariant: verification is on unless the config says `insecureSkipVerify: true`, and even then
//! handshake signatures are checked — only the certificate chain and name are not.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// Builds the client config. Roots: the system store (honours `SSL_CERT_FILE` / `SSL_CERT_DIR`),
/// webpki-roots as a fallback when the system has none, plus `ca_file` when given.
pub fn client_config(insecure_skip_verify: bool, ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup: {e}")))?;
    let mut config = if insecure_skip_verify {
        let verifier = SkipChainVerifier { algorithms: provider.signature_verification_algorithms };
        builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
    } else {
        builder.with_root_certificates(roots(ca_file)?).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (n_added, _) = store.add_parsable_certificates(native.certs);
    if n_added == 0 {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| Error::client(format!("caFile {}: {e}", path.display())))?;
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::client(format!("caFile {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::client(format!("caFile {} holds no PEM certificate", path.display())));
        }
        let (ok, bad) = store.add_parsable_certificates(certs);
        if ok == 0 {
            return Err(Error::client(format!("caFile {}: {bad} certificates, none usable", path.display())));
        }
    }
    Ok(store)
}

pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|e| Error::client(format!("invalid TLS server name `{host}`: {e}")))
}

/// Accepts any certificate chain and name, but still checks that the server owns the key it
/// presented (handshake signature), so a passive attacker cannot splice in without the key.
#[derive(Debug)]
struct SkipChainVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SkipChainVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
