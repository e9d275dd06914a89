//! TLS for the HTTP side (rustls, ring): the server configuration built from
//! `tls_server_config`, and a certificate that follows its files.
//!
//! As with the exporter-toolkit, a renewed certificate is picked up without
//! a restart: before each handshake the certificate and key files are
//! looked at (two stat calls), and read again when either changed (a
//! Kubernetes Secret volume swaps a symlink, cert-manager rewrites files).
//! A pair that does not load (a key not yet written, a mismatch) is logged
//! once and the previous one kept. The client CA and the rest of the file
//! are read at startup only.

use std::{
    fs::Metadata,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{Arc, Mutex},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    RootCertStore, ServerConfig,
};
use tracing::{info, warn};

use super::web_config::{
    ClientAuth, PemSource, TlsSettings, TlsVersion, WebConfig, WebConfigError,
};

/// The rustls configuration of `--web.config.file`'s `tls_server_config`,
/// with its certificate and key read and checked against each other.
pub fn server_config(
    config: &WebConfig,
    settings: &TlsSettings,
) -> Result<Arc<ServerConfig>, WebConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair = CertificatePair { cert: settings.cert.clone(), key: settings.key.clone() };
    let loaded = pair.load(&provider).map_err(|(field, problem)| config.error(field, problem))?;
    if settings.min_version < TlsVersion::Tls12 {
        warn!(
            "{}: tls_server_config.min_version is below TLS12; golens never negotiates below \
             TLS 1.2",
            config.path.display()
        );
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        match (settings.min_version, settings.max_version) {
            (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
            (_, TlsVersion::Tls13) => &[&rustls::version::TLS13, &rustls::version::TLS12],
            _ => &[&rustls::version::TLS12],
        };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|error| config.error("tls_server_config.min_version", error.to_string()))?;
    let builder = match &settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Require(ca) | ClientAuth::VerifyIfGiven(ca) => {
            let roots = client_roots(ca).map_err(|problem| config.error(ca.field(), problem))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let verifier = match settings.client_auth {
                ClientAuth::VerifyIfGiven(_) => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|error| config.error(ca.field(), format!("unusable: {error}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let resolver = FollowedCertificate { pair, provider, state: Mutex::new(loaded) };
    let mut server = builder.with_cert_resolver(Arc::new(resolver));
    server.ignore_client_order = settings.prefer_server_cipher_suites;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn client_roots(ca: &PemSource) -> Result<Arc<RootCertStore>, String> {
    let certs = read_certificates(ca)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|error| {
            format!("not a usable CA certificate ({error}); give the PEM of the CA that signs the client certificates")
        })?;
    }
    Ok(Arc::new(roots))
}

/// The bytes of a PEM source, or why they cannot be had.
fn read_pem(source: &PemSource) -> Result<Vec<u8>, String> {
    match source {
        PemSource::Inline { pem, .. } => Ok(pem.as_bytes().to_vec()),
        PemSource::File { path, .. } => std::fs::read(path).map_err(|error| {
            format!("cannot read {}: {error}; check the path (relative paths are from the web config file's folder) and that golens may read it", path.display())
        }),
    }
}

fn read_certificates(source: &PemSource) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(source)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs.map_err(|error| format!("{}: not valid PEM ({error})", describe(source)))?;
    if certs.is_empty() {
        return Err(format!(
            "{} has no PEM CERTIFICATE block; give a certificate in PEM (-----BEGIN CERTIFICATE-----)",
            describe(source)
        ));
    }
    Ok(certs)
}

fn describe(source: &PemSource) -> String {
    match source {
        PemSource::Inline { .. } => "the inline PEM".to_string(),
        PemSource::File { path, .. } => path.display().to_string(),
    }
}

/// The server's certificate chain and key, as configured.
#[derive(Debug, Clone)]
struct CertificatePair {
    cert: PemSource,
    key: PemSource,
}

/// What a file looked like when it was last read: a change of any of
/// these means read it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata: Metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
        })
    }
}

impl CertificatePair {
    fn stamps(&self) -> [Option<FileStamp>; 2] {
        [&self.cert, &self.key].map(|source| match source {
            PemSource::File { path, .. } => FileStamp::of(path),
            PemSource::Inline { .. } => None,
        })
    }

    /// Reads and checks the pair; on error, the key to blame and what is wrong.
    fn load(&self, provider: &CryptoProvider) -> Result<Loaded, (String, String)> {
        let stamps = self.stamps();
        let chain =
            read_certificates(&self.cert).map_err(|problem| (self.cert.field(), problem))?;
        let key_pem = read_pem(&self.key).map_err(|problem| (self.key.field(), problem))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
            (
                self.key.field(),
                format!(
                    "{}: no usable private key ({error}); give the certificate's key in PEM \
                     (PKCS#8, PKCS#1 or SEC1)",
                    describe(&self.key)
                ),
            )
        })?;
        let certified = CertifiedKey::from_der(chain, key, provider).map_err(|error| {
            (
                self.key.field(),
                format!(
                    "{} does not go with the certificate {} ({error}); give the key the \
                     certificate was issued for",
                    describe(&self.key),
                    describe(&self.cert)
                ),
            )
        })?;
        Ok(Loaded { stamps, certified: Arc::new(certified) })
    }
}

