//! `golens top`'s drawing: the layout of one frame from an `App`. Tested by
//! rendering into ratatui's `TestBackend` and reading the text back.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph, Wrap},
    Frame,
};

use super::{
    app::{App, COLUMNS, MISSING, NO_EVENTS},
    event::{FILTER_KEYS, KEYS},
    widgets::{detail::DetailPane, process_table::ProcessTable},
};

pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// "30s", "1m", "1m30s".
pub fn format_window(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area);
        return;
    }
    let detail_height = 12.max(area.height * 2 / 5);
    let [title, status, table, detail, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(detail_height),
        Constraint::Length(1),
    ])
    .areas(area);
    app.page_rows = table.height.saturating_sub(1) as usize;

    frame.render_widget(title_line(app), title);
    frame.render_widget(status_line(app), status);
    let rows = app.rows();
    let empty_message = if app.process_count() == 0 {
        if app.latest().is_none() {
            "waiting for the first snapshot…".to_string()
        } else {
            "no Go process is watched (yet)".to_string()
        }
    } else {
        format!("no process matches \"{}\" (Esc clears the filter)", app.filter)
    };
    frame.render_widget(
        ProcessTable {
            rows: &rows,
            sort: app.sort,
            selected: app.selected_index(&rows),
            empty_message,
            selected_style: Style::default().add_modifier(Modifier::REVERSED),
            header_style: Style::default().bold().fg(Color::Cyan),
        },
        table,
    );
    let detail_empty = if rows.is_empty() && app.process_count() > 0 {
        "no process matches the filter (Esc clears it)"
    } else if rows.is_empty() {
        "a process shows here once the agent watches one"
    } else {
        "select a process with ↑↓"
    };
    frame.render_widget(
        DetailPane { detail: app.detail(), window: app.window, empty_message: detail_empty },
        detail,
    );
    frame.render_widget(footer_line(app), footer);
    if app.show_help {
        draw_help(frame, area);
    }
}

fn title_line(app: &App) -> Line<'static> {
    let mut spans = vec![Span::raw("golens top").bold().fg(Color::Cyan), Span::raw(" · ")];
    spans.push(Span::raw(app.source.clone()));
    match app.latest() {
        None => spans.push(Span::raw(" · waiting for the first snapshot")),
        Some(snapshot) => {
            let shown = app.rows().len();
            let total = app.process_count();
            let processes = if shown == total {
                format!(" · {total} process{}", if total == 1 { "" } else { "es" })
            } else {
                format!(" · {shown} of {total} processes")
            };
            spans.push(Span::raw(processes));
            spans.push(Span::raw(format!(" · collection {}", snapshot.agent.collections)));
        }
    }
    Line::from(spans)
}

fn status_line(app: &App) -> Line<'static> {
    let arrow = if app.descending { "▼" } else { "▲" };
    let mut spans = vec![Span::raw(format!(
        "window {} · sort {} {arrow}",
        format_window(app.window),
        app.sort.header()
    ))];
    if app.filtering || !app.filter.is_empty() {
        spans.push(Span::raw(" · filter "));
        let cursor = if app.filtering { "▏" } else { "" };
        spans.push(Span::raw(format!("/{}{cursor}", app.filter)).fg(Color::Yellow));
    }
    if let Some(status) = &app.status {
        spans.push(Span::raw(" · "));
        spans.push(Span::raw(status.clone()).fg(Color::Red).bold());
    } else if let Some(degraded) = app.latest().and_then(|s| s.agent.degraded.clone()) {
        spans.push(Span::raw(" · "));
        let hint = if app.local_agent { " (run golens top as root)" } else { "" };
        spans.push(Span::raw(format!("agent without eBPF{hint}: {degraded}")).fg(Color::Red));
    }
    Line::from(spans)
}

fn footer_line(app: &App) -> Line<'static> {
    let keys = if app.filtering { FILTER_KEYS } else { KEYS };
    let mut spans = Vec::new();
    for (key, what) in keys {
        spans.push(Span::raw(format!(" {key}")).bold().fg(Color::Cyan));
        spans.push(Span::raw(format!(" {what} ")));
    }
    spans.push(Span::raw(format!("  {MISSING} not measured")).dark_gray());
    Line::from(spans)
}

