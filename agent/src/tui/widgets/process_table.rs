//! The process table: one row per watched process, the sort column marked,
//! the selected row highlighted, numbers right-aligned.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Rect},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, StatefulWidget, Table, TableState, Widget},
};

use crate::tui::app::{Column, Row, COLUMNS};

pub struct ProcessTable<'a> {
    pub rows: &'a [Row],
    pub sort: Column,
    pub selected: Option<usize>,
    /// Shown instead of an empty table.
    pub empty_message: String,
    pub selected_style: Style,
    pub header_style: Style,
}

fn aligned(text: String, column: Column) -> Line<'static> {
    let line = Line::from(text);
    if column.is_numeric() {
        line.right_aligned()
    } else {
        line
    }
}

impl Widget for ProcessTable<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let widths = COLUMNS.iter().map(|&(column, _, width, _)| {
            if column == Column::Comm {
                Constraint::Min(width)
            } else {
                Constraint::Length(width)
            }
        });
        let header = TableRow::new(COLUMNS.iter().map(|&(column, header, _, _)| {
            let cell = Cell::from(aligned(header.to_string(), column));
            if column == self.sort {
                cell.style(Style::default().add_modifier(Modifier::UNDERLINED | Modifier::BOLD))
            } else {
                cell
            }
        }))
        .style(self.header_style);
        let rows = self.rows.iter().map(|row| {
            TableRow::new(
                COLUMNS.iter().map(|&(column, ..)| Cell::from(aligned(row.cell(column), column))),
            )
        });
        let table = Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .row_highlight_style(self.selected_style);
        let mut state = TableState::default().with_selected(self.selected);
        StatefulWidget::render(table, area, buf, &mut state);
        if self.rows.is_empty() && area.height > 2 {
            let message = Rect { y: area.y + 2, height: 1, ..area };
            Paragraph::new(self.empty_message).centered().render(message, buf);
        }
    }
}
