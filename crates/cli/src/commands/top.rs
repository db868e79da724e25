//! `planoai top`: what the gateway does now, per model and deployment,
//! refreshed every second; `q` quits. Not on a terminal, one snapshot.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use plano_core::envoy_names::BLOCKS_PATH;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block as Frame, Cell, Paragraph, Row as TableRow, Table};
use ratatui::DefaultTerminal;

use crate::commands::status::{paced_line, queue_line};
use crate::scrape::{rows, Block, Reading, Row};
use crate::{health, runtime};

/// Rates are over the readings of this many seconds (Envoy flushes its
/// histograms every 5 s, so a shorter window would make p50 flicker).
const WINDOW_SECS: f64 = 10.0;
const REFRESH: Duration = Duration::from_secs(1);

const HEADERS: [&str; 8] = [
    "MODEL",
    "DEPLOYMENT",
    "REQ/S",
    "OK%",
    "FAILOVER/S",
    "429s",
    "BLOCKED",
    "TTFB p50",
];

pub fn run() -> Result<i32> {
    match runtime::read_state() {
        Some(state) if runtime::is_running(&state) => {}
        _ => {
            outln!("not running")?;
            return Ok(3);
        }
    }
    if !std::io::stdout().is_terminal() {
        return snapshot();
    }
    let mut terminal = ratatui::init();
    let shown = live(&mut terminal);
    ratatui::restore();
    shown.map(|()| 0)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn read() -> Result<Reading> {
    let (_, text) = health::get(runtime::admin_ports().0, "/stats/prometheus")
        .context("the gateway's admin did not answer")?;
    Ok(Reading::parse(&text, now_secs()))
}

/// The status listener's report: blocks, limits, paced minutes, the queue.
fn report() -> serde_json::Value {
    let Ok((200, body)) = health::get(runtime::admin_ports().1, BLOCKS_PATH) else {
        return serde_json::Value::Null;
    };
    serde_json::from_str(&body).unwrap_or_default()
}

/// Each paced deployment's minute (used, limit, configured or learned) and
/// the queue's length and oldest wait; nothing when no target is paced.
fn pacing(report: &serde_json::Value) -> Vec<String> {
    let paced = report["paced"].as_array().cloned().unwrap_or_default();
    if paced.is_empty() {
        return Vec::new();
    }
    let mut lines: Vec<String> = paced.iter().map(paced_line).collect();
    lines.push(format!("queue: {}", queue_line(&report["queue"])));
    lines
}

/// The blocks in force, from the status listener's report.
fn blocks(report: &serde_json::Value) -> Vec<Block> {
    report["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| Block {
            blocked: b["blocked"].as_str().unwrap_or_default().to_string(),
            remaining_ms: b["remaining_ms"].as_u64().unwrap_or(0),
            reason: b["reason"].as_str().map(String::from),
        })
        .collect()
}

/// Two readings a refresh apart, printed as a table.
fn snapshot() -> Result<i32> {
    let before = read()?;
    std::thread::sleep(REFRESH);
    let now = read()?;
    let report = report();
    let blocks = blocks(&report);
    outln!("{}", HEADERS.join("\t"))?;
    for row in rows(&before, &now, &blocks) {
        outln!("{}", cells(&row).join("\t"))?;
    }
    for b in &blocks {
        outln!("blocked: {} for {}", b.describe(), seconds(b.remaining_ms))?;
    }
    for line in pacing(&report) {
        outln!("paced: {line}")?;
    }
    Ok(0)
}

fn seconds(ms: u64) -> String {
    format!("{}s", ms.div_ceil(1000))
}

fn cells(row: &Row) -> [String; 8] {
    [
        row.model.clone(),
        if row.deployment.is_empty() {
            "-".into()
        } else {
            row.deployment.clone()
        },
        format!("{:.1}", row.attempts_per_s),
        row.success_pct.map_or("-".into(), |p| format!("{p:.0}")),
        format!("{:.1}", row.failovers_per_s),
        row.rate_limited.to_string(),
        row.block_ms.map_or("-".into(), seconds),
        row.ttfb_p50_ms
            .map_or("-".into(), |ms| format!("<={ms:.0} ms")),
    ]
}

fn live(terminal: &mut DefaultTerminal) -> Result<()> {
    let mut readings: VecDeque<Reading> = VecDeque::new();
    loop {
        let started = Instant::now();
        let reading = read();
        let report = report();
        let blocks = blocks(&report);
        let paced = pacing(&report);
        if let Ok(r) = &reading {
            while readings
                .front()
                .is_some_and(|old| r.at_secs - old.at_secs > WINDOW_SECS)
            {
                readings.pop_front();
            }
            readings.push_back(r.clone());
        }
        let shown = match (readings.front(), readings.back()) {
            (Some(first), Some(last)) => rows(first, last, &blocks),
            _ => Vec::new(),
        };
        let error = reading.err().map(|e| format!("{e:#}"));
        terminal.draw(|frame| {
            let [title, table, listed, pacing] = Layout::vertical([
                Constraint::Length(1),
                Constraint::Min(3),
                Constraint::Length(blocks.len() as u16 + 2),
                Constraint::Length(if paced.is_empty() { 0 } else { paced.len() as u16 + 2 }),
            ])
            .areas(frame.area());
            let head = error.clone().unwrap_or_else(|| {
                format!(
                    "planoai top - rates over the last {WINDOW_SECS:.0} s, refreshed every second - q quits"
                )
            });
            frame.render_widget(Paragraph::new(head), title);
            let widths = [
                Constraint::Fill(3),
                Constraint::Fill(2),
                Constraint::Length(7),
                Constraint::Length(5),
                Constraint::Length(10),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(11),
            ];
            let header = TableRow::new(HEADERS.map(Cell::from))
                .style(Style::new().add_modifier(Modifier::REVERSED));
            let body = shown.iter().map(|r| TableRow::new(cells(r).map(Cell::from)));
            frame.render_widget(
                Table::new(body, widths).header(header).block(Frame::bordered().title("targets")),
                table,
            );
            let lines: Vec<Line> = blocks
                .iter()
                .map(|b| Line::from(format!("{} for {}", b.describe(), seconds(b.remaining_ms))))
                .collect();
            frame.render_widget(
                Paragraph::new(lines).block(Frame::bordered().title("blocks")),
                listed,
            );
            if !paced.is_empty() {
                let lines: Vec<Line> = paced.iter().map(|l| Line::from(l.clone())).collect();
                frame.render_widget(
                    Paragraph::new(lines).block(Frame::bordered().title("paced: this minute")),
                    pacing,
                );
            }
        })?;
        // Keys are read at least once a round, however long the reading took.
        let until = started + REFRESH;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if !event::poll(left)? {
                break;
            }
            if let Event::Key(key) = event::read()? {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if key.kind == KeyEventKind::Press
                    && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                {
                    return Ok(());
                }
            }
        }
    }
}
