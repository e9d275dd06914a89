//! The HTTP side made safe, tested on the real golens binary: TLS and basic
//! auth from a `--web.config.file` in the Prometheus exporter-toolkit
//! format (a CA, a server certificate and bcrypt hashes made here), the
//! caps on requests and streams (503 at once, never a stall), and the
//! timeouts that close idle or slow connections; and a real Prometheus
//! (Debian's) scraping golens over TLS with basic auth.
//! Needs no privilege (without root golens serves degraded, which changes
//! nothing here), except the Prometheus test: Debian's prometheus, which
//! `cargo xtask setup` installs.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Stdio,
    thread::sleep,
    time::{Duration, Instant},
};

use common::{free_port, golens, ChildGuard};

/// The user Prometheus scrapes as, and its password.
const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-secret";

/// A CA, and a certificate it signed for 127.0.0.1 and localhost, in a
/// temporary folder with the web config that names them.
struct Pki {
    dir: PathBuf,
    ca_der: Vec<u8>,
}

impl Pki {
    fn new(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("golens-web-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "golens test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        server_params.distinguished_name.push(rcgen::DnType::CommonName, "golens");
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        // Cost 6 keeps the test quick; production hashes use 10 or more.
        let hash = bcrypt::hash(PASSWORD, 6).unwrap();
        std::fs::write(
            dir.join("web.yml"),
            format!(
                "# relative paths: from this file's folder, as in the exporter-toolkit\n\
                 tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
                 http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
                 basic_auth_users:\n  {USER}: {hash}\n"
            ),
        )
        .unwrap();
        Pki { dir, ca_der: ca.der().to_vec() }
    }

    fn web_config(&self) -> String {
        self.dir.join("web.yml").display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP client; with `ca`, over TLS trusting only that CA. A new
/// connection per request (none kept for the next one).
fn client(ca: Option<&[u8]>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_global(Some(Duration::from_secs(20)));
    if let Some(der) = ca {
        let root = ureq::tls::Certificate::from_der(der).to_owned();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[root]))
                .build(),
        );
    }
    config.build().into()
}

/// A GET: its status, headers we look at, and body (None: no HTTP answer).
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    header: Option<String>,
    body: String,
}

fn get(agent: &ureq::Agent, url: &str, credentials: Option<(&str, &str)>) -> Option<Answer> {
    let mut request = agent.get(url);
    if let Some((user, password)) = credentials {
        request = request.header("Authorization", basic(user, password));
    }
    let mut response = request.call().ok()?;
    let header = |name: &str| {
        response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string)
    };
    let (www_authenticate, nosniff) =
        (header("www-authenticate"), header("x-content-type-options"));
    Some(Answer {
        status: response.status().as_u16(),
        www_authenticate,
        header: nosniff,
        body: response.body_mut().read_to_string().unwrap_or_default(),
    })
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `golens run --listen 127.0.0.1:PORT ARGS` (scheduler probes only: the
/// HTTP side is what is tested), once `ready(port)` holds.
fn start_agent(args: &[&str], ready: impl Fn(u16) -> bool) -> (ChildGuard, u16) {
    let port = free_port();
    let child = golens()
        .arg("run")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "250ms",
            "--probes",
            "sched",
        ])
        .args(args)
        .spawn()
        .expect("starting golens");
    let mut child = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().expect("polling golens") {
            panic!("golens exited before it was ready: {status}");
        }
        if ready(port) {
            return (child, port);
        }
        assert!(Instant::now() < deadline, "golens not ready within 30 s");
        sleep(Duration::from_millis(100));
    }
}

/// Waits (up to 15 s) for the server to close `stream`: true when it did,
/// false when it kept it open that long. The tests set a 1 s header
/// timeout; 15 s is far from it and below hyper's own default (30 s), so a
/// close seen here is golens' timeout, not hyper's.
fn closed_by_server(stream: &mut impl Read) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408 or a TLS alert before the close
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return true, // reset
        }
    }
    false
}

