//! `golens top`'s input: terminal events read on their own thread, and the
//! keys mapped to `app::Action`s (a pure function, tested).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use super::app::Action;

/// What the terminal tells the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Key(KeyEvent),
    /// The terminal changed size: draw again.
    Resize,
}

/// The key bindings shown in the footer, in the order shown.
pub const KEYS: &[(&str, &str)] = &[
    ("q", "quit"),
    ("↑↓/jk", "select"),
    ("s", "sort"),
    ("r", "reverse"),
    ("/", "filter"),
    ("?", "help"),
];

/// The bindings while a filter is typed.
pub const FILTER_KEYS: &[(&str, &str)] =
    &[("type", "comm or pid"), ("Enter", "keep"), ("Esc", "clear"), ("Ctrl-C", "quit")];

/// The action of a key; `filtering`: a filter is being typed, so printable
/// keys are text.
pub fn action(key: KeyEvent, filtering: bool) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
        return Some(Action::Quit);
    }
    if filtering {
        return match key.code {
            KeyCode::Enter => Some(Action::FilterKeep),
            KeyCode::Esc => Some(Action::FilterClear),
            KeyCode::Backspace => Some(Action::FilterPop),
            KeyCode::Up => Some(Action::Up),
            KeyCode::Down => Some(Action::Down),
            KeyCode::Char(c) if !ctrl && !c.is_control() => Some(Action::FilterPush(c)),
            _ => None,
        };
    }
    if ctrl {
        return None;
    }
    Some(match key.code {
        KeyCode::Char('q') | KeyCode::Char('Q') => Action::Quit,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::First,
        KeyCode::End | KeyCode::Char('G') => Action::Last,
        KeyCode::Char('s') => Action::NextSort,
        KeyCode::Char('r') => Action::ReverseSort,
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Char('?') => Action::ToggleHelp,
        // Esc clears a kept filter and closes the help.
        KeyCode::Esc => Action::FilterClear,
        _ => return None,
    })
}

/// Reads terminal events on a thread of its own until `stop` is set (it
/// looks every 100 ms) or the loop is gone.
pub fn spawn_reader(stop: Arc<AtomicBool>) -> std::io::Result<mpsc::Receiver<Input>> {
    let (sender, receiver) = mpsc::channel(64);
    std::thread::Builder::new().name("golens-top-input".into()).spawn(move || {
        while !stop.load(Ordering::Acquire) {
            match crossterm::event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => break,
            }
            let input = match crossterm::event::read() {
                Ok(Event::Key(key)) => Input::Key(key),
                Ok(Event::Resize(..)) => Input::Resize,
                Ok(_) => continue,
                Err(_) => break,
            };
            if sender.blocking_send(input).is_err() {
                break;
            }
        }
    })?;
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_are_commands_outside_a_filter() {
        assert_eq!(action(key(KeyCode::Char('q')), false), Some(Action::Quit));
        assert_eq!(action(key(KeyCode::Char('j')), false), Some(Action::Down));
        assert_eq!(action(key(KeyCode::Up), false), Some(Action::Up));
        assert_eq!(action(key(KeyCode::Char('s')), false), Some(Action::NextSort));
        assert_eq!(action(key(KeyCode::Char('/')), false), Some(Action::StartFilter));
        assert_eq!(action(key(KeyCode::Char('x')), false), None);
    }

    #[test]
    fn keys_are_text_inside_a_filter() {
        assert_eq!(action(key(KeyCode::Char('q')), true), Some(Action::FilterPush('q')));
        assert_eq!(action(key(KeyCode::Char('s')), true), Some(Action::FilterPush('s')));
        assert_eq!(action(key(KeyCode::Enter), true), Some(Action::FilterKeep));
        assert_eq!(action(key(KeyCode::Esc), true), Some(Action::FilterClear));
        assert_eq!(action(key(KeyCode::Backspace), true), Some(Action::FilterPop));
    }

    #[test]
    fn ctrl_c_quits_everywhere() {
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action(ctrl_c, false), Some(Action::Quit));
        assert_eq!(action(ctrl_c, true), Some(Action::Quit));
        let release = KeyEvent { kind: KeyEventKind::Release, ..key(KeyCode::Char('q')) };
        assert_eq!(action(release, false), None, "a key release is not a key press");
    }
}
