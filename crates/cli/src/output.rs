//! Printing that ends quietly when the reader goes away. `planoai status |
//! head -1` closes the pipe early; that is a normal end, not a panic with a
//! backtrace (what `println!` does), so every line goes through `outln!` or
//! `errln!`, and `main` exits 0 on [`ReaderGone`], as ripgrep does.

use std::fmt;
use std::io;

/// stdout or stderr was closed by its reader.
#[derive(Debug)]
pub struct ReaderGone;

impl fmt::Display for ReaderGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the output's reader went away")
    }
}

impl std::error::Error for ReaderGone {}

/// A write's result, with a closed pipe turned into [`ReaderGone`].
pub fn check(result: io::Result<()>) -> anyhow::Result<()> {
    result.map_err(|e| match e.kind() {
        io::ErrorKind::BrokenPipe => anyhow::Error::new(ReaderGone),
        _ => anyhow::Error::new(e).context("cannot write the output"),
    })
}

/// Whether stdout's reader has gone (`planoai logs -f | head -2` after its
/// two lines) while nothing is written: a pipe whose reading end is closed
/// polls as an error. A terminal or a file never does.
pub fn reader_gone() -> bool {
    let mut out = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and a zero timeout.
    let ready = unsafe { libc::poll(&mut out, 1, 0) };
    ready > 0 && out.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// `println!` that returns `anyhow::Result<()>` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::check({
            use std::io::Write as _;
            writeln!(std::io::stdout(), $($arg)*)
        })
    };
}

/// `eprintln!` that returns `anyhow::Result<()>` instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::check({
            use std::io::Write as _;
            writeln!(std::io::stderr(), $($arg)*)
        })
    };
}

/// A one-line progress note on stderr, redrawn in place, for a person at a
/// terminal; nothing at all when stderr is a pipe or a file (CI, scripts).
pub struct Progress {
    on: bool,
}

impl Progress {
    pub fn on_terminal() -> Progress {
        use std::io::IsTerminal;
        Progress {
            on: io::stderr().is_terminal(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn show(&self, text: &str) {
        if self.on {
            use std::io::Write;
            let _ = write!(io::stderr(), "\r\x1b[2K{text}");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.show("");
    }
}
