//! The libp2p TLS handshake (`/tls/1.0.0`, the libp2p TLS spec) with
//! AES-GCM preferred over ChaCha20-Poly1305.
//!
//! Why not `libp2p::tls::Config`: it lists ChaCha20-Poly1305 first and keeps
//! its rustls configuration private, so every connection used ChaCha20 even
//! on CPUs with AES instructions, where AES-GCM costs a fraction of it per
//! byte (BENCHMARKS.md, "Peers over libp2p"). Fragment bytes cross this
//! cipher twice (the peer seals, the gateway opens), so it is on the GET
//! path's critical cost.
//!
//! What stays libp2p-tls's: the certificate (a fresh self-signed one
//! carrying the signed libp2p extension, `certificate::generate`) and its
//! parsing and signature checks (`certificate::parse`,
//! `P2pCertificate::verify_signature`). What is ours: the suite order, the
//! verifier that calls them, and the upgrade. The wire is the spec's: TLS 1.3
//! only, ALPN `libp2p`, no SNI, exactly one self-signed certificate each way
//! whose extension names the PeerId. Nodes built with libp2p-tls (ours before
//! this module, or any other implementation) negotiate with it unchanged:
//! the suites offered are the same three, in another order.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use futures_rustls::TlsStream;
use libp2p::PeerId;
use libp2p::core::UpgradeInfo;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::identity::Keypair;
use libp2p::tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, SignatureScheme,
    SupportedCipherSuite,
};

/// TLS 1.3 suites, fastest first where the CPU has AES instructions (the
/// client's order decides: the server follows it).
static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    TLS13_AES_128_GCM_SHA256,
    TLS13_AES_256_GCM_SHA384,
    TLS13_CHACHA20_POLY1305_SHA256,
];

const ALPN: &[u8] = b"libp2p";

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("TLS certificate not made: {0}")]
    Certificate(String),
    #[error("TLS handshake as server failed: {0}")]
    Server(std::io::Error),
    #[error("TLS handshake as client failed: {0}")]
    Client(std::io::Error),
    #[error("the remote's TLS certificate is not a libp2p one: {0}")]
    BadCertificate(String),
}

/// The security upgrade: `SwarmBuilder::with_tcp(.., (tls::Config::new,
/// noise::Config::new), ..)`.
#[derive(Clone, Debug)]
pub struct Config {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl Config {
    /// Makes this node's certificate (signed by its identity key) and both
    /// sides' configurations.
    pub fn new(identity: &Keypair) -> Result<Self, UpgradeError> {
        let cert = |e: &dyn std::fmt::Display| UpgradeError::Certificate(e.to_string());
        let (certificate, key) = certificate::generate(identity).map_err(|e| cert(&e))?;
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites = CIPHER_SUITES.to_vec();
        let provider = Arc::new(provider);
        let verifier = Arc::new(Libp2pVerifier);
        // Not `with_single_cert`: webpki would refuse the certificate for
        // its critical libp2p extension.
        let own = Arc::new(OwnCertificate(Arc::new(rustls::sign::CertifiedKey::new(
            vec![certificate],
            rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&key).map_err(|e| cert(&e))?,
        ))));
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| cert(&e))?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(own.clone());
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| cert(&e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(own);
        client.alpn_protocols = vec![ALPN.to_vec()];
        // The spec: a client sends no server name.
        client.enable_sni = false;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The suite this configuration prefers (tests).
    pub fn preferred_suite(&self) -> rustls::CipherSuite {
        self.client.crypto_provider().cipher_suites[0].suite()
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/tls/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            let stream = futures_rustls::TlsAcceptor::from(self.server)
                .accept(socket)
                .await
                .map_err(UpgradeError::Server)?;
            let peer = remote_peer(stream.get_ref().1)?;
            Ok((peer, stream.into()))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            // Not sent (SNI is off); rustls wants a name all the same.
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
            let stream = futures_rustls::TlsConnector::from(self.client)
                .connect(name, socket)
                .await
                .map_err(UpgradeError::Client)?;
            let peer = remote_peer(stream.get_ref().1)?;
            Ok((peer, stream.into()))
        }
        .boxed()
    }
}