#[test]
fn tls_and_basic_auth_guard_every_endpoint() {
    let pki = Pki::new("auth");
    let tls = client(Some(&pki.ca_der));
    let (_agent, port) = start_agent(&["--web.config.file", &pki.web_config()], |port| {
        get(&tls, &format!("https://127.0.0.1:{port}/readyz"), Some((USER, PASSWORD)))
            .is_some_and(|answer| answer.status == 200)
    });
    let base = format!("https://127.0.0.1:{port}");

    // Every path, /healthz and /readyz included, as with the exporter-toolkit.
    for path in ["/metrics", "/healthz", "/readyz", "/api/v1/snapshot", "/", "/no-such-page"] {
        let url = format!("{base}{path}");
        for (credentials, case) in [
            (None, "no credentials"),
            (Some((USER, "wrong")), "a wrong password"),
            (Some(("admin", PASSWORD)), "an unknown user"),
            (Some((USER, "")), "an empty password"),
        ] {
            let answer = get(&tls, &url, credentials).expect("an HTTPS answer");
            assert_eq!(answer.status, 401, "{path} with {case}: {}", answer.body);
            let challenge = answer.www_authenticate.unwrap_or_default();
            assert!(challenge.starts_with("Basic"), "{path}: WWW-Authenticate {challenge:?}");
            assert_eq!(
                answer.header.as_deref(),
                Some("nosniff"),
                "configured headers on a 401 too"
            );
        }
        let answer = get(&tls, &url, Some((USER, PASSWORD))).expect("an HTTPS answer");
        let expected = if path == "/no-such-page" { 404 } else { 200 };
        assert_eq!(answer.status, expected, "{path} with the right password: {}", answer.body);
        assert_eq!(answer.header.as_deref(), Some("nosniff"));
    }
    let metrics = get(&tls, &format!("{base}/metrics"), Some((USER, PASSWORD))).unwrap();
    assert!(
        metrics.body.contains("golens_agent_ebpf_available"),
        "the metrics, over TLS:\n{}",
        metrics.body
    );

    // The stream too: 401 without credentials, a feed with them.
    let stream_url = format!("{base}/api/v1/stream");
    assert_eq!(get(&tls, &stream_url, None).unwrap().status, 401);
    let feed = tls
        .get(&stream_url)
        .header("Authorization", basic(USER, PASSWORD))
        .call()
        .expect("the stream over TLS");
    assert_eq!(feed.status().as_u16(), 200);
    let mut first = String::new();
    let mut reader = feed.into_body().into_reader();
    let mut byte = [0u8; 1];
    while !first.ends_with("\n\n") && first.len() < 1 << 20 {
        reader.read_exact(&mut byte).expect("reading the stream");
        first.push(byte[0] as char);
    }
    assert!(first.contains("event: snapshot"), "{first}");
    drop(reader);

    // The name in the certificate is checked: localhost is in it too.
    let by_name = get(&tls, &format!("https://localhost:{port}/healthz"), Some((USER, PASSWORD)));
    assert_eq!(by_name.map(|answer| answer.status), Some(200));

    // A client that does not trust the CA gets no answer.
    let untrusting = client(None);
    assert!(
        get(&untrusting, &format!("{base}/healthz"), Some((USER, PASSWORD))).is_none(),
        "a certificate from an unknown CA was accepted"
    );

    // Plain HTTP to the TLS port: no HTTP answer, and the connection is closed.
    assert!(get(&client(None), &format!("http://127.0.0.1:{port}/metrics"), None).is_none());
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    plain.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut buf = [0u8; 1024];
        match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        assert!(Instant::now() < deadline, "plain HTTP: the TLS port kept the connection open");
    }
    assert!(!answer.starts_with(b"HTTP/"), "an HTTP answer to plain HTTP on the TLS port");
}

