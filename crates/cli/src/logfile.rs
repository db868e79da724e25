//! The native gateway's log, kept under a size cap. Envoy writes a line per
//! request and the filter one per attempt: about 2 MB a second under load,
//! which fills a disk in hours. So Envoy's stdout and stderr go through a
//! pipe into `planoai log-writer`, which appends to `envoy.log` and, when the
//! next lines would take it past `max_bytes`, renames it to `envoy.log.1`
//! (`.1` to `.2`, and so on) and starts a new one: at most `files` files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub const DEFAULT_MAX_SIZE: &str = "10M";
pub const DEFAULT_MAX_FILES: u32 = 3;

#[derive(Debug, Clone, Copy)]
pub struct LogCap {
    /// Largest size of one file.
    pub max_bytes: u64,
    /// Files kept, the one written to included.
    pub files: u32,
}

/// A size as `docker run --log-opt max-size` takes it: `10M`, `512k`, `2g`, bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size: use bytes, or k, m, g (e.g. 10M)"
            ))
        }
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(n) if n >= 4096 => Ok(n),
        Some(_) => Err(format!("`{text}` is too small: at least 4k")),
        None => Err(format!(
            "`{text}` is not a size: use bytes, or k, m, g (e.g. 10M)"
        )),
    }
}

/// `envoy.log`, `envoy.log.1`, ...: the `k`th newest file.
fn nth(path: &Path, k: u32) -> PathBuf {
    match k {
        0 => path.to_path_buf(),
        k => PathBuf::from(format!("{}.{k}", path.display())),
    }
}

/// The log's files that exist, newest first.
pub fn files(path: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|k| nth(path, k))
        .take_while(|p| p.exists())
        .collect()
}

fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Copies stdin to `path` under `cap` until stdin ends (Envoy exited).
pub fn write(path: &Path, cap: LogCap) -> Result<()> {
    // Ctrl-C reaches the whole foreground group; Envoy's last lines still
    // come through, and the pipe's end tells this process when to stop.
    ctrlc::set_handler(|| {}).context("cannot ignore Ctrl-C")?;
    let mut out = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut size = out.metadata()?.len();
    let mut input = io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(buf.len());
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read Envoy's output"),
        };
        pending.extend_from_slice(&buf[..n]);
        // Whole lines only, so no line is split between two files; a line
        // longer than the buffer goes as it is.
        let end = match pending.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if pending.len() >= buf.len() => pending.len(),
            None => continue,
        };
        // Envoy's debug log prints request headers and paths: the file
        // never holds the keys among them.
        let redacted = crate::redact::redact(&String::from_utf8_lossy(&pending[..end]));
        let end = if redacted.as_bytes() == &pending[..end] {
            end
        } else {
            let len = redacted.len();
            pending.splice(..end, redacted.into_bytes());
            len
        };
        // A burst may hold more than a file's room: its lines are split
        // between files at line ends.
        let mut from = 0;
        while from < end {
            let room = cap.max_bytes.saturating_sub(size) as usize;
            let fits = pending[from..end]
                .iter()
                .take(room)
                .rposition(|&b| b == b'\n')
                .map(|i| from + i + 1);
            let to = match fits {
                Some(to) => to,
                None if size > 0 => {
                    out = rotate(path, cap.files)?;
                    size = 0;
                    continue;
                }
                // A single line longer than a whole file goes as it is.
                None => pending[from..end]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(end, |i| from + i + 1),
            };
            // A failed write (a full disk) loses those lines; it must not
            // stop the copying, or Envoy would block on a full pipe.
            if out.write_all(&pending[from..to]).is_ok() {
                size += (to - from) as u64;
            }
            from = to;
        }
        pending.drain(..end);
    }
    let _ = out.write_all(&pending);
    Ok(())
}

fn rotate(path: &Path, files: u32) -> Result<File> {
    for k in (1..files).rev() {
        let from = nth(path, k - 1);
        if from.exists() {
            fs::rename(&from, nth(path, k))
                .with_context(|| format!("cannot rotate {}", from.display()))?;
        }
    }
    open_new(path).with_context(|| format!("cannot create {}", path.display()))
}

/// The last `lines` lines of the log, across its rotated files.
pub fn tail(path: &Path, lines: usize) -> String {
    let mut kept: Vec<String> = Vec::new();
    for file in files(path) {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let mut these: Vec<String> = text.lines().map(str::to_string).collect();
        these.append(&mut kept);
        kept = these;
        if kept.len() >= lines {
            break;
        }
    }
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// Calls `each` with the whole lines appended to the log until `running`
/// says the gateway is gone, following it across rotations.
pub fn follow(
    path: &Path,
    running: impl Fn() -> bool,
    mut each: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let mut f = open()?;
    let mut pos = f.metadata()?.len();
    let mut chunk: Vec<u8> = Vec::new();
    loop {
        if f.metadata()?.len() < pos {
            pos = 0; // truncated
        }
        use std::io::Seek;
        f.seek(io::SeekFrom::Start(pos))?;
        pos += f.read_to_end(&mut chunk)? as u64;
        // Rotated: the rest of the old file was read above. Files rotated
        // since (several, when the log moves fast) come next, oldest first,
        // then the new one.
        let reading = f.metadata().map_or(0, |m| m.ino());
        if fs::metadata(path).is_ok_and(|m| m.ino() != reading) {
            let chain = files(path);
            let newer = chain
                .iter()
                .position(|p| fs::metadata(p).is_ok_and(|m| m.ino() == reading))
                // Rotated away altogether: every file kept is newer.
                .unwrap_or(chain.len());
            for rotated in chain.get(1..newer).unwrap_or_default().iter().rev() {
                if let Ok(mut r) = File::open(rotated) {
                    r.read_to_end(&mut chunk)?;
                }
            }
            f = open()?;
            pos = 0;
        }
        if let Some(end) = chunk.iter().rposition(|&b| b == b'\n') {
            each(&String::from_utf8_lossy(&chunk[..=end]))?;
            chunk.drain(..=end);
        } else if !running() {
            return Ok(());
        } else {
            // Often enough that a fast-rotating log is read before its
            // files are rotated away (3 are kept).
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
