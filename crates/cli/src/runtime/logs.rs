//! `planoai logs`: the gateway's lines from Envoy's log, natively or from
//! the container, secrets redacted.

use std::process::Command;

use anyhow::{bail, Context, Result};

use super::state::read_state;
use super::{Mode, CONTAINER};
use crate::logfile;
use crate::logline;
use crate::redact::redact;

#[derive(Debug, Clone, Copy)]
pub enum LogFormat {
    /// The gateway's own lines, an attempt's as its fields.
    Gateway,
    /// The same as JSON lines.
    Json,
    /// Envoy's raw log.
    Envoy,
}

/// One line of Envoy's log as `format` shows it, redacted; `None` to skip it.
fn show(line: &str, format: LogFormat) -> Option<String> {
    let line = redact(line);
    match format {
        LogFormat::Envoy => Some(line),
        LogFormat::Gateway => logline::parse(&line).map(|l| l.text()),
        LogFormat::Json => logline::parse(&line).map(|l| l.json().to_string()),
    }
}

pub fn print_logs(follow: bool, lines: usize, format: LogFormat) -> Result<()> {
    let Some(state) = read_state() else {
        bail!("no gateway is running (start one with `planoai up CONFIG`)");
    };
    // Raw, the last `lines` are Envoy's; otherwise the gateway's, found among all kept.
    let raw_lines = match format {
        LogFormat::Envoy => lines,
        _ => usize::MAX,
    };
    match state.mode {
        Mode::Docker => {
            let n = match raw_lines {
                usize::MAX => "all".to_string(),
                n => n.to_string(),
            };
            let mut args = vec!["logs", "--tail", n.as_str()];
            if follow {
                args.push("-f");
            }
            // Both of the container's streams, in order.
            let (reader, writer) = std::io::pipe()?;
            let child = Command::new("docker")
                .args(&args)
                .arg(CONTAINER)
                .stdout(writer.try_clone()?)
                .stderr(writer)
                .spawn()
                .context("cannot run `docker logs`")?;
            // Stopped however this ends, a closed output included.
            let mut child = KillOnDrop(child);
            use std::io::BufRead;
            let reader = std::io::BufReader::new(reader).lines();
            if follow {
                for line in reader {
                    if let Some(l) = show(&line?, format) {
                        outln!("{l}")?;
                    }
                }
            } else {
                let mut shown = std::collections::VecDeque::new();
                for line in reader {
                    if let Some(l) = show(&line?, format) {
                        shown.push_back(l);
                        if shown.len() > lines {
                            shown.pop_front();
                        }
                    }
                }
                for l in shown {
                    outln!("{l}")?;
                }
            }
            child.0.wait()?;
        }
        Mode::Native => {
            let text = logfile::tail(&state.log, raw_lines);
            let shown: Vec<String> = text.lines().filter_map(|l| show(l, format)).collect();
            for l in &shown[shown.len().saturating_sub(lines)..] {
                outln!("{l}")?;
            }
            if follow {
                logfile::follow(
                    &state.log,
                    // A quiet gateway writes nothing that would find the reader gone.
                    || read_state().is_some() && !crate::output::reader_gone(),
                    |chunk| {
                        for l in chunk.lines().filter_map(|l| show(l, format)) {
                            outln!("{l}")?;
                        }
                        Ok(())
                    },
                )?;
            }
        }
    }
    Ok(())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