#[derive(Debug)]
struct Loaded {
    /// The files as they were when this pair was read (or last tried).
    stamps: [Option<FileStamp>; 2],
    certified: Arc<CertifiedKey>,
}

/// The certificate rustls presents, read again when its files change.
#[derive(Debug)]
struct FollowedCertificate {
    pair: CertificatePair,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

impl ResolvesServerCert for FollowedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl FollowedCertificate {
    /// The pair to present now, read again first if its files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let stamps = self.pair.stamps();
        if stamps != state.stamps {
            match self.pair.load(&self.provider) {
                Ok(loaded) => {
                    info!("TLS certificate files changed: serving the new certificate");
                    *state = loaded;
                }
                Err((field, problem)) => {
                    // Not again until the files change once more.
                    state.stamps = stamps;
                    warn!("TLS certificate files changed but do not load ({field}: {problem}); still serving the previous certificate");
                }
            }
        }
        state.certified.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Files {
            let dir =
                std::env::temp_dir().join(format!("golens-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }
        /// Writes a new file over `name` (a new inode, as a Secret volume's
        /// symlink swap gives: the change shows even within one clock tick).
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            let staged = self.dir.join(format!(".{name}.new"));
            std::fs::write(&staged, text).unwrap();
            std::fs::rename(&staged, &path).unwrap();
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (cert.cert.pem(), cert.key_pair.serialize_pem())
    }

    fn config(files: &Files, extra: &str) -> WebConfig {
        let text =
            format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}");
        WebConfig::parse(&files.dir.join("web.yml"), &text).unwrap()
    }

    fn build(config: &WebConfig) -> Result<Arc<ServerConfig>, WebConfigError> {
        server_config(config, config.tls.as_ref().unwrap())
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server() {
        let files = Files::new("ok");
        let (cert, key) = self_signed();
        files.write("server.crt", &cert);
        files.write("server.key", &key);
        let server = build(&config(&files, "")).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(server.ignore_client_order);
    }

    #[test]
    fn a_missing_file_names_the_key_and_the_path() {
        let files = Files::new("missing");
        let (cert, _) = self_signed();
        files.write("server.crt", &cert);
        let message = build(&config(&files, "")).unwrap_err().to_string();
        assert!(message.contains("tls_server_config.key_file: cannot read"), "{message}");
        assert!(message.contains(&files.dir.join("server.key").display().to_string()), "{message}");
        assert!(message.contains("No such file"), "{message}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let files = Files::new("mismatch");
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        files.write("server.crt", &cert);
        files.write("server.key", &other_key);
        let message = build(&config(&files, "")).unwrap_err().to_string();
        assert!(message.contains("tls_server_config.key_file"), "{message}");
        assert!(message.contains("does not go with the certificate"), "{message}");
    }

    #[test]
    fn not_pem_is_refused() {
        let files = Files::new("notpem");
        let (_, key) = self_signed();
        files.write("server.crt", "hello\n");
        files.write("server.key", &key);
        let message = build(&config(&files, "")).unwrap_err().to_string();
        assert!(message.contains("tls_server_config.cert_file"), "{message}");
        assert!(message.contains("no PEM CERTIFICATE block"), "{message}");
        files.write("server.crt", &self_signed().0);
        files.write("server.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let message = build(&config(&files, "")).unwrap_err().to_string();
        assert!(message.contains("tls_server_config.key_file"), "{message}");
    }

    #[test]
    fn a_client_ca_that_is_not_a_certificate_is_refused() {
        let files = Files::new("clientca");
        let (cert, key) = self_signed();
        files.write("server.crt", &cert);
        files.write("server.key", &key);
        files.write("ca.crt", "");
        let extra = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n";
        let message = build(&config(&files, extra)).unwrap_err().to_string();
        assert!(message.contains("tls_server_config.client_ca_file"), "{message}");
        files.write("ca.crt", &self_signed().0);
        build(&config(&files, extra)).unwrap();
    }

    #[test]
    fn the_certificate_follows_its_files() {
        let files = Files::new("follow");
        let (cert, key) = self_signed();
        files.write("server.crt", &cert);
        files.write("server.key", &key);
        let pair = CertificatePair {
            cert: PemSource::File { field: "cert_file", path: files.dir.join("server.crt") },
            key: PemSource::File { field: "key_file", path: files.dir.join("server.key") },
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = pair.load(&provider).unwrap();
        let first = loaded.certified.cert[0].clone();
        let resolver = FollowedCertificate { pair, provider, state: Mutex::new(loaded) };
        let current = |resolver: &FollowedCertificate| resolver.current().cert[0].clone();
        assert_eq!(current(&resolver), first);
        // Half a rotation (a new certificate, the old key): the old pair stays.
        let (new_cert, new_key) = self_signed();
        files.write("server.crt", &new_cert);
        assert_eq!(current(&resolver), first);
        files.write("server.key", &new_key);
        let rotated = current(&resolver);
        assert_ne!(rotated, first);
        assert_eq!(
            rotated.as_ref(),
            CertificateDer::from_pem_slice(new_cert.as_bytes()).unwrap().as_ref()
        );
    }
}
