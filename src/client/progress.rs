//! Where progress bars draw: stderr when it is a terminal, and with `-b` also when it is not
//! (indicatif alone hides bars on a non-terminal, so a forced bar needs its own target).
//!
//! Invariant: a bar is drawn only on stderr; stdout stays for what a command prints as its result.

use std::io;

use indicatif::{ProgressDrawTarget, TermLike};

/// stderr, drawn even when it is a pipe or a file: the same escape sequences as on a terminal.
#[derive(Debug)]
struct ForcedStderr(console::Term);

impl TermLike for ForcedStderr {
    fn width(&self) -> u16 {
        TermLike::width(&self.0)
    }
    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        TermLike::move_cursor_up(&self.0, n)
    }
    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        TermLike::move_cursor_down(&self.0, n)
    }
    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        TermLike::move_cursor_right(&self.0, n)
    }
    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        TermLike::move_cursor_left(&self.0, n)
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        TermLike::write_line(&self.0, s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        TermLike::write_str(&self.0, s)
    }
    fn clear_line(&self) -> io::Result<()> {
        TermLike::clear_line(&self.0)
    }
    fn flush(&self) -> io::Result<()> {
        TermLike::flush(&self.0)
    }
}

/// The draw target of a bar the caller decided to show.
pub fn stderr_target() -> ProgressDrawTarget {
    use std::io::IsTerminal;
    if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(ForcedStderr(console::Term::stderr())), 5)
    }
}