fn draw_too_small(frame: &mut Frame, area: Rect) {
    let text = format!(
        "golens top needs a terminal of at least {MIN_WIDTH}x{MIN_HEIGHT}; this one is {}x{}. \
         Enlarge it, or press q to quit.",
        area.width, area.height
    );
    let height = 3.min(area.height);
    let middle = Rect { y: area.y + area.height.saturating_sub(height) / 2, height, ..area };
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).centered(), middle);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = COLUMNS
        .iter()
        .map(|(_, header, _, help)| {
            Line::from(vec![Span::raw(format!("{header:>7}  ")).bold(), Span::raw(*help)])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(format!(
        "Durations are the upper bound of their log2 bucket. {MISSING}: the process cannot \
         supply it (probe off, or one snapshot so far); {NO_EVENTS}: measured, no event. \
         The sparklines show the p99 of each collection interval."
    )));
    let width = 76.min(area.width);
    let height = (lines.len() as u16 + 4).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" columns (? or Esc closes) ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::tui::app::{fixtures::*, Action, Column};

    /// The screen's text, one string per line.
    fn render(app: &mut App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>())
            .collect()
    }

    fn line_of(screen: &[String], pid: u32) -> &str {
        let pid = pid.to_string();
        screen
            .iter()
            .find(|line| line.split_whitespace().next() == Some(pid.as_str()))
            .unwrap_or_else(|| panic!("no row for pid {pid}:\n{}", screen.join("\n")))
    }

    fn pids_in_order(screen: &[String]) -> Vec<u32> {
        screen[3..]
            .iter()
            .take_while(|line| !line.starts_with('┌'))
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect()
    }

    #[test]
    fn layout_at_80x24() {
        let mut app = app_with_two_snapshots();
        let screen = render(&mut app, 80, 24);
        let text = screen.join("\n");
        assert!(
            screen[0].starts_with(
                "golens top · agent at http://127.0.0.1:9477 · 3 processes · collection 8"
            ),
            "{text}"
        );
        assert!(screen[1].starts_with("window 30s · sort STW99 ▼"), "{text}");
        let header: Vec<&str> = screen[2].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "PID", "COMM", "GO", "GC/s", "STW99", "STWmax", "TTS99", "RQ99", "INV/s", "VMA%",
                "FD%", "THR"
            ]
        );
        let api: Vec<&str> = line_of(&screen, 101).split_whitespace().collect();
        assert_eq!(
            api,
            [
                "101", "api", "1.27.3", "4.0", "131µs", "2.1ms", "2.0µs", "8.4ms", "1.5k", "1.0",
                "6.2", "0.25"
            ]
        );
        // Every column fits: the last one ends at the screen's edge.
        assert!(line_of(&screen, 101).ends_with("0.25"), "{text}");
        // The detail pane of the selected process (101, first by STW p99).
        assert!(text.contains("101 api · go1.27.3 · /srv/api"), "{text}");
        assert!(text.contains("STW pauses, last 1s: 100"), "the window so far: {text}");
        // With fewer rows than slots, the lowest row holds every slot below its bound.
        assert!(text.contains("≤65.5µs ████████████████████████     98"), "{text}");
        assert!(text.contains("STW p99 131µs · peak 131µs"), "{text}");
        assert!(text.contains("run-queue p99 8.4ms · peak 8.4ms"), "{text}");
        assert!(text.contains("probes: 6/6 attached"), "{text}");
        // Where its time went, on the pane's first two lines.
        let verdict: String = screen
            .iter()
            .skip_while(|line| !line.contains("where the time went"))
            .take(3)
            .map(|line| line.trim_matches(|c| c == '│' || c == ' '))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            verdict.starts_with(
                "where the time went, last 1s: stopped 0.3 % (GC), waiting for CPU 15.0 %, \
                 throttled 25.0 %: mostly CPU throttling by the cgroup quota · worst pause ≤ \
                 2.1ms, 0s ago"
            ),
            "{text}"
        );
        // Keys on screen.
        let footer = &screen[23];
        for key in ["q quit", "s sort", "/ filter", "? help"] {
            assert!(footer.contains(key), "footer lacks {key}: {footer}");
        }
        assert!(screen.iter().all(|line| line.chars().count() == 80));
    }

    #[test]
    fn missing_values_are_dashes() {
        let mut app = app_with_two_snapshots();
        let screen = render(&mut app, 80, 24);
        let bare: Vec<&str> = line_of(&screen, 303).split_whitespace().collect();
        assert_eq!(bare, ["303", "bare", "unknown", "–", "–", "–", "–", "–", "–", "–", "–", "–"]);
        let worker: Vec<&str> = line_of(&screen, 202).split_whitespace().collect();
        assert_eq!(&worker[3..6], ["1.0", "none", "none"], "measured, no pause: not a dash");
        assert!(!line_of(&screen, 303).contains(" 0"), "never 0 for what is missing");

        // The detail of a process without probes says why.
        app.selected = Some(303);
        let text = render(&mut app, 80, 24).join("\n");
        assert!(text.contains("stop-the-world pauses: –"), "{text}");
        assert!(text.contains("probes: 0/0 attached"), "{text}");
        assert!(text.contains("run-queue p99: – (probe off)"), "{text}");
        assert!(text.contains("stopped – (GC), waiting for CPU –, throttled –:"), "{text}");
        assert!(text.contains("nothing could be measured"), "{text}");
        assert!(text.contains("its stop-the-world probes are not"), "{text}");
        assert!(text.contains("attached (see probes)"), "wrapped, not cut: {text}");
    }

    #[test]
    fn sorting_reorders_the_rows_and_says_by_what() {
        let mut app = app_with_two_snapshots();
        assert_eq!(pids_in_order(&render(&mut app, 80, 24)), [101, 202, 303]);
        while app.sort != Column::InvoluntaryPerSecond {
            app.handle(Action::NextSort);
        }
        app.handle(Action::ReverseSort);
        let screen = render(&mut app, 80, 24);
        assert!(screen[1].contains("sort INV/s ▲"), "{}", screen[1]);
        assert_eq!(pids_in_order(&screen), [202, 101, 303], "ascending, – last");
        app.handle(Action::NextSort); // VMA%
        app.handle(Action::NextSort); // FD%
        let screen = render(&mut app, 80, 24);
        assert!(screen[1].contains("sort FD% ▼"), "{}", screen[1]);
        assert_eq!(pids_in_order(&screen), [202, 101, 303], "900 of 1024 fds first");
    }

    #[test]
    fn filtering_shows_what_is_typed_and_the_matching_rows() {
        let mut app = app_with_two_snapshots();
        app.handle(Action::StartFilter);
        for c in "work".chars() {
            app.handle(Action::FilterPush(c));
        }
        let screen = render(&mut app, 80, 24);
        let text = screen.join("\n");
        assert!(screen[1].contains("filter /work▏"), "{text}");
        assert!(screen[0].contains("1 of 3 processes"), "{text}");
        assert_eq!(pids_in_order(&screen), [202]);
        assert!(screen[23].contains("Enter keep") && screen[23].contains("Esc clear"), "{text}");
        assert!(text.contains("202 worker · go1.27.3"), "the detail follows the filter:\n{text}");

        for c in "zzz".chars() {
            app.handle(Action::FilterPush(c));
        }
        let text = render(&mut app, 80, 24).join("\n");
        assert!(text.contains("no process matches \"workzzz\""), "{text}");
        assert!(text.contains("no process selected"), "{text}");
    }

    #[test]
    fn a_small_terminal_gets_a_message_not_a_broken_layout() {
        let mut app = app_with_two_snapshots();
        for (width, height) in [(79, 24), (80, 23), (40, 10)] {
            let text = render(&mut app, width, height).join(" ");
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                text.contains(&format!(
                    "needs a terminal of at least 80x24; this one is {width}x{height}"
                )),
                "{width}x{height}: {text}"
            );
            assert!(!text.contains("PID"), "{text}");
        }
    }

    #[test]
    fn a_wider_terminal_gives_comm_the_room() {
        let (mut before, mut after) = two_snapshots();
        for snapshot in [&mut before, &mut after] {
            snapshot.processes[0].comm = "a-long-comm-123".into();
        }
        let mut app = App::new("test", std::time::Duration::from_secs(30));
        app.apply(before);
        app.apply(after);
        let screen = render(&mut app, 120, 30);
        assert!(line_of(&screen, 101).contains("a-long-comm-123"));
        let screen = render(&mut app, 80, 24);
        assert!(!line_of(&screen, 101).contains("a-long-comm-123"), "cut at 80 columns");
    }

    #[test]
    fn before_the_first_snapshot_it_says_it_waits() {
        let mut app = App::new("local agent", std::time::Duration::from_secs(30));
        let text = render(&mut app, 80, 24).join("\n");
        assert!(text.contains("waiting for the first snapshot"), "{text}");
    }

    #[test]
    fn help_lists_every_column() {
        let mut app = app_with_two_snapshots();
        app.handle(Action::ToggleHelp);
        let text = render(&mut app, 80, 24).join("\n");
        for (_, header, _, help) in COLUMNS {
            assert!(text.contains(help), "help lacks {header}: {text}");
        }
        app.handle(Action::FilterClear);
        assert!(!render(&mut app, 80, 24).join("\n").contains("columns (? or Esc closes)"));
    }

    #[test]
    fn a_degraded_agent_and_a_lost_feed_are_said() {
        let mut app = app_with_two_snapshots();
        let (_, mut degraded) = two_snapshots();
        degraded.timestamp += 1.0;
        degraded.agent.degraded = Some("missing capability CAP_BPF".into());
        app.apply(degraded);
        let screen = render(&mut app, 80, 24);
        assert!(
            screen[1].contains("agent without eBPF: missing capability CAP_BPF"),
            "{}",
            screen[1]
        );
        app.local_agent = true;
        let screen = render(&mut app, 80, 24);
        assert!(screen[1].contains("agent without eBPF (run golens top as root)"), "{}", screen[1]);
        app.status = Some("connection lost: refused; retrying".into());
        let screen = render(&mut app, 80, 24);
        assert!(screen[1].contains("connection lost"), "{}", screen[1]);
    }

    #[test]
    fn windows_read_naturally() {
        assert_eq!(format_window(30.0), "30s");
        assert_eq!(format_window(60.0), "1m");
        assert_eq!(format_window(90.0), "1m30s");
    }
}
