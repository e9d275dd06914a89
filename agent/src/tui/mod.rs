//! `golens top`: a live terminal view of what the agent measures.
//!
//! State in `app` (window math, sorting, filtering), input in `event`,
//! drawing in `ui` and `widgets/`; the snapshots come from an agent's
//! /api/v1/stream (`feed`), of an agent started here (`local_agent`) unless
//! --connect names one. One loop (`tokio::select!`) waits on keys,
//! snapshots, signals and a tick; the terminal is restored on every way out,
//! a panic included.

pub mod app;
pub mod event;
pub mod feed;
pub mod local_agent;
pub mod ui;
pub mod widgets;

use std::{
    io::{stdout, BufWriter, IsTerminal, Stdout},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;

use self::{
    app::App,
    event::Input,
    feed::{FeedError, FeedEvent},
    local_agent::LocalAgent,
};
use crate::cli::TopArgs;

/// How long the first snapshot may take once the agent answers.
const FIRST_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn top(args: &TopArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting golens top's event loop")?;
    // The local agent is declared before the terminal: on the way out the
    // terminal is restored first, then the agent stopped (which may take
    // a second or two while it detaches its probes).
    let mut local = None;
    let tls = feed::tls_config(args.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
    let (source, base_url) = match &args.connect {
        Some(url) => (format!("agent at {}", feed::redacted(url)), url.clone()),
        None => {
            if !std::io::stdout().is_terminal() {
                bail!("{}", not_a_terminal());
            }
            let agent = LocalAgent::start(args)?;
            let url = agent.base_url.clone();
            let source = format!("local agent (pid {})", agent.pid());
            local = Some(agent);
            (source, url)
        }
    };
    let mut app = App::new(source, args.window);
    app.local_agent = local.is_some();
    if args.connect.is_some() {
        app.only_pids = args.pids.clone();
        app.only_comms = args.comms.clone();
    }
    runtime.block_on(run(&mut app, &base_url, tls, local.as_mut()))
}

fn not_a_terminal() -> &'static str {
    "golens top draws on a terminal, and its output is not one: for scripts, read \
     /api/v1/snapshot (JSON) or /metrics of `golens run`, or use `golens list --agent URL`"
}

async fn run(
    app: &mut App,
    base_url: &str,
    tls: ureq::tls::TlsConfig,
    mut local: Option<&mut LocalAgent>,
) -> Result<()> {
    let mut feed = feed::spawn(base_url.to_string(), tls).context("starting the feed reader")?;
    // The first snapshot before the terminal is taken over: an agent that
    // cannot be reached, or speaks another schema, is a plain error message.
    let first = tokio::time::timeout(FIRST_SNAPSHOT_TIMEOUT, feed.recv()).await;
    match first {
        Ok(Some(FeedEvent::Snapshot(snapshot))) => app.apply(*snapshot),
        Ok(Some(FeedEvent::Lost(error))) => {
            if let Some(failure) = local.as_mut().and_then(|agent| agent.failure()) {
                bail!("{failure}");
            }
            return Err(error.into());
        }
        Ok(None) => bail!("the feed reader stopped before the first snapshot"),
        Err(_) => bail!(
            "no snapshot from {} within {} s",
            feed::redacted(&feed::stream_url(base_url)),
            FIRST_SNAPSHOT_TIMEOUT.as_secs()
        ),
    }
    if !std::io::stdout().is_terminal() {
        bail!("{}", not_a_terminal());
    }

    let mut terminal = Terminal::take_over().context("setting up the terminal")?;
    let stop_input = Arc::new(AtomicBool::new(false));
    let _stop_input_on_exit = SetOnDrop(stop_input.clone());
    let mut inputs = event::spawn_reader(stop_input).context("starting the input reader")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));

    loop {
        terminal.draw(app)?;
        tokio::select! {
            input = inputs.recv() => match input {
                Some(Input::Key(key)) => {
                    if let Some(action) = event::action(key, app.filtering) {
                        if !app.handle(action) {
                            return Ok(());
                        }
                    }
                }
                Some(Input::Resize) => {}
                None => bail!("the terminal input stopped"),
            },
            update = feed.recv() => match update {
                Some(FeedEvent::Snapshot(snapshot)) => app.apply(*snapshot),
                Some(FeedEvent::Lost(error)) if error.is_fatal() => return Err(error.into()),
                Some(FeedEvent::Lost(error)) => app.status = Some(lost(&error)),
                None => bail!("the feed reader stopped"),
            },
            _ = tick.tick() => {
                if let Some(failure) = local.as_mut().and_then(|agent| agent.failure()) {
                    bail!("{failure}");
                }
            }
            _ = terminate.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
        }
    }
}

fn lost(error: &FeedError) -> String {
    format!("feed lost ({error}); reconnecting")
}

/// Sets the flag when dropped (stops the input thread on every way out).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The terminal in raw mode on the alternate screen, given back as it was
/// when dropped; a panic restores it too, before its message is printed.
struct Terminal {
    /// Frames are written whole (one write per frame, not one per line),
    /// so the terminal never shows half a frame.
    terminal: ratatui::Terminal<CrosstermBackend<BufWriter<Stdout>>>,
}

impl Terminal {
    fn take_over() -> std::io::Result<Terminal> {
        install_panic_hook();
        TERMINAL_TAKEN.store(true, Ordering::Release);
        if let Err(error) = crossterm::terminal::enable_raw_mode() {
            restore_terminal();
            return Err(error);
        }
        let terminal = crossterm::execute!(stdout(), EnterAlternateScreen).and_then(|()| {
            let backend = CrosstermBackend::new(BufWriter::with_capacity(1 << 16, stdout()));
            ratatui::Terminal::new(backend)
        });
        match terminal {
            Ok(terminal) => Ok(Terminal { terminal }),
            Err(error) => {
                restore_terminal();
                Err(error)
            }
        }
    }

    fn draw(&mut self, app: &mut App) -> std::io::Result<()> {
        self.terminal.draw(|frame| ui::draw(frame, app))?;
        Ok(())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Whether golens top has the terminal (raw mode, alternate screen).
static TERMINAL_TAKEN: AtomicBool = AtomicBool::new(false);

/// Cooked mode, the main screen, the cursor shown: the terminal as the
/// shell left it. Done once: a panic restores, then the unwinding drops the
/// Terminal, and a second leave of the alternate screen would move the
/// cursor back over the panic's message.
fn restore_terminal() {
    if TERMINAL_TAKEN.swap(false, Ordering::AcqRel) {
        let _ = crossterm::terminal::disable_raw_mode();
        let _ = crossterm::execute!(stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
    }
}

/// On a panic, the terminal is restored before the message is printed (in
/// raw mode on the alternate screen it would be lost, and the shell left
/// unusable); the previous hook then prints it as usual.
fn install_panic_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}
