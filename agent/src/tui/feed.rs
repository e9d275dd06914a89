//! The live feed: an agent's /api/v1/stream (server-sent events, one
//! Snapshot per collection) read on a thread of its own, each event checked
//! for the schema version golens top speaks before it is read as a Snapshot.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    time::Duration,
};

use tokio::sync::mpsc;
use ureq::tls::{RootCerts, TlsConfig};

use crate::snapshot::{Snapshot, SCHEMA_VERSION};

/// The agent sends a keep-alive every 5 s: a connection silent for this
/// long is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait before connecting again after the feed was lost.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// A longer line is not a snapshot golens would send (256 processes take
/// about 2 MiB).
const MAX_LINE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("cannot read {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{url} answered HTTP {status}{hint}")]
    Status { url: String, status: u16, hint: &'static str },
    #[error("golens top speaks schema {ours}, the agent sends {theirs}: {advice}")]
    SchemaMismatch { ours: u32, theirs: u32, advice: &'static str },
    #[error(
        "the stream's events carry no schema_version: not a golens agent, or one older than \
         golens top (upgrade the agent)"
    )]
    NoSchemaVersion,
    #[error("the agent sent a snapshot golens top cannot read: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("reading the stream: {0}")]
    Read(#[source] std::io::Error),
    #[error("the agent closed the stream")]
    Closed,
}

impl FeedError {
    /// Whether connecting again cannot help (the agent speaks another schema).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FeedError::SchemaMismatch { .. } | FeedError::NoSchemaVersion | FeedError::Decode(_)
        )
    }
}

/// What the feed thread tells the loop.
#[derive(Debug)]
pub enum FeedEvent {
    Snapshot(Box<Snapshot>),
    /// The feed broke; the thread connects again (unless `is_fatal`).
    Lost(FeedError),
}

pub fn stream_url(base_url: &str) -> String {
    format!("{}/api/v1/stream", base_url.trim_end_matches('/'))
}

/// Reads one event's data: its `schema_version` first (a client must not
/// misread another schema), then the rest as a Snapshot.
pub fn parse_frame(data: &str) -> Result<Snapshot, FeedError> {
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: Option<u32>,
    }
    let version: Version = serde_json::from_str(data).map_err(FeedError::Decode)?;
    match version.schema_version {
        None => Err(FeedError::NoSchemaVersion),
        Some(theirs) if theirs != SCHEMA_VERSION => Err(FeedError::SchemaMismatch {
            ours: SCHEMA_VERSION,
            theirs,
            advice: if theirs > SCHEMA_VERSION {
                "upgrade golens"
            } else {
                "upgrade the agent (or use the golens top of its release)"
            },
        }),
        Some(_) => serde_json::from_str(data).map_err(FeedError::Decode),
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// "message" when the event named none.
    pub event: String,
    pub data: String,
}

/// Server-sent events from lines (the text/event-stream format: `field:
/// value` lines, an empty line ends an event, `:` starts a comment).
#[derive(Debug, Default)]
pub struct SseParser {
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Takes one line (without its line ending); returns the event it ends.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            return self
                .data
                .take()
                .map(|data| SseEvent { event: event.unwrap_or_else(|| "message".into()), data });
        }
        if line.starts_with(':') {
            return None; // a comment: the keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {} // id, retry: not needed
        }
        None
    }
}

/// Reads the snapshots of `reader` (an event stream) into `each` until it
/// returns false (Ok) or the stream ends or fails (Err).
pub fn read_events(
    reader: impl Read,
    mut each: impl FnMut(Snapshot) -> bool,
) -> Result<(), FeedError> {
    let mut reader = BufReader::new(reader);
    let mut parser = SseParser::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .map_err(FeedError::Read)?;
        if read == 0 {
            return Err(FeedError::Closed);
        }
        if line.last() != Some(&b'\n') && read as u64 == MAX_LINE_BYTES {
            return Err(FeedError::Read(std::io::Error::other(format!(
                "an event line longer than {MAX_LINE_BYTES} bytes"
            ))));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let Some(event) = parser.line(text) else { continue };
        if (event.event == "snapshot" || event.event == "message")
            && !each(parse_frame(&event.data)?)
        {
            return Ok(());
        }
    }
}

