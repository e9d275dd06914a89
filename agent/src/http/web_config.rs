//! `--web.config.file`: the web configuration file of the Prometheus
//! exporter-toolkit (YAML), so golens is secured the way node_exporter and
//! Prometheus itself are: `tls_server_config` (a certificate, optionally
//! client certificates), `basic_auth_users` (bcrypt hashes) and
//! `http_server_config.headers`.
//!
//! The file is checked whole at startup. A key golens does not know, or one
//! of the toolkit's that golens does not implement, is an error naming it:
//! never a setting silently ignored, since an ignored security setting is
//! a hole nobody sees. Relative paths are from the file's folder, as in the
//! toolkit.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    str::FromStr,
};

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

/// What `--web.config.file` configures, checked (files are read later, by
/// `tls::ServerTls::load`, which reports with the same error type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The file, for error messages.
    pub path: PathBuf,
    /// TLS on the listener; None: plain HTTP.
    pub tls: Option<TlsSettings>,
    /// Username -> bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Headers added to every response (http_server_config.headers).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `tls_server_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PemSource,
    pub key: PemSource,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// The server's cipher suite order rather than the client's (the toolkit's default).
    pub prefer_server_cipher_suites: bool,
}

/// PEM text given inline (`cert`, `key`, `client_ca`) or by file (`cert_file`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    Inline { field: &'static str, pem: String },
    File { field: &'static str, path: PathBuf },
}

impl PemSource {
    /// The config key it came from, e.g. `tls_server_config.cert_file`.
    pub fn field(&self) -> String {
        let (PemSource::Inline { field, .. } | PemSource::File { field, .. }) = self;
        format!("tls_server_config.{field}")
    }
}

/// `client_auth_type` (with `client_ca_file` or `client_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// NoClientCert (the default).
    None,
    /// VerifyClientCertIfGiven: a client certificate is optional, but one
    /// that is sent must chain to the client CA.
    VerifyIfGiven(PemSource),
    /// RequireAndVerifyClientCert: mutual TLS.
    Require(PemSource),
}

/// `min_version` / `max_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn parse(text: &str) -> Option<TlsVersion> {
        match text {
            "TLS10" => Some(TlsVersion::Tls10),
            "TLS11" => Some(TlsVersion::Tls11),
            "TLS12" => Some(TlsVersion::Tls12),
            "TLS13" => Some(TlsVersion::Tls13),
            _ => None,
        }
    }
}

/// What is wrong with the web configuration: the file, the key, and what
/// to do about it.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read the web config file {} (--web.config.file): {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error(
        "web config file {}: {detail}; fix what is named there (golens reads the Prometheus \
         exporter-toolkit web configuration: see \"Securing the endpoint\" in the README)",
        path.display()
    )]
    Syntax { path: PathBuf, detail: String },
    #[error("web config file {}: {field}: {problem}", path.display())]
    Field { path: PathBuf, field: String, problem: String },
}

/// The file as written. Every key of the toolkit is known here, so that
/// the ones golens does not implement are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, Option<String>>>,
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// golens serves HTTP/1.1 only; the key is accepted, either value.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The response headers the toolkit lets a file set, with their allowed
/// values where the header is an enumeration (empty: any value).
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| WebConfigError::Read { path: path.to_path_buf(), error })?;
        WebConfig::parse(path, &text)
    }

    /// Checks `text`, the content of the file at `path` (relative paths in
    /// it are from `path`'s folder).
    pub fn parse(path: &Path, text: &str) -> Result<WebConfig, WebConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_norway::from_str::<Option<RawConfig>>(text)
                .map_err(|error| WebConfigError::Syntax {
                    path: path.to_path_buf(),
                    detail: error.to_string(),
                })?
                .unwrap_or_default()
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let checker = Checker { path };
        if raw.rate_limit.is_some() {
            return Err(checker.field(
                "rate_limit",
                "not supported by golens: remove it; --web.max-requests caps the requests \
                 served at once (more get 503)",
            ));
        }
        let tls = match raw.tls_server_config {
            Some(tls) => Some(checker.tls(tls, base)?),
            None => None,
        };
        let users = checker.users(raw.basic_auth_users.unwrap_or_default())?;
        let headers = match raw.http_server_config.and_then(|http| http.headers) {
            Some(headers) => checker.headers(headers)?,
            None => Vec::new(),
        };
        Ok(WebConfig { path: path.to_path_buf(), tls, users, headers })
    }

    /// The error for `field` of this file (used by the loaders of what it names).
    pub fn error(&self, field: impl Into<String>, problem: impl Into<String>) -> WebConfigError {
        Checker { path: &self.path }.field(field, problem)
    }
}

struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn field(&self, field: impl Into<String>, problem: impl Into<String>) -> WebConfigError {
        WebConfigError::Field {
            path: self.path.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn tls(&self, raw: RawTls, base: &Path) -> Result<TlsSettings, WebConfigError> {
        let unsupported = [
            (
                raw.cipher_suites.is_some(),
                "cipher_suites",
                "not supported by golens: remove it (golens offers rustls' suites: TLS 1.3's, \
                 and for TLS 1.2 only ECDHE with AES-GCM or ChaCha20-Poly1305)",
            ),
            (
                raw.curve_preferences.is_some(),
                "curve_preferences",
                "not supported by golens: remove it (golens offers X25519, P-256 and P-384)",
            ),
            (
                raw.client_allowed_sans.is_some(),
                "client_allowed_sans",
                "not supported by golens: remove it, and trust only the client certificates' \
                 CA in client_ca_file",
            ),
        ];
        if let Some((_, key, problem)) = unsupported.iter().find(|(given, _, _)| *given) {
            return Err(self.field(format!("tls_server_config.{key}"), *problem));
        }
        let cert = self.pem_source(raw.cert, "cert", raw.cert_file, "cert_file", base)?;
        let key = self.pem_source(raw.key, "key", raw.key_file, "key_file", base)?;
        let client_ca = self.pem_source(
            raw.client_ca,
            "client_ca",
            raw.client_ca_file,
            "client_ca_file",
            base,
        )?;
        let (cert, key) = match (cert, key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, _) => {
                return Err(self.field(
                    "tls_server_config.cert_file",
                    "missing: give the server's certificate (PEM) as cert_file, or inline as \
                     cert; or remove tls_server_config to serve plain HTTP",
                ))
            }
            (_, None) => {
                return Err(self.field(
                    "tls_server_config.key_file",
                    "missing: give the certificate's private key (PEM) as key_file, or inline \
                     as key",
                ))
            }
        };
        let client_auth = self.client_auth(raw.client_auth_type.as_deref(), client_ca)?;
        let version = |value: Option<String>, key: &str, default: TlsVersion| match value {
            None => Ok(default),
            Some(text) => TlsVersion::parse(&text).ok_or_else(|| {
                self.field(
                    format!("tls_server_config.{key}"),
                    format!("`{text}` is not a TLS version: use TLS12 or TLS13"),
                )
            }),
        };
        let min_version = version(raw.min_version, "min_version", TlsVersion::Tls12)?;
        let max_version = version(raw.max_version, "max_version", TlsVersion::Tls13)?;
        if max_version < TlsVersion::Tls12 {
            return Err(self.field(
                "tls_server_config.max_version",
                "golens speaks TLS 1.2 and 1.3 only: use TLS12 or TLS13",
            ));
        }
        if min_version > max_version {
            return Err(self.field(
                "tls_server_config.min_version",
                "is above max_version: no TLS version is left; lower min_version or raise \
                 max_version",
            ));
        }
        Ok(TlsSettings {
            cert,
            key,
            client_auth,
            min_version,
            max_version,
            prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
        })
    }

    /// One of an inline PEM key and its `_file` twin.
    fn pem_source(
        &self,
        inline: Option<String>,
        inline_key: &'static str,
        file: Option<String>,
        file_key: &'static str,
        base: &Path,
    ) -> Result<Option<PemSource>, WebConfigError> {
        let inline = inline.filter(|pem| !pem.trim().is_empty());
        let file = file.filter(|path| !path.trim().is_empty());
        match (inline, file) {
            (Some(_), Some(_)) => Err(self.field(
                format!("tls_server_config.{file_key}"),
                format!("{inline_key} is given too: keep only one of {inline_key} (inline PEM) and {file_key}"),
            )),
            (Some(pem), None) => Ok(Some(PemSource::Inline { field: inline_key, pem })),
            (None, Some(path)) => {
                Ok(Some(PemSource::File { field: file_key, path: base.join(path) }))
            }
            (None, None) => Ok(None),
        }
    }

    fn client_auth(
        &self,
        kind: Option<&str>,
        client_ca: Option<PemSource>,
    ) -> Result<ClientAuth, WebConfigError> {
        let field = "tls_server_config.client_auth_type";
        let needs_ca = |kind: &str| {
            self.field(
                "tls_server_config.client_ca_file",
                format!(
                    "missing: {kind} verifies client certificates against a CA; give its \
                     certificate (PEM) as client_ca_file, or inline as client_ca"
                ),
            )
        };
        match kind.unwrap_or("") {
            "" | "NoClientCert" => match client_ca {
                None => Ok(ClientAuth::None),
                Some(ca) => Err(self.field(
                    ca.field(),
                    "a client CA is given but client_auth_type does not ask for client \
                     certificates: set client_auth_type: RequireAndVerifyClientCert, or remove \
                     the CA",
                )),
            },
            "RequireAndVerifyClientCert" => client_ca
                .map(ClientAuth::Require)
                .ok_or_else(|| needs_ca("RequireAndVerifyClientCert")),
            "VerifyClientCertIfGiven" => client_ca
                .map(ClientAuth::VerifyIfGiven)
                .ok_or_else(|| needs_ca("VerifyClientCertIfGiven")),
            unverified @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert") => {
                Err(self.field(
                    field,
                    format!(
                        "{unverified} accepts client certificates without verifying them, which \
                         authenticates nobody; golens does not support it: use \
                         RequireAndVerifyClientCert with client_ca_file"
                    ),
                ))
            }
            other => Err(self.field(
                field,
                format!(
                    "`{other}` is not a client auth type: use NoClientCert, \
                     VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ),
            )),
        }
    }

    fn users(
        &self,
        raw: BTreeMap<String, Option<String>>,
    ) -> Result<BTreeMap<String, String>, WebConfigError> {
        let mut users = BTreeMap::new();
        for (user, hash) in raw {
            let field = format!("basic_auth_users.{user}");
            if user.is_empty() || user.contains(':') {
                return Err(self.field(
                    field,
                    "a username must be non-empty and without ':' (basic auth sends \
                     user:password)",
                ));
            }
            // Never echo the value: it may be a password written by mistake.
            let hash = hash.unwrap_or_default();
            if let Err(error) = bcrypt::HashParts::from_str(hash.trim()) {
                return Err(self.field(
                    field,
                    format!(
                        "not a bcrypt hash ({error}); give the hash of the password, e.g. the \
                         output of `htpasswd -nBC 10 \"\" | tr -d ':\\n'`, never the password"
                    ),
                ));
            }
            users.insert(user, hash.trim().to_string());
        }
        Ok(users)
    }

    fn headers(
        &self,
        raw: BTreeMap<String, String>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
        let mut headers = Vec::new();
        for (name, value) in raw {
            let field = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = ALLOWED_HEADERS.iter().find(|(known, _)| *known == name)
            else {
                let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(name, _)| *name).collect();
                return Err(self.field(
                    field,
                    format!("cannot be set: the headers that can are {}", names.join(", ")),
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(self.field(
                    field,
                    format!("`{value}` is not allowed: use one of {}", allowed.join(", ")),
                ));
            }
            let parsed = (HeaderName::from_str(&name), HeaderValue::from_str(&value));
            let (Ok(name), Ok(value)) = parsed else {
                return Err(self.field(field, "is not a valid HTTP header value"));
            };
            headers.push((name, value));
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real bcrypt hash (cost 4, the lowest: quick in tests).
    fn hash() -> String {
        bcrypt::hash("secret", 4).unwrap()
    }

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(Path::new("/etc/golens/web.yml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("the config must be refused").to_string()
    }

    #[test]
    fn an_exporter_toolkit_file_parses_with_paths_from_its_folder() {
        let text = format!(
            "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: /abs/server.key\n  \
             min_version: TLS13\n\
             http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n\
             basic_auth_users:\n  prometheus: {}\n",
            hash()
        );
        let config = parse(&text).unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(
            tls.cert,
            PemSource::File { field: "cert_file", path: "/etc/golens/tls/server.crt".into() }
        );
        assert_eq!(tls.key, PemSource::File { field: "key_file", path: "/abs/server.key".into() });
        assert_eq!((tls.min_version, tls.max_version), (TlsVersion::Tls13, TlsVersion::Tls13));
        assert_eq!(tls.client_auth, ClientAuth::None);
        assert!(tls.prefer_server_cipher_suites);
        assert_eq!(config.users.keys().collect::<Vec<_>>(), ["prometheus"]);
        assert_eq!(config.headers.len(), 1);
    }

    #[test]
    fn an_empty_file_configures_nothing() {
        let config = parse("").unwrap();
        assert_eq!((config.tls, config.users.len(), config.headers.len()), (None, 0, 0));
        assert!(parse("# only a comment\n").unwrap().tls.is_none());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let message = error("tls_server_config:\n  cert_fle: a.crt\n  key_file: a.key\n");
        assert!(message.contains("/etc/golens/web.yml"), "{message}");
        assert!(message.contains("cert_fle"), "{message}");
        assert!(message.contains("cert_file"), "the keys it could be: {message}");
        let message = error("basic_auth_user:\n  a: b\n");
        assert!(message.contains("unknown field `basic_auth_user`"), "{message}");
    }

    #[test]
    fn toolkit_keys_golens_does_not_implement_are_refused_by_name() {
        let tls = "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n";
        for (extra, key) in [
            ("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "tls_server_config.cipher_suites"),
            ("  curve_preferences: [X25519]\n", "tls_server_config.curve_preferences"),
            ("  client_allowed_sans: [a]\n", "tls_server_config.client_allowed_sans"),
        ] {
            let message = error(&format!("{tls}{extra}"));
            assert!(message.contains(&format!("{key}: not supported by golens")), "{message}");
        }
        let message = error("rate_limit:\n  interval: 1s\n  burst: 5\n");
        assert!(message.contains("rate_limit: not supported"), "{message}");
        assert!(message.contains("--web.max-requests"), "{message}");
    }

    #[test]
    fn missing_or_doubled_certificates_say_which_key() {
        let message = error("tls_server_config:\n  key_file: a.key\n");
        assert!(message.contains("tls_server_config.cert_file: missing"), "{message}");
        let message = error("tls_server_config:\n  cert_file: a.crt\n");
        assert!(message.contains("tls_server_config.key_file: missing"), "{message}");
        let message = error("tls_server_config:\n  cert_file: a.crt\n  cert: x\n  key_file: k\n");
        assert!(message.contains("keep only one of cert"), "{message}");
        // An empty section is a mistake, not a request for plain HTTP.
        assert!(error("tls_server_config: {}\n").contains("cert_file: missing"));
    }

    #[test]
    fn client_auth_types() {
        let tls = "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n";
        let config = parse(&format!(
            "{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
        ))
        .unwrap();
        assert_eq!(
            config.tls.unwrap().client_auth,
            ClientAuth::Require(PemSource::File {
                field: "client_ca_file",
                path: "/etc/golens/ca.crt".into()
            })
        );
        let message = error(&format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"));
        assert!(message.contains("client_ca_file: missing"), "{message}");
        let message = error(&format!("{tls}  client_ca_file: ca.crt\n"));
        assert!(message.contains("does not ask for client certificates"), "{message}");
        let message = error(&format!("{tls}  client_auth_type: RequireAnyClientCert\n"));
        assert!(message.contains("authenticates nobody"), "{message}");
        let message = error(&format!("{tls}  client_auth_type: Sometimes\n"));
        assert!(message.contains("`Sometimes` is not a client auth type"), "{message}");
    }

    #[test]
    fn tls_versions() {
        let tls = "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n";
        let config = parse(&format!("{tls}  min_version: TLS10\n")).unwrap();
        assert_eq!(config.tls.unwrap().min_version, TlsVersion::Tls10);
        let message = error(&format!("{tls}  min_version: SSL3\n"));
        assert!(message.contains("min_version: `SSL3` is not a TLS version"), "{message}");
        let message = error(&format!("{tls}  max_version: TLS11\n"));
        assert!(message.contains("TLS 1.2 and 1.3 only"), "{message}");
        let message = error(&format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"));
        assert!(message.contains("above max_version"), "{message}");
    }

    #[test]
    fn a_password_instead_of_a_hash_is_refused_without_echoing_it() {
        let message = error("basic_auth_users:\n  alice: hunter2\n");
        assert!(message.contains("basic_auth_users.alice: not a bcrypt hash"), "{message}");
        assert!(message.contains("htpasswd"), "the fix: {message}");
        assert!(!message.contains("hunter2"), "the secret must not be printed: {message}");
        let message = error("basic_auth_users:\n  alice:\n");
        assert!(message.contains("not a bcrypt hash"), "{message}");
        let message = error(&format!("basic_auth_users:\n  'a:b': {}\n", hash()));
        assert!(message.contains("without ':'"), "{message}");
    }

    #[test]
    fn headers_follow_the_toolkit_allow_list() {
        let message = error("http_server_config:\n  headers:\n    Server: golens\n");
        assert!(message.contains("headers.Server: cannot be set"), "{message}");
        let message = error("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
        assert!(message.contains("use one of deny, sameorigin"), "{message}");
    }

    #[test]
    fn yaml_errors_name_the_file() {
        let message = error("tls_server_config: [\n");
        assert!(message.starts_with("web config file /etc/golens/web.yml:"), "{message}");
        let message = error("basic_auth_users: 3\n");
        assert!(message.contains("basic_auth_users"), "{message}");
    }
}
