//! A progress bar on standard error: points done, rate and time left. On a terminal it redraws
//! one line at most every 200 ms; otherwise it prints a line per tenth of the work.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Progress of `total` units of work, updated from any thread.
pub struct Progress {
    total: usize,
    before: usize,
    done: AtomicUsize,
    start: Instant,
    enabled: bool,
    terminal: bool,
    last: Mutex<(Instant, usize)>,
}

impl Progress {
    /// A bar for `total` units (`before` were finished by an earlier run); silent unless `enabled`.
    pub fn new(total: usize, before: usize, enabled: bool) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            before,
            done: AtomicUsize::new(0),
            start: now,
            enabled,
            terminal: std::io::stderr().is_terminal(),
            last: Mutex::new((now - Duration::from_secs(1), 0)),
        }
    }

    /// One unit finished.
    pub fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.enabled {
            return;
        }
        let mut last = self.last.lock().expect("progress lock");
        let step = (self.total / 10).max(1);
        let due = if self.terminal {
            last.0.elapsed() >= Duration::from_millis(200) || done == self.total
        } else {
            done / step > last.1 / step || done == self.total
        };
        if due {
            *last = (Instant::now(), done);
            let line = self.line(done);
            let mut err = std::io::stderr().lock();
            let _ = if self.terminal {
                write!(
                    err,
                    "\r{line}\x1b[K{}",
                    if done == self.total { "\n" } else { "" }
                )
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        }
    }

    fn line(&self, done: usize) -> String {
        const WIDTH: usize = 30;
        let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let secs = self.start.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let eta = (self.total - done) as f64 / rate.max(1e-9);
        let before = if self.before > 0 {
            format!(" ({} done before)", self.before)
        } else {
            String::new()
        };
        format!(
            "[{}{}] {done}/{} points{before}, {rate:.2} points/s, {} left",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.total,
            clock(eta)
        )
    }
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
