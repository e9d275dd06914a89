//! The selected process: where its time went over the window (the verdict),
//! its pauses over the window (histogram), the p99 of each interval over time
//! (sparklines), and its probes (attached, or why not).

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, Paragraph, Sparkline, Widget, Wrap},
};

use super::pause_histogram::PauseHistogram;
use crate::tui::app::{format_duration, Detail, IntervalPoint};

pub struct DetailPane<'a> {
    pub detail: Option<Detail<'a>>,
    /// Seconds rates and quantiles look back (--window).
    pub window: f64,
    /// Shown when no process is selected.
    pub empty_message: &'a str,
}

impl Widget for DetailPane<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let Some(detail) = self.detail else {
            let block = Block::bordered().title(" no process selected ");
            let inner = block.inner(area);
            block.render(area, buf);
            Paragraph::new(self.empty_message).dark_gray().render(inner, buf);
            return;
        };
        let process = detail.process;
        let title = format!(
            " {} {} · {} · {} ",
            process.pid, process.comm, process.go_version, process.exe
        );
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        let window = detail.span_seconds.unwrap_or(self.window);
        let verdict = verdict_line(&detail, window);
        // Word wrapping leaves some of each line empty: room for a few more characters.
        let wrapped = (verdict.width() + 12).div_ceil(usize::from(inner.width.max(1)));
        let [verdict_area, rest] = Layout::vertical([
            Constraint::Length(wrapped.clamp(1, MAX_VERDICT_LINES) as u16),
            Constraint::Min(0),
        ])
        .areas(inner);
        Paragraph::new(verdict).wrap(Wrap { trim: true }).render(verdict_area, buf);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .spacing(1)
                .areas(rest);
        render_pauses(&detail, window, left, buf);
        render_right(&detail, right, buf);
    }
}

fn window_text(window: f64) -> String {
    format!("last {}", crate::tui::ui::format_window(window))
}

/// Lines the verdict may take at the top of the pane (three at 80 columns).
const MAX_VERDICT_LINES: usize = 3;

/// "where the time went, last 30s: stopped 0.8 % (GC), waiting for CPU 6.1 %, throttled
/// 0.0 %: mostly the scheduler (waiting for a CPU) · worst pause ≤ 2.1ms, 12s ago".
fn verdict_line(detail: &Detail, window: f64) -> Line<'static> {
    let Some(shares) = detail.shares else {
        return Line::from("where the time went: waiting for a second snapshot").dark_gray();
    };
    let percent = crate::verdict::percent;
    let mut spans = vec![
        Span::raw(format!("where the time went, {}: ", window_text(window))),
        Span::raw(format!(
            "stopped {} (GC), waiting for CPU {}, throttled {}: ",
            percent(shares.stopped),
            percent(shares.waiting),
            percent(shares.throttled)
        )),
        Span::raw(shares.conclusion()).bold(),
    ];
    if let Some((worst, ago)) = detail.worst_pause {
        spans.push(Span::raw(format!(
            " · worst pause ≤ {}, {} ago",
            format_duration(worst),
            crate::tui::ui::format_window(ago)
        )));
    }
    Line::from(spans)
}

fn render_pauses(detail: &Detail, window: f64, area: Rect, buf: &mut Buffer) {
    let [title, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let message = |text: String, buf: &mut Buffer| {
        Paragraph::new(text).dark_gray().wrap(Wrap { trim: true }).render(body, buf)
    };
    match &detail.pause_slots {
        _ if !detail.stw_measured => {
            Line::from("stop-the-world pauses: –").render(title, buf);
            message("its stop-the-world probes are not attached (see probes)".into(), buf);
        }
        None => {
            Line::from("stop-the-world pauses").render(title, buf);
            message("waiting for a second snapshot".into(), buf);
        }
        Some(slots) => {
            let count: u64 = slots.iter().sum();
            Line::from(vec![
                Span::raw(format!("STW pauses, {}: ", window_text(window))),
                Span::raw(count.to_string()).bold(),
            ])
            .render(title, buf);
            if count == 0 {
                message(format!("no stop-the-world pause in the {}", window_text(window)), buf);
            } else {
                PauseHistogram { slots, bar_style: Style::default().fg(Color::Yellow) }
                    .render(body, buf);
            }
        }
    }
}

fn render_right(detail: &Detail, area: Rect, buf: &mut Buffer) {
    let [stw_title, stw_spark, runq_title, runq_spark, probes] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Min(0),
    ])
    .areas(area);
    let points: Vec<&IntervalPoint> = detail.points.iter().collect();
    let series = [
        (
            "STW p99",
            detail.stw_measured,
            stw_title,
            stw_spark,
            Color::Yellow,
            points.iter().map(|p| p.stw_p99).collect::<Vec<_>>(),
        ),
        (
            "run-queue p99",
            detail.runqueue_measured,
            runq_title,
            runq_spark,
            Color::Cyan,
            points.iter().map(|p| p.runqueue_p99).collect(),
        ),
    ];
    for (name, measured, title, spark, color, values) in series {
        if !measured {
            Line::from(format!("{name}: – (probe off)")).render(title, buf);
            continue;
        }
        let last = values.last().copied().flatten();
        let peak = values
            .iter()
            .flatten()
            .copied()
            .fold(None, |max: Option<f64>, v| Some(max.map_or(v, |m| m.max(v))));
        let text = |value: Option<f64>| value.map_or("none".to_string(), format_duration);
        Line::from(vec![
            Span::raw(format!("{name} ")),
            Span::raw(text(last)).bold(),
            Span::raw(format!(" · peak {}", text(peak))),
        ])
        .render(title, buf);
        // The newest points that fit, in nanoseconds; an interval with no
        // event is a gap, not a zero.
        let shown = values.len().saturating_sub(spark.width as usize);
        let bars: Vec<Option<u64>> =
            values[shown..].iter().map(|v| v.map(|s| (s * 1e9) as u64)).collect();
        Sparkline::default()
            .data(bars)
            .style(Style::default().fg(color))
            .absent_value_symbol("·")
            .render(spark, buf);
    }
    render_probes(detail, probes, buf);
}

fn render_probes(detail: &Detail, area: Rect, buf: &mut Buffer) {
    let probes = &detail.process.probes;
    let attached = probes.iter().filter(|p| p.attached).count();
    let mut lines = vec![Line::from(format!("probes: {attached}/{} attached", probes.len()))];
    if probes.is_empty() {
        lines.push(
            Line::from("no runtime probe (goruntime off, or the agent is degraded)").dark_gray(),
        );
    }
    for probe in probes.iter().filter(|p| !p.attached) {
        let reason = probe.reason.as_deref().unwrap_or("not attached");
        lines.push(Line::from(vec![
            Span::raw("✗ ").red(),
            Span::raw(format!("{}: {reason}", probe.probe)),
        ]));
    }
    let names: Vec<&str> = probes.iter().filter(|p| p.attached).map(|p| p.probe.as_str()).collect();
    if !names.is_empty() {
        lines.push(Line::from(vec![Span::raw("✓ ").green(), Span::raw(names.join(" "))]));
    }
    Paragraph::new(lines).wrap(Wrap { trim: true }).render(area, buf);
}
