//! duet's configuration file: parsing, defaults and validation.
//!
//! Every error names the file, line and column of the offending key or value, the way compilers
//! do (`duet.toml:12:9: vrid 51 on eth0 is already used by instance "web"`), so `duet check` output
//! can be followed with any editor. Unknown keys are errors: a typo must never silently fall back
//! to a default.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod schema;
mod validate;

use std::fmt;
use std::ops::Range;

pub use schema::*;

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

/// Parses and validates a config. `file` is only used in error messages.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end().replace('\n', " ");
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

/// Reads and parses a config file.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        diagnostics: vec![Diagnostic {
            file: name.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read config: {e}"),
        }],
    })?;
    parse(&name, &text)
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