#[test]
fn golens_top_connects_over_tls_with_basic_auth() {
    let pki = Pki::new("top");
    let tls = client(Some(&pki.ca_der));
    let (_agent, port) = start_agent(&["--web.config.file", &pki.web_config()], |port| {
        get(&tls, &format!("https://127.0.0.1:{port}/readyz"), Some((USER, PASSWORD)))
            .is_some_and(|answer| answer.status == 200)
    });
    let ca_file = pki.path("ca.crt").display().to_string();
    // Without a terminal, golens top stops after its first snapshot and says
    // it needs one: the snapshot came through TLS and authentication.
    let top = |url: String, ca: Option<&str>| {
        let mut command = golens();
        command.args(["top", "--connect", &url]).stdin(Stdio::null());
        if let Some(ca) = ca {
            command.args(["--ca-file", ca]);
        }
        let output = command.output().expect("golens top");
        assert!(!output.status.success(), "golens top had no terminal and still succeeded");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let stderr = top(format!("https://{USER}:{PASSWORD}@localhost:{port}"), Some(&ca_file));
    assert!(stderr.contains("draws on a terminal"), "no first snapshot: {stderr}");
    let stderr = top(format!("https://{USER}:wrong@localhost:{port}"), Some(&ca_file));
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(stderr.contains(&format!("https://{USER}:***@localhost")), "{stderr}");
    assert!(!stderr.contains("wrong"), "the password is shown: {stderr}");
    let stderr = top(format!("https://{USER}:{PASSWORD}@localhost:{port}"), None);
    assert!(!stderr.contains("draws on a terminal"), "an unknown CA was trusted: {stderr}");
    assert!(!stderr.contains(PASSWORD), "the password is shown: {stderr}");
    // golens list --agent (no --ca-file: it trusts public CAs only) names
    // the agent without its password too.
    let output = golens()
        .args(["list", "--agent", &format!("https://{USER}:{PASSWORD}@localhost:{port}")])
        .output()
        .expect("golens list");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a certificate from an unknown CA was accepted");
    assert!(stderr.contains(&format!("https://{USER}:***@localhost")), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password is shown: {stderr}");
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let pki = Pki::new("renew");
    let first = client(Some(&pki.ca_der));
    let (_agent, port) = start_agent(&["--web.config.file", &pki.web_config()], |port| {
        get(&first, &format!("https://127.0.0.1:{port}/readyz"), Some((USER, PASSWORD)))
            .is_some_and(|answer| answer.status == 200)
    });
    // A new CA and certificate, swapped in as a Kubernetes Secret volume
    // does (new files renamed over the old ones).
    let renewed = Pki::new("renew-next");
    for name in ["server.key", "server.crt"] {
        let staged = pki.path(&format!(".{name}.new"));
        std::fs::copy(renewed.path(name), &staged).unwrap();
        std::fs::rename(&staged, pki.path(name)).unwrap();
    }
    let url = format!("https://127.0.0.1:{port}/healthz");
    let second = client(Some(&renewed.ca_der));
    let answer = get(&second, &url, Some((USER, PASSWORD)));
    assert_eq!(answer.map(|answer| answer.status), Some(200), "the new certificate");
    // A new client (`first` would resume its TLS session, which skips the
    // certificate) that trusts only the old CA gets no answer.
    let old = client(Some(&pki.ca_der));
    assert!(get(&old, &url, Some((USER, PASSWORD))).is_none(), "the old certificate is gone");
}

#[test]
fn over_the_request_cap_a_scrape_gets_503_at_once() {
    let http = client(None);
    let (_agent, port) = start_agent(&["--web.max-requests", "1"], |port| {
        get(&http, &format!("http://127.0.0.1:{port}/readyz"), None)
            .is_some_and(|answer| answer.status == 200)
    });
    let base = format!("http://127.0.0.1:{port}");
    // An open stream holds the one request slot for as long as it lasts.
    let stream = http.get(&format!("{base}/api/v1/stream")).call().expect("the stream");
    assert_eq!(stream.status().as_u16(), 200);
    // `get` gives up after 20 s: a stall would be None, not a 503.
    let busy = get(&http, &format!("{base}/metrics"), None).expect("an answer, not a stall");
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(busy.body.contains("--web.max-requests"), "{}", busy.body);
    // The client goes away: its slot comes back.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = get(&http, &format!("{base}/metrics"), None).expect("an answer");
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(Instant::now() < deadline, "the closed stream's slot never came back");
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn over_the_stream_cap_a_stream_gets_503_and_scrapes_go_on() {
    let http = client(None);
    let (_agent, port) = start_agent(&["--web.max-streams", "1"], |port| {
        get(&http, &format!("http://127.0.0.1:{port}/readyz"), None)
            .is_some_and(|answer| answer.status == 200)
    });
    let base = format!("http://127.0.0.1:{port}");
    let stream = http.get(&format!("{base}/api/v1/stream")).call().expect("the stream");
    assert_eq!(stream.status().as_u16(), 200);
    let second = get(&http, &format!("{base}/api/v1/stream"), None).expect("an answer");
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(second.body.contains("--web.max-streams"), "{}", second.body);
    assert_eq!(get(&http, &format!("{base}/metrics"), None).unwrap().status, 200);
    drop(stream);
}

#[test]
fn idle_and_slow_clients_are_disconnected_after_the_header_timeout() {
    let pki = Pki::new("timeouts");
    let tls = client(Some(&pki.ca_der));
    let http = client(None);
    let timeout = ["--web.read-header-timeout", "1s"];
    let (_plain, plain_port) = start_agent(&timeout, |port| {
        get(&http, &format!("http://127.0.0.1:{port}/readyz"), None)
            .is_some_and(|answer| answer.status == 200)
    });
    let (_secured, tls_port) =
        start_agent(&[&timeout[..], &["--web.config.file", &pki.web_config()]].concat(), |port| {
            get(&tls, &format!("https://127.0.0.1:{port}/readyz"), Some((USER, PASSWORD)))
                .is_some_and(|answer| answer.status == 200)
        });
    let connect = |port: u16| {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        stream
    };
    // Connects and sends nothing (on the TLS port: no handshake).
    for port in [plain_port, tls_port] {
        assert!(closed_by_server(&mut connect(port)), "a silent connection to {port} stayed open");
    }
    // Sends the start of a request, then nothing.
    let mut slow = connect(plain_port);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    assert!(closed_by_server(&mut slow), "a request without the end of its headers stayed open");
    // One whole request on a kept-alive connection, then silence.
    let mut kept = connect(plain_port);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    kept.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert!(closed_by_server(&mut kept), "an idle kept-alive connection stayed open");
}

#[test]
fn a_web_config_mistake_stops_golens_at_startup_naming_the_file_and_key() {
    let pki = Pki::new("mistakes");
    let cases = [
        ("tls_server_config:\n  cert_file: server.crt\n", "tls_server_config.key_file: missing"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: nowhere.key\n",
            "tls_server_config.key_file: cannot read",
        ),
        ("basic_auth_users:\n  alice: not-a-hash\n", "basic_auth_users.alice: not a bcrypt hash"),
        ("tls_server_config:\n  certfile: server.crt\n", "unknown field `certfile`"),
        ("rate_limit:\n  burst: 1\n", "rate_limit: not supported"),
    ];
    for (text, expected) in cases {
        let path = pki.path("bad.yml");
        std::fs::write(&path, text).unwrap();
        let output = golens()
            .args(["run", "--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--web.config.file", &path.display().to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text:?} was accepted");
        assert!(stderr.contains(&path.display().to_string()), "the file is named: {stderr}");
        assert!(stderr.contains(expected), "{text:?}: expected {expected:?} in {stderr}");
    }
}

/// The value of the first series of an instant query, or None.
fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let mut response = client(None)
        .get(&format!("{prometheus}/api/v1/query"))
        .query("query", promql)
        .call()
        .ok()?;
    let json: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
#[ignore = "needs Debian's prometheus (cargo xtask setup): run by `cargo xtask test`"]
fn prometheus_scrapes_golens_over_tls_with_basic_auth() {
    let pki = Pki::new("prometheus");
    let tls = client(Some(&pki.ca_der));
    let (_agent, port) = start_agent(&["--web.config.file", &pki.web_config()], |port| {
        get(&tls, &format!("https://127.0.0.1:{port}/readyz"), Some((USER, PASSWORD)))
            .is_some_and(|answer| answer.status == 200)
    });
    // Two jobs: the right password, and a wrong one that must stay down.
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    \
             tls_config: {{ca_file: '{ca}', server_name: localhost}}\n    \
             basic_auth: {{username: {USER}, password: '{password}'}}\n    \
             static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
            ca = pki.path("ca.crt").display()
        )
    };
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n{}{}",
        job("golens", PASSWORD),
        job("intruder", "guess")
    );
    let (_prometheus, prometheus) = common::start_prometheus(&pki.dir, &config);
    let checks = [
        ("up{job=\"golens\"}", 1.0),
        ("count(golens_agent_ebpf_available{job=\"golens\"})", 1.0),
        ("up{job=\"intruder\"}", 0.0),
        ("scrape_samples_scraped{job=\"intruder\"}", 0.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<Option<f64>> =
            checks.iter().map(|(promql, _)| query(&prometheus, promql)).collect();
        if checks.iter().zip(&got).all(|((_, want), got)| *got == Some(*want)) {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never saw {checks:?}: got {got:?}");
        sleep(Duration::from_millis(500));
    }
}