/// This node's certificate, whatever the other side asks for.
#[derive(Debug)]
struct OwnCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OwnCertificate {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The PeerId the remote's one certificate names (the verifier already
/// checked it during the handshake).
fn remote_peer(state: &CommonState) -> Result<PeerId, UpgradeError> {
    let Some([cert]) = state.peer_certificates() else {
        return Err(UpgradeError::BadCertificate(
            "not exactly one certificate".into(),
        ));
    };
    certificate::parse(cert)
        .map(|c| c.peer_id())
        .map_err(|e| UpgradeError::BadCertificate(e.to_string()))
}

/// The spec's checks: exactly one certificate, self-signed, carrying a
/// valid libp2p extension; handshake signatures by its key. Which PeerIds
/// may connect is the allowlist's business, after the handshake (the
/// swarm's dial also checks the PeerId it dialled).
#[derive(Debug)]
struct Libp2pVerifier;

impl Libp2pVerifier {
    fn presented(
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "libp2p TLS takes exactly one certificate".into(),
            ));
        }
        certificate::parse(end_entity)
            .map(|_| ())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
    }

    fn signature(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        certificate::parse(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn schemes() -> Vec<SignatureScheme> {
        // libp2p-tls's list: what its certificates may be signed with.
        vec![
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}

/// The methods both rustls verifier traits ask for, the same on both
/// sides: TLS 1.3 handshake signatures checked with the certificate's key.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            // Only TLS 1.3 is configured: refused rather than trusted.
            Err(rustls::Error::General("libp2p TLS is TLS 1.3 only".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Self::signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            Self::schemes()
        }
    };
}

impl ServerCertVerifier for Libp2pVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::presented(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

impl ClientCertVerifier for Libp2pVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::presented(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use libp2p::tcp::tokio::TcpStream;

    /// A loopback TCP pair, wrapped for futures' I/O traits.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (TcpStream(dialed.unwrap()), TcpStream(accepted.unwrap().0))
    }

    fn suite<C>(stream: &TlsStream<C>) -> Option<rustls::CipherSuite> {
        let state: &CommonState = match stream {
            TlsStream::Client(s) => s.get_ref().1,
            TlsStream::Server(s) => s.get_ref().1,
        };
        state.negotiated_cipher_suite().map(|s| s.suite())
    }

    #[tokio::test]
    async fn both_sides_learn_each_others_peer_id_over_aes_gcm() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (dialed, accepted) = pair().await;
        let (client, server) = tokio::join!(
            Config::new(&a)
                .unwrap()
                .upgrade_outbound(dialed, "/tls/1.0.0"),
            Config::new(&b)
                .unwrap()
                .upgrade_inbound(accepted, "/tls/1.0.0"),
        );
        let ((seen_by_a, at_a), (seen_by_b, at_b)) = (client.unwrap(), server.unwrap());
        assert_eq!(seen_by_a, b.public().to_peer_id());
        assert_eq!(seen_by_b, a.public().to_peer_id());
        let aes = Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!((suite(&at_a), suite(&at_b)), (aes, aes));
    }

    /// A node still on libp2p-tls (ChaCha20 first) and one on this module
    /// agree, either way round, on a suite both offer.
    #[tokio::test]
    async fn nodes_on_libp2p_tls_still_connect_either_way() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (dialed, accepted) = pair().await;
        let (client, server) = tokio::join!(
            Config::new(&a)
                .unwrap()
                .upgrade_outbound(dialed, "/tls/1.0.0"),
            libp2p::tls::Config::new(&b)
                .unwrap()
                .upgrade_inbound(accepted, "/tls/1.0.0"),
        );
        assert_eq!(client.unwrap().0, b.public().to_peer_id());
        assert_eq!(server.unwrap().0, a.public().to_peer_id());

        let (dialed, accepted) = pair().await;
        let (client, server) = tokio::join!(
            libp2p::tls::Config::new(&b)
                .unwrap()
                .upgrade_outbound(dialed, "/tls/1.0.0"),
            Config::new(&a)
                .unwrap()
                .upgrade_inbound(accepted, "/tls/1.0.0"),
        );
        let (seen_by_b, at_b) = client.unwrap();
        assert_eq!(seen_by_b, a.public().to_peer_id());
        assert_eq!(server.unwrap().0, b.public().to_peer_id());
        // The client's order decides: libp2p-tls's first suite.
        assert_eq!(
            suite(&at_b),
            Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
        );
    }

    /// A certificate without the libp2p extension (any plain TLS client)
    /// fails the handshake.
    #[tokio::test]
    async fn a_certificate_without_the_libp2p_extension_is_refused() {
        let plain = plain_certificate();
        let (dialed, accepted) = pair().await;
        let client = async move {
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            provider.cipher_suites = CIPHER_SUITES.to_vec();
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Libp2pVerifier))
                .with_client_auth_cert(vec![plain.0], plain.1)
                .unwrap();
            config.alpn_protocols = vec![ALPN.to_vec()];
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
            futures_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, dialed)
                .await
        };
        let server = Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_inbound(accepted, "/tls/1.0.0");
        let (client, server) = tokio::join!(client, server);
        // Refused in the handshake itself, not after it.
        assert!(
            matches!(server, Err(UpgradeError::Server(_))),
            "a plain certificate was accepted: {server:?}"
        );
        drop(client);
    }

    /// A self-signed certificate such as any TLS client may present, with
    /// no libp2p extension.
    fn plain_certificate() -> (
        CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let made = rcgen::generate_simple_self_signed(vec!["peer.test".to_string()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
        (made.cert.der().clone(), key.into())
    }
}
