//! `golens top` and the live feed it reads (/api/v1/stream): the stream of
//! a real agent, the schema-version check, and (privileged) the real TUI
//! driven in tmux like a person would: its screen read with capture-pane,
//! keys sent with send-keys.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{golens, GoBuild};

/// Serves one HTTP response on a loopback port, on a thread: `body` as a
/// text/event-stream, then holds the connection open a while.
fn serve_event_stream(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut request = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while request.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                    cache-control: no-cache\r\n\r\n";
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body.as_bytes());
        let _ = stream.flush();
        std::thread::sleep(Duration::from_secs(10));
    });
    url
}

fn top_output(args: &[&str]) -> Output {
    golens().arg("top").args(args).output().expect("running golens top")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn top_refuses_a_stream_of_another_schema_version() {
    let event = "event: snapshot\ndata: {\"schema_version\":2,\"timestamp\":\"changed\"}\n\n";
    let url = serve_event_stream(format!(": keep-alive\n\n{event}"));
    let output = top_output(&["--connect", &url]);
    let text = stderr(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("golens top speaks schema 1, the agent sends 2: upgrade golens"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn top_reads_a_stream_then_says_it_needs_a_terminal() {
    let snapshot = serde_json::json!({
        "schema_version": golens::snapshot::SCHEMA_VERSION,
        "timestamp": 1.0,
        "processes": [],
        "agent": serde_json::to_value(golens::snapshot::AgentSnapshot {
            collections: 1,
            ..Default::default()
        })
        .unwrap(),
    });
    let url = serve_event_stream(format!("event: snapshot\ndata: {snapshot}\n\n"));
    let output = top_output(&["--connect", &url]); // stdout is a pipe here
    let text = stderr(&output);
    assert!(!output.status.success());
    assert!(text.contains("golens top draws on a terminal"), "{text}");
    assert!(!text.contains("schema"), "a snapshot of schema 1 is read: {text}");
}

#[test]
fn top_against_an_absent_agent_is_a_clear_error() {
    let port = common::free_port();
    let output = top_output(&["--connect", &format!("http://127.0.0.1:{port}")]);
    let text = stderr(&output);
    assert!(!output.status.success());
    assert!(text.contains(&format!("cannot read http://127.0.0.1:{port}/api/v1/stream")), "{text}");
}

/// The JSON data of the next `event: snapshot` of a stream.
fn next_snapshot_event(reader: &mut impl BufRead) -> serde_json::Value {
    let mut event: Option<String> = None;
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).expect("reading the stream") > 0, "stream ended");
        let line = line.trim_end();
        if let (true, Some(data)) = (line.is_empty(), &event) {
            return serde_json::from_str(data).expect("an event's data is JSON");
        }
        if let Some(data) = line.strip_prefix("data:") {
            event = Some(data.trim_start().to_string());
        }
    }
}

#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn stream_sends_each_collection_once_as_a_versioned_snapshot() {
    let (go, comm) = gcburn();
    let agent = common::Agent::start(&["--comm", &comm]);
    let http: ureq::Agent = ureq::Agent::config_builder()
        .timeout_per_read(Some(Duration::from_secs(20)))
        .build()
        .into();
    let response =
        http.get(&format!("{}/api/v1/stream", agent.base_url)).call().expect("GET /api/v1/stream");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("text/event-stream"));
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut collections = Vec::new();
    for _ in 0..3 {
        let json = next_snapshot_event(&mut reader);
        assert_eq!(json["schema_version"], golens::snapshot::SCHEMA_VERSION, "{json}");
        let snapshot: golens::snapshot::Snapshot =
            serde_json::from_value(json).expect("each event is a Snapshot");
        assert!(
            snapshot.processes.iter().any(|p| p.pid == go.pid()),
            "the watched process is in every event"
        );
        collections.push(snapshot.agent.collections);
    }
    // The first event is the latest collection at connect time; each next
    // one is a newer collection, never one sent twice. (One may be skipped
    // when the machine is too busy to look within a collection interval:
    // the stream sends the latest, not a backlog.)
    assert!(collections[0] >= 1, "{collections:?}");
    assert!(collections.windows(2).all(|w| w[1] > w[0]), "{collections:?}");
}