/// The TLS settings for an https:// agent: trust the CA in `ca_file` (PEM),
/// or without it Mozilla's roots, as a browser would.
pub fn tls_config(ca_file: Option<&Path>) -> Result<TlsConfig, String> {
    let Some(path) = ca_file else { return Ok(TlsConfig::default()) };
    let pem = std::fs::read(path)
        .map_err(|error| format!("cannot read --ca-file {}: {error}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "--ca-file {} has no PEM certificate: give the CA that signed the agent's \
             certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(TlsConfig::builder().root_certs(RootCerts::new_with_certs(&certs)).build())
}

/// `url` without the password of its user (`https://user:***@host`), to be shown.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    let user = rest[..at].split(':').next().unwrap_or_default();
    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
}

/// Connects to `base_url`'s stream and reads it into `each` (see `read_events`).
/// A user and password in `base_url` are sent as basic auth.
pub fn read_stream(
    base_url: &str,
    tls: &TlsConfig,
    each: impl FnMut(Snapshot) -> bool,
) -> Result<(), FeedError> {
    let target = stream_url(base_url);
    let url = redacted(&target);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .tls_config(tls.clone())
        .build()
        .into();
    let response = agent.get(&target).header("Accept", "text/event-stream").call();
    let response = match response {
        Ok(response) => response,
        Err(ureq::Error::StatusCode(status)) => {
            let hint = match status {
                404 => {
                    " (an agent older than /api/v1/stream? upgrade it, or use `golens list \
                     --agent`)"
                }
                401 => " (the agent asks for a user and password: --connect https://USER:PASSWORD@HOST:PORT)",
                _ => "",
            };
            return Err(FeedError::Status { url, status, hint });
        }
        Err(source) => return Err(FeedError::Connect { url, source: Box::new(source) }),
    };
    read_events(response.into_body().into_reader(), each)
}

/// Reads `base_url`'s stream on a thread of its own, connecting again after
/// a loss (every second), until the receiver is dropped or the agent turns
/// out to speak another schema.
pub fn spawn(base_url: String, tls: TlsConfig) -> std::io::Result<mpsc::Receiver<FeedEvent>> {
    let (sender, receiver) = mpsc::channel(4);
    std::thread::Builder::new().name("golens-top-feed".into()).spawn(move || loop {
        let result = read_stream(&base_url, &tls, |snapshot| {
            sender.blocking_send(FeedEvent::Snapshot(Box::new(snapshot))).is_ok()
        });
        let error = match result {
            Ok(()) => return, // the loop is gone
            Err(error) => error,
        };
        let fatal = error.is_fatal();
        if sender.blocking_send(FeedEvent::Lost(error)).is_err() || fatal {
            return;
        }
        std::thread::sleep(RECONNECT_DELAY);
    })?;
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(snapshot: &Snapshot) -> String {
        let frame = crate::http::StreamFrame { schema_version: SCHEMA_VERSION, snapshot };
        serde_json::to_string(&frame).unwrap()
    }

    #[test]
    fn a_frame_is_a_snapshot_with_its_schema_version() {
        let (_, snapshot) = crate::tui::app::fixtures::two_snapshots();
        let data = frame(&snapshot);
        let json: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        assert_eq!(json["agent"]["collections"], 8, "the Snapshot's fields at the top level");
        assert_eq!(parse_frame(&data).unwrap(), snapshot);
    }

    #[test]
    fn another_schema_is_refused_by_name_not_misread() {
        let newer = r#"{"schema_version":2,"timestamp":"no longer a number"}"#;
        let error = parse_frame(newer).unwrap_err();
        assert_eq!(
            error.to_string(),
            "golens top speaks schema 1, the agent sends 2: upgrade golens"
        );
        assert!(error.is_fatal());
        let older = r#"{"schema_version":0}"#;
        assert!(parse_frame(older).unwrap_err().to_string().contains("upgrade the agent"));
        let none = r#"{"timestamp":1.0,"processes":[]}"#;
        assert!(matches!(parse_frame(none), Err(FeedError::NoSchemaVersion)));
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        assert_eq!(redacted("https://prom:s3cret@node-7:9477"), "https://prom:***@node-7:9477");
        assert_eq!(
            redacted("https://prom:s3:cret@node-7:9477/api/v1/stream"),
            "https://prom:***@node-7:9477/api/v1/stream"
        );
        assert_eq!(redacted("http://node-7:9477/a@b"), "http://node-7:9477/a@b");
        assert_eq!(redacted("http://127.0.0.1:9477"), "http://127.0.0.1:9477");
    }

    #[test]
    fn parses_server_sent_events() {
        let mut parser = SseParser::default();
        let lines = [
            ": keep-alive",
            "event: snapshot",
            "id: 3",
            "data: {\"a\":",
            "data:1}",
            "",
            "",
            "data: plain",
            "",
        ];
        let events: Vec<SseEvent> = lines.iter().filter_map(|l| parser.line(l)).collect();
        assert_eq!(
            events,
            [
                SseEvent { event: "snapshot".into(), data: "{\"a\":\n1}".into() },
                SseEvent { event: "message".into(), data: "plain".into() },
            ]
        );
    }

    #[test]
    fn reads_snapshots_from_a_stream_until_it_ends() {
        let (before, after) = crate::tui::app::fixtures::two_snapshots();
        let stream = format!(
            ":\n\nevent: snapshot\r\ndata: {}\r\n\r\n: keep-alive\n\nevent: snapshot\ndata: {}\n\n",
            frame(&before),
            frame(&after)
        );
        let mut seen = Vec::new();
        let result = read_events(stream.as_bytes(), |s| {
            seen.push(s.agent.collections);
            true
        });
        assert!(matches!(result, Err(FeedError::Closed)), "{result:?}");
        assert_eq!(seen, [7, 8]);

        let mismatch = "event: snapshot\ndata: {\"schema_version\":2}\n\n";
        let result = read_events(mismatch.as_bytes(), |_| true);
        assert!(matches!(result, Err(FeedError::SchemaMismatch { theirs: 2, .. })));
    }
}
