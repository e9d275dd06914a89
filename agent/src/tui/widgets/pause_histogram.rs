//! Stop-the-world pauses of the window, one row per log2 slot, labelled by
//! its upper bound ("≤131µs"): the shape of the pauses, not only their p99.

use ratatui::{buffer::Buffer, layout::Rect, style::Style, widgets::Widget};

use crate::{snapshot::Log2Histogram, tui::app::format_duration};

/// Eighths of a cell, for bars finer than a character.
const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
const LABEL_WIDTH: u16 = 8;
const COUNT_WIDTH: u16 = 7;

pub struct PauseHistogram<'a> {
    /// Pauses counted per slot over the window.
    pub slots: &'a [u64],
    pub bar_style: Style,
}

impl PauseHistogram<'_> {
    /// The rows shown in `height` lines: `(slot, count)` from the lowest
    /// slot with a pause to the highest. When they do not fit, the lowest
    /// slots fold into the first row shown, whose "≤" label stays true.
    pub fn rows(slots: &[u64], height: usize) -> Vec<(usize, u64)> {
        let (Some(low), Some(high)) =
            (slots.iter().position(|&c| c > 0), slots.iter().rposition(|&c| c > 0))
        else {
            return Vec::new();
        };
        if height == 0 {
            return Vec::new();
        }
        let first = low.max(high.saturating_sub(height - 1));
        let folded: u64 = slots[..first].iter().sum();
        (first..=high)
            .map(|slot| (slot, slots[slot] + if slot == first { folded } else { 0 }))
            .collect()
    }
}

impl Widget for PauseHistogram<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let rows = Self::rows(self.slots, area.height as usize);
        let Some(max) = rows.iter().map(|r| r.1).max().filter(|&m| m > 0) else { return };
        let bar_width = area.width.saturating_sub(LABEL_WIDTH + COUNT_WIDTH);
        for (line, (slot, count)) in rows.into_iter().enumerate() {
            let y = area.y + line as u16;
            let label =
                format!("≤{}", format_duration(Log2Histogram::slot_upper_bound_seconds(slot)));
            buf.set_stringn(
                area.x,
                y,
                format!("{label:>7} "),
                LABEL_WIDTH as usize,
                Style::default(),
            );
            // A slot with pauses shows at least a sliver.
            let eighths = (count as u128 * u128::from(bar_width) * 8 / u128::from(max)) as usize;
            let eighths = if count > 0 { eighths.max(1) } else { 0 };
            let bar = format!("{}{}", "█".repeat(eighths / 8), EIGHTHS[eighths % 8]);
            buf.set_stringn(area.x + LABEL_WIDTH, y, &bar, bar_width as usize, self.bar_style);
            let count_text = format!("{count:>width$}", width = COUNT_WIDTH as usize);
            buf.set_stringn(
                area.x + LABEL_WIDTH + bar_width,
                y,
                count_text,
                COUNT_WIDTH as usize,
                Style::default(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_span_the_slots_with_pauses_and_fold_what_does_not_fit() {
        let mut slots = vec![0; 38];
        slots[10] = 3;
        slots[14] = 98;
        slots[20] = 1;
        let rows = PauseHistogram::rows(&slots, 20);
        assert_eq!(rows.len(), 11);
        assert_eq!((rows[0], rows[4], rows[10]), ((10, 3), (14, 98), (20, 1)));
        let rows = PauseHistogram::rows(&slots, 4);
        assert_eq!(
            rows,
            [(17, 101), (18, 0), (19, 0), (20, 1)],
            "slots 10 and 14 fold into ≤ slot 17"
        );
        assert!(PauseHistogram::rows(&[0; 38], 10).is_empty());
    }

    #[test]
    fn renders_labels_bars_and_counts() {
        let mut slots = vec![0; 38];
        slots[14] = 98;
        slots[16] = 1;
        let area = Rect::new(0, 0, 30, 3);
        let mut buf = Buffer::empty(area);
        PauseHistogram { slots: &slots, bar_style: Style::default() }.render(area, &mut buf);
        let line = |y: u16| (0..30).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>();
        assert_eq!(line(0), "≤32.8µs ███████████████     98");
        assert_eq!(line(1), format!("≤65.5µs {:15}{:>7}", "", 0));
        assert_eq!(line(2), format!(" ≤131µs ▏{:14}{:>7}", "", 1));
    }
}