/// A tmux server of our own (its own socket, no user config) running one
/// session; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached session of `width`x`height`, through
    /// a script that, once the command ends, prints its exit status and
    /// whether the terminal is back in cooked mode, then waits for a line.
    fn start(command: &[&str], width: u16, height: u16) -> Tmux {
        // A server per test: the tests of this file run in parallel.
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let script = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("top-in-tmux-{n}.sh"));
        std::fs::write(
            &script,
            "#!/bin/sh\n\"$@\"\necho \"top exited $?\"\n\
             if stty -a | tr ' ;' '\\n\\n' | grep -qx -e -icanon -e -echo; \
             then echo 'terminal: raw'; else echo 'terminal: restored'; fi\nread line\n",
        )
        .unwrap();
        let tmux = Tmux { socket: format!("golens-top-test-{}-{n}", std::process::id()) };
        let status = tmux
            .command()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg("sh")
            .arg(&script)
            .args(command)
            .status()
            .expect("tmux (Debian package tmux; run `cargo xtask setup`)");
        assert!(status.success(), "tmux new-session failed");
        let _ = tmux.command().args(["set-option", "-t", "top", "status", "off"]).status();
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    fn screen(&self) -> String {
        let output =
            self.command().args(["capture-pane", "-p", "-t", "top"]).output().expect("tmux");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn send(&self, keys: &[&str]) {
        let status = self.command().args(["send-keys", "-t", "top"]).args(keys).status();
        assert!(status.is_ok_and(|s| s.success()), "tmux send-keys {keys:?}");
    }

    /// Types `text` literally (no key names).
    fn type_text(&self, text: &str) {
        self.send(&["-l", text]);
    }

    fn alternate_screen_on(&self) -> bool {
        let output = self
            .command()
            .args(["display-message", "-p", "-t", "top", "#{alternate_on}"])
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&output.stdout).trim() == "1"
    }

    fn session_alive(&self) -> bool {
        self.command()
            .args(["has-session", "-t", "top"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits up to `timeout` for a screen where `done` holds; panics with
    /// the last screen and `what` otherwise.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited {} s for {what}; the screen:\n{screen}",
                timeout.as_secs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").stderr(std::process::Stdio::null()).status();
    }
}

/// The fields of the table row of `pid` on `screen`.
fn row<'a>(screen: &'a str, pid: &str) -> Option<Vec<&'a str>> {
    screen
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&pid) && fields.len() == 12)
}

/// A rate as top shows it: "0.4", "37", "1.6k", "1.2M".
fn parse_rate(text: &str) -> Option<f64> {
    let (number, scale) = match text.strip_suffix('k') {
        Some(number) => (number, 1e3),
        None => match text.strip_suffix('M') {
            Some(number) => (number, 1e6),
            None => (text, 1.0),
        },
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// A row with a GC rate (not "–") and a stop-the-world p99 (a duration).
fn has_gc_numbers(screen: &str, pid: &str) -> bool {
    row(screen, pid).is_some_and(|fields| {
        parse_rate(fields[3]).is_some_and(|rate| rate > 0.0) && !["–", "none"].contains(&fields[4])
    })
}

/// gcburn collecting garbage non-stop, for longer than any wait below (a
/// busy machine can take a while to start the agent): killed on drop.
fn gcburn() -> (common::ChildGuard, String) {
    let binary = common::build_workload_with("gcburn", "1.27.3", GoBuild::default());
    let child = common::start_workload(&binary, &["-wait=false", "-duration", "90s"]);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.pid())).expect("comm");
    (child, comm.trim().to_string())
}

