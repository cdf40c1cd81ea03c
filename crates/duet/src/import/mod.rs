//! `duet import keepalived FILE` and `duet import haproxy FILE`: an equivalent duet.toml on
//! stdout and, on stderr, every setting that was not translated and why.
//!
//! Both importers are pure: text in, [`Imported`] out. They translate what has a meaning in
//! duet and say so for everything else, line by line, rather than guess: a migration should
//! start from a config that checks, and from a list of what to look at by hand.

pub mod haproxy;
pub mod keepalived;

/// An imported config.
#[derive(Debug, Default)]
pub struct Imported {
    /// The duet.toml text.
    pub toml: String,
    /// What was not translated (or translated with a change of meaning), in file order.
    pub notes: Vec<Note>,
}

/// One setting the importer did not translate as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// 1-based line in the source file.
    pub line: usize,
    /// The setting as written (its first words).
    pub setting: String,
    /// Why, and what to do instead.
    pub why: String,
}

impl Imported {
    fn note(&mut self, line: usize, setting: impl Into<String>, why: impl Into<String>) {
        self.notes.push(Note {
            line,
            setting: setting.into(),
            why: why.into(),
        });
    }
}

/// A TOML basic string (JSON's escapes are TOML's).
pub(crate) fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A TOML array of strings.
pub(crate) fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// Seconds as a duet duration: `"2s"`, `"1.5s"`, `"100ms"`.
pub(crate) fn seconds(s: f64) -> String {
    millis((s * 1000.0).round() as u64)
}

/// Milliseconds as a duet duration.
pub(crate) fn millis(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("\"{}s\"", ms / 1000)
    } else if ms < 1000 {
        format!("\"{ms}ms\"")
    } else {
        format!("\"{}s\"", ms as f64 / 1000.0)
    }
}

/// Splits a command line as a POSIX shell would for words and quotes; `None` when it needs a
/// shell (pipes, redirections, variables, `;`, `&&`, globs, backquotes).
pub(crate) fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        '$' | '`' => return None,
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            '|' | '&' | ';' | '<' | '>' | '$' | '`' | '*' | '?' | '(' | ')' | '~' => return None,
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// A command for duet (which runs commands without a shell): its words, or `sh -c LINE` when
/// it needs a shell (the bool says so).
pub(crate) fn command(line: &str) -> (Vec<String>, bool) {
    match shell_words(line) {
        Some(w) if !w.is_empty() => (w, false),
        _ => (vec!["/bin/sh".into(), "-c".into(), line.into()], true),
    }
}

/// Runs `duet import KIND FILE`; returns the exit code.
pub fn run(kind: &str, path: &std::path::Path) -> i32 {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("duet import {kind}: {}: {e}", path.display());
            return 1;
        }
    };
    let imported = match kind {
        "keepalived" => keepalived::import(&text),
        "haproxy" => haproxy::import(&text),
        other => {
            eprintln!("duet import: {other:?}: keepalived or haproxy");
            return 2;
        }
    };
    let imported = match imported {
        Ok(i) => i,
        Err(e) => {
            eprintln!("duet import {kind}: {}:{e}", path.display());
            return 1;
        }
    };
    print!("{}", imported.toml);
    if imported.notes.is_empty() {
        eprintln!("duet import {kind}: every setting was translated");
    } else {
        eprintln!(
            "duet import {kind}: {} setting(s) not translated as written:",
            imported.notes.len()
        );
        for n in &imported.notes {
            eprintln!("  {}:{}: {}: {}", path.display(), n.line, n.setting, n.why);
        }
    }
    0
}

#[cfg(test)]
impl Imported {
    /// The output parsed (a test fails with the diagnostics and the text if it does not).
    pub(crate) fn parsed(&self) -> duet_config::Config {
        duet_config::parse("imported.toml", &self.toml)
            .unwrap_or_else(|e| panic!("{:?}\n{}", e.diagnostics, self.toml))
    }

    /// Asserts a note at each `(line, words of its why)`.
    pub(crate) fn assert_notes(&self, expected: &[(usize, &str)]) {
        for (line, what) in expected {
            assert!(
                self.notes
                    .iter()
                    .any(|n| n.line == *line && n.why.contains(what)),
                "no note {what:?} at line {line}: {:#?}",
                self.notes
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_durations_and_commands() {
        assert_eq!(
            shell_words(r#"/usr/bin/pgrep -x "nginx: master" 'a b' c\ d"#).unwrap(),
            ["/usr/bin/pgrep", "-x", "nginx: master", "a b", "c d"]
        );
        assert_eq!(shell_words("killall -0 nginx | grep x"), None);
        assert_eq!(shell_words("echo $HOME"), None);
        assert_eq!(shell_words("unterminated 'quote"), None);
        assert_eq!(
            command("curl -s localhost && true"),
            (
                vec![
                    "/bin/sh".to_string(),
                    "-c".into(),
                    "curl -s localhost && true".into()
                ],
                true
            )
        );
        assert_eq!(seconds(1.0), "\"1s\"");
        assert_eq!(seconds(0.1), "\"100ms\"");
        assert_eq!(seconds(2.5), "\"2.5s\"");
        assert_eq!(q("a \"b\"\n"), r#""a \"b\"\n""#);
    }
}
