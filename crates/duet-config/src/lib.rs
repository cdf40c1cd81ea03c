//! duet's configuration file: parsing, defaults and validation.
//!
//! Every error names the file, line and column of the offending key or value, the way compilers
//! do (`duet.toml:12:9: vrid 51 on eth0 is already used by instance "web"`), so `duet check` output
//! can be followed with any editor. Unknown keys are errors: a typo must never silently fall back
//! to a default.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod database;
pub mod drift;
mod lift;
mod read;
pub mod schema;
pub mod service;
mod validate;

use std::fmt;
use std::ops::Range;

pub use admin::{
    ALERT_TYPES, AdminConfig, AdminTls, AlertsConfig, EmailConfig, Role, TokenConfig, TokenHash,
    WebhookConfig,
};
pub use database::{ByteSize, DatabaseConfig, DatabaseKind, Network, SyncMode, WriteVip};
pub use lift::Lifted;
pub use schema::*;
pub use service::{ServiceConfig, ServiceKind};
pub use validate::Seg;

/// A config file's name and text, to locate values in it by path.
#[derive(Debug, Clone)]
pub struct Source {
    /// File name as given.
    pub file: String,
    /// Its text.
    pub text: String,
}

impl Source {
    /// Reads `path` (a byte that is not UTF-8 is reported where it is).
    pub fn read(path: &std::path::Path) -> Result<Source, ConfigError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            diagnostics: vec![Diagnostic {
                file: file.clone(),
                line: 1,
                col: 1,
                message: format!("cannot read config: {e}"),
            }],
        })?;
        let text = decode(&file, &bytes)?.to_string();
        Ok(Source { file, text })
    }

    /// Parses and validates it.
    pub fn parse(&self) -> Result<Config, ConfigError> {
        parse(&self.file, &self.text)
    }

    /// A diagnostic at the value `path` names (`["balancer", 0, "bind"]`), or at its nearest
    /// parent that is written in the file.
    pub fn at(&self, path: &[Seg], message: String) -> Diagnostic {
        let span = validate::Locator::new(&self.text).span(path);
        diagnostic(&self.file, &self.text, span, message)
    }
}

/// A path to a value, for [`Source::at`]: `path!["vrrp", 0, "interface"]`.
#[macro_export]
macro_rules! path {
    ($($seg:expr),* $(,)?) => { vec![$($crate::Seg::from($seg)),*] };
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems; never empty.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Parses and validates a config. `file` is only used in error messages. Every problem is
/// reported, not only the first: all syntax errors; else every type error, section by section
/// and key by key; else every rule violation.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let type_errors = read::type_errors(text);
    if !type_errors.is_empty() {
        let mut diagnostics: Vec<Diagnostic> = type_errors
            .into_iter()
            .map(|e| {
                let span = e.span().unwrap_or(0..0);
                let message = read::explain(text, span.clone(), e.message());
                diagnostic(file, text, span, message)
            })
            .collect();
        diagnostics.sort_by_key(|d| (d.line, d.col));
        diagnostics.dedup();
        return Err(ConfigError { diagnostics });
    }
    let config: Config = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = read::explain(text, span.clone(), e.message());
        ConfigError {
            diagnostics: vec![diagnostic(file, text, span, message)],
        }
    })?;
    let problems = validate::check(&config);
    if problems.is_empty() {
        return Ok(config);
    }
    let locator = validate::Locator::new(text);
    let mut diagnostics: Vec<Diagnostic> = problems
        .into_iter()
        .map(|p| diagnostic(file, text, locator.span(&p.path), p.message))
        .collect();
    diagnostics.sort_by_key(|d| (d.line, d.col));
    Err(ConfigError { diagnostics })
}

/// Reads and parses a config file. A byte that is not UTF-8 is reported where it is.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    Source::read(path)?.parse()
}

/// The text of a config file, or where its first non-UTF-8 byte is.
pub fn decode<'b>(file: &str, bytes: &'b [u8]) -> Result<&'b str, ConfigError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        // The valid prefix locates the bad byte: its line, and its column in characters.
        let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let (line, col) = line_col(before, before.len());
        ConfigError {
            diagnostics: vec![Diagnostic {
                file: file.to_string(),
                line,
                col,
                message: format!(
                    "byte 0x{:02x} is not UTF-8: the config must be UTF-8 text",
                    bytes[at]
                ),
            }],
        }
    })
}

fn diagnostic(file: &str, text: &str, span: Range<usize>, message: String) -> Diagnostic {
    let (line, col) = line_col(text, span.start);
    Diagnostic {
        file: file.to_string(),
        line,
        col,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests;