fn golens_path() -> &'static str {
    env!("CARGO_BIN_EXE_golens")
}

/// Quits with `q` and checks the terminal came back: top exited 0, the
/// alternate screen is off, the tty is in cooked mode again; then the
/// session ends.
fn quit_and_check_the_terminal(tmux: &Tmux) {
    tmux.send(&["q"]);
    let screen = tmux.wait_for("top to exit after q", Duration::from_secs(15), |s| {
        s.contains("top exited") && s.contains("terminal: ")
    });
    assert!(screen.contains("top exited 0"), "{screen}");
    assert!(screen.contains("terminal: restored"), "raw mode left on:\n{screen}");
    assert!(!screen.contains("STW99"), "the TUI is still on screen:\n{screen}");
    assert!(!tmux.alternate_screen_on(), "still on the alternate screen");
    tmux.send(&["Enter"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.session_alive() {
        assert!(Instant::now() < deadline, "the tmux session did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "privileged: golens top starts an agent (root); run `cargo xtask test`"]
fn top_shows_a_go_process_sorts_filters_and_quits() {
    let (go, comm) = gcburn();
    let pid = go.pid().to_string();
    let tmux = Tmux::start(&[golens_path(), "top", "--comm", &comm], 120, 30);

    // Each wait checks a whole screen at once: a capture can fall in the
    // middle of a redraw, so a condition is retried, never asserted on one
    // capture.
    tmux.wait_for("the workload's row with a GC rate", Duration::from_secs(60), |s| {
        has_gc_numbers(s, &pid)
    });
    let title = "golens top · local agent (pid ";
    let screen = tmux.wait_for("a complete screen", Duration::from_secs(10), |s| {
        row(s, &pid).is_some_and(|fields| fields[1..3] == [comm.as_str(), "1.27.3"])
            && s.contains(title)
            && s.contains("sort STW99 ▼")
            && ["q quit", "s sort", "/ filter"].iter().all(|key| s.contains(key))
            && s.contains(&format!(" {comm} · go1.27.3 · "))
            && s.contains("STW pauses, last ")
    });
    let agent_pid: u32 = screen
        .split(title)
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .expect("the local agent's pid in the title");

    tmux.send(&["s"]);
    tmux.wait_for("sort by STW max", Duration::from_secs(5), |s| s.contains("sort STWmax ▼"));
    tmux.send(&["r"]);
    tmux.wait_for("reversed sort", Duration::from_secs(5), |s| s.contains("sort STWmax ▲"));

    tmux.send(&["/"]);
    tmux.type_text(&pid);
    // (Other gcburns may run, from the other tests: the pid filter leaves
    // ours alone, selected, in the detail pane.)
    tmux.wait_for("the filter, keeping the row", Duration::from_secs(5), |s| {
        s.contains(&format!("filter /{pid}▏"))
            && row(s, &pid).is_some()
            && s.contains(&format!("┌ {pid} {comm} · go1.27.3 · "))
            && s.contains("Esc clear")
    });
    tmux.type_text("zzz");
    tmux.wait_for("no match", Duration::from_secs(5), |s| {
        s.contains(&format!("no process matches \"{pid}zzz\"")) && row(s, &pid).is_none()
    });
    tmux.send(&["Escape"]);
    tmux.wait_for("the filter cleared, the command keys back", Duration::from_secs(5), |s| {
        !s.contains("filter /") && row(s, &pid).is_some() && s.contains("q quit")
    });

    quit_and_check_the_terminal(&tmux);
    // The local agent was stopped and reaped with top.
    assert!(
        !Path::new(&format!("/proc/{agent_pid}")).exists(),
        "the agent golens top started (pid {agent_pid}) outlived it"
    );
    drop(go);
}

/// The screen's words in order, box borders dropped, lines joined: a sentence the detail pane
/// wraps reads whole.
fn words(screen: &str) -> String {
    screen.split_whitespace().filter(|w| !["│", "┌", "┐", "└", "┘"].contains(w)).fold(
        String::new(),
        |mut text, word| {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(word.trim_matches('│'));
            text
        },
    )
}

/// The person at 3 a.m.: a GC-bound process and a CPU-starved one, told apart by the verdict
/// of top's detail pane, each selected by filtering on its pid.
#[test]
#[ignore = "privileged: golens top starts an agent (root); run `cargo xtask test`"]
fn top_tells_a_gc_bound_process_from_a_cpu_starved_one() {
    let gc = common::start_gc_bound(Duration::from_secs(120));
    let gc_pid = gc.pid().to_string();
    let runq_binary = common::build_workload("runqburn");
    let comm = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm").trim().to_string()
    };
    // comm is the binary's name, cut to 15 bytes: known before the process starts.
    let runq_comm: String =
        runq_binary.file_name().unwrap().to_string_lossy().chars().take(15).collect();
    let tmux = Tmux::start(
        &[golens_path(), "top", "--window", "5s", "--comm", &comm(&gc_pid), "--comm", &runq_comm],
        120,
        30,
    );
    let select = |pid: &str| {
        tmux.send(&["/"]);
        tmux.type_text(pid);
        tmux.send(&["Enter"]);
    };
    tmux.wait_for("the GC-bound row", Duration::from_secs(60), |s| has_gc_numbers(s, &gc_pid));
    select(&gc_pid);
    tmux.wait_for("the GC-bound verdict", Duration::from_secs(60), |s| {
        s.contains(&format!("┌ {gc_pid} ")) && words(s).contains("mostly GC pauses")
    });

    // Then a process with 8 busy threads for 2 CPUs.
    let runq = common::start_workload(&runq_binary, &["-duration", "120s", "-workers", "8"]);
    let runq_pid = runq.pid().to_string();
    tmux.send(&["Escape"]);
    tmux.wait_for("the CPU-starved row", Duration::from_secs(60), |s| row(s, &runq_pid).is_some());
    select(&runq_pid);
    let screen = tmux.wait_for("the CPU-starved verdict", Duration::from_secs(60), |s| {
        s.contains(&format!("┌ {runq_pid} "))
            && words(s).contains("mostly the scheduler (waiting for a CPU)")
    });
    println!("{screen}");
    quit_and_check_the_terminal(&tmux);
}

#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn top_connects_to_a_running_agent() {
    let (go, _) = gcburn();
    let pid = go.pid().to_string();
    // --pid, not --comm: the other tests of this file run gcburn too.
    let agent = common::Agent::start(&["--pid", &pid]);
    let tmux = Tmux::start(&[golens_path(), "top", "--connect", &agent.base_url], 80, 24);
    tmux.wait_for("the workload's row with a GC rate", Duration::from_secs(60), |s| {
        has_gc_numbers(s, &pid)
    });
    let title = format!("golens top · agent at {} · 1 process", agent.base_url);
    tmux.wait_for("the title", Duration::from_secs(10), |s| s.contains(&title));
    quit_and_check_the_terminal(&tmux);
    // The agent top read from is not top's: it still runs.
    let (code, _) = common::get(&format!("{}/readyz", agent.base_url)).expect("agent answers");
    assert_eq!(code, 200);
}

#[test]
#[ignore = "privileged: run `cargo xtask test` as root"]
fn top_in_a_small_terminal_says_so_and_still_quits() {
    let agent = common::Agent::start(&["--comm", "no-such-comm"]);
    let tmux = Tmux::start(&[golens_path(), "top", "--connect", &agent.base_url], 60, 20);
    tmux.wait_for("the small-terminal message", Duration::from_secs(30), |s| {
        let words = s.split_whitespace().collect::<Vec<_>>().join(" ");
        words.contains("needs a terminal of at least 80x24; this one is 60x")
    });
    quit_and_check_the_terminal(&tmux);
}
