//! Rendering pull progress on stderr: bars on a terminal, plain lines, JSON lines.

use clap::ValueEnum;
use crikit::distribution::progress::{Event, Sink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Bars.
    Bars,
    /// One plain line per finished blob.
    Plain,
    /// One JSON object per event.
    Json,
    /// Nothing.
    None,
}

/// Sizes as people read them (decimal units, like skopeo and docker).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A progress sink that can also be told an image is finished.
pub trait Renderer: Sink {
    /// Clears per-image state (bars) after an image is done or failed.
    fn finish_image(&self) {}
}

/// Picks the renderer for `mode`.
pub fn make(mode: ProgressMode) -> Box<dyn Renderer> {
    let tty = std::io::stderr().is_terminal();
    match mode {
        ProgressMode::None => Box::new(Nothing),
        ProgressMode::Json => Box::new(Json),
        ProgressMode::Plain => Box::new(Plain),
        ProgressMode::Bars => Box::new(Bars::new()),
        ProgressMode::Auto if tty => Box::new(Bars::new()),
        ProgressMode::Auto => Box::new(Plain),
    }
}

struct Nothing;
impl Sink for Nothing {
    fn event(&self, _: &Event) {}
}
impl Renderer for Nothing {}

struct Json;
impl Sink for Json {
    fn event(&self, e: &Event) {
        if let Ok(mut line) = serde_json::to_vec(e) {
            line.push(b'\n');
            let _ = std::io::stderr().lock().write_all(&line);
        }
    }
}
impl Renderer for Json {}

struct Plain;
impl Sink for Plain {
    fn event(&self, e: &Event) {
        let line = match e {
            Event::Resolving { endpoint, .. } => format!("resolving {endpoint}"),
            Event::BlobExists { digest, size, .. } => {
                format!("blob {digest} ({}) already stored", human_size(*size))
            }
            Event::BlobDone { digest, size, .. } => {
                format!("blob {digest} ({}) done", human_size(*size))
            }
            Event::LayerUnpacked { digest, .. } => format!("layer {digest} unpacked"),
            Event::Retry {
                what,
                attempt,
                delay_ms,
                error,
                ..
            } => {
                format!("retrying {what} in {delay_ms} ms (attempt {attempt}): {error}")
            }
            _ => return,
        };
        let _ = writeln!(std::io::stderr().lock(), "imgpull: {line}");
    }
}
impl Renderer for Plain {}

struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    style: ProgressStyle,
}

impl Bars {
    fn new() -> Self {
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30}] {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            style,
        }
    }

    fn bar(&self, digest: &str, size: u64) -> ProgressBar {
        let mut bars = crikit::sync::lock(&self.bars);
        bars.entry(digest.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(size));
                b.set_style(self.style.clone());
                b.set_prefix(digest.get(7..19).unwrap_or(digest).to_string());
                b
            })
            .clone()
    }
}

impl Sink for Bars {
    fn event(&self, e: &Event) {
        match e {
            Event::BlobStart {
                digest,
                size,
                offset,
                ..
            } => self.bar(digest, *size).set_position(*offset),
            Event::BlobProgress {
                digest, done, size, ..
            } => self.bar(digest, *size).set_position(*done),
            Event::BlobDone { digest, size, .. } => {
                let b = self.bar(digest, *size);
                b.set_position(*size);
                b.finish_with_message("done");
            }
            Event::BlobExists { digest, size, .. } => {
                let b = self.bar(digest, *size);
                b.set_position(*size);
                b.finish_with_message("already stored");
            }
            Event::LayerUnpacked { digest, .. } => {
                if let Some(b) = crikit::sync::lock(&self.bars).get(digest) {
                    b.finish_with_message("unpacked");
                }
            }
            Event::Retry {
                what,
                attempt,
                error,
                ..
            } => {
                let _ = self
                    .multi
                    .println(format!("retrying {what} (attempt {attempt}): {error}"));
            }
            _ => {}
        }
    }
}

impl Renderer for Bars {
    fn finish_image(&self) {
        let mut bars = crikit::sync::lock(&self.bars);
        // The image's line on stdout says it is done: take its bars off the screen
        // so the next image starts with a clean set.
        for (_, b) in bars.drain() {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        let _ = self.multi.clear();
    }
}
