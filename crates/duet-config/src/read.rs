//! Reading the TOML into the schema with every error reported, and in words an operator can act
//! on.
//!
//! serde stops at the first error of a document. To report them all, the document is parsed
//! into spanned values first (every syntax error), then each section and each element of an
//! array of tables is read on its own; within one, the key an error points at is dropped and
//! the rest read again, until it reads or the error points at no key.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::schema::{
    BalancerConfig, CoordinationConfig, HeartbeatConfig, NodeConfig, SyncGroupConfig,
    TrackScriptConfig, VrrpConfig, WitnessConfig,
};

/// Every syntax error of `text`; else every type error of its known sections (unknown keys
/// included). Empty: the document reads into the schema as far as the sections go.
pub(crate) fn type_errors(text: &str) -> Vec<toml::de::Error> {
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return syntax;
    }
    let mut errors = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "node" => errors.extend(table_errors::<NodeConfig>(value)),
            "heartbeat" => errors.extend(table_errors::<HeartbeatConfig>(value)),
            "witness" => errors.extend(table_errors::<WitnessConfig>(value)),
            "coordination" => errors.extend(table_errors::<CoordinationConfig>(value)),
            "vrrp" => errors.extend(each_of::<VrrpConfig>(value)),
            "balancer" => errors.extend(each_of::<BalancerConfig>(value)),
            "track_script" => errors.extend(each_entry::<TrackScriptConfig>(value)),
            "sync_group" => errors.extend(each_entry::<SyncGroupConfig>(value)),
            // Anything else: the whole-document read says what is wrong with it.
            _ => {}
        }
    }
    errors
}

/// The errors of every element of an array of tables (`[[vrrp]]`).
fn each_of<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Vec<toml::de::Error> {
    match value.get_ref() {
        DeValue::Array(items) => items.iter().flat_map(table_errors::<T>).collect(),
        _ => read_as::<Vec<T>>(value),
    }
}

/// The errors of every entry of a table of tables (`[track_script.NAME]`).
fn each_entry<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Vec<toml::de::Error> {
    match value.get_ref() {
        DeValue::Table(entries) => entries.values().flat_map(table_errors::<T>).collect(),
        _ => read_as::<std::collections::BTreeMap<String, T>>(value),
    }
}

fn read_as<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Vec<toml::de::Error> {
    T::deserialize(ValueDeserializer::from(value.clone()))
        .err()
        .into_iter()
        .collect()
}

/// Every error of one table read as `T`: after each, the key it points at is dropped and the
/// rest read again. An error that points at no remaining key (a missing field) ends it; it is
/// reported only if it came first, since a dropped key may be what it misses.
fn table_errors<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Vec<toml::de::Error> {
    let DeValue::Table(original) = value.get_ref() else {
        return read_as::<T>(value);
    };
    let mut table = original.clone();
    let mut errors = Vec::new();
    loop {
        let attempt = Spanned::new(value.span(), DeValue::Table(table.clone()));
        let Err(e) = T::deserialize(ValueDeserializer::from(attempt)) else {
            break;
        };
        let key = e.span().and_then(|at| {
            table
                .iter()
                .find(|(k, v)| k.span().contains(&at.start) || v.span().contains(&at.start))
                .map(|(k, _)| k.clone())
        });
        match key {
            Some(key) => {
                errors.push(e);
                table.remove(&key);
            }
            None => {
                if errors.is_empty() {
                    errors.push(e);
                }
                break;
            }
        }
    }
    errors
}

/// serde's message for the value at `span`, said so that it names the value, its key and the
/// form expected.
pub(crate) fn explain(text: &str, span: Range<usize>, message: &str) -> String {
    let message = message.trim_end().replace('\n', " ");
    let value = text.get(span.clone()).unwrap_or_default().trim();
    let key = key_of(text, span.start);
    let named = |what: String| match key {
        Some(k) => format!("{k} = {value}: {what}"),
        None => format!("{value}: {what}"),
    };
    if message.contains("invalid socket address syntax") {
        return named(
            "not an address: write \"ip:port\", such as \"10.0.0.1:80\" or \"[2001:db8::1]:80\""
                .into(),
        );
    }
    if message.contains("invalid IP address syntax") {
        return named(
            "not an IP address: write one such as \"10.0.0.1\" or \"2001:db8::1\"".into(),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: integer ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        // Keys whose rule names a narrower range than their integer type.
        match key {
            Some("vrid") => return "vrid must be 1..=255".into(),
            Some("priority") => {
                return "priority must be 1..=255 (0 is reserved for a master that is leaving)"
                    .into();
            }
            Some("version") => return format!("version must be 2 or 3, got {value}"),
            _ => {}
        }
        return named(format!(
            "out of range: expected {}",
            integer_range(expected)
        ));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        return named(format!("expected {}, found {got}", plain(expected)));
    }
    if let Some(rest) = message.strip_prefix("unknown variant ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        // serde writes "one of `a`, `b`, `c`" for three or more, "`a` or `b`" for two.
        let expected = expected.strip_prefix("one of ").unwrap_or(expected);
        return format!("{got} is not one of {expected}");
    }
    message
}

/// The key of the `key = value` whose value starts at `at`, if the text there reads so.
fn key_of(text: &str, at: usize) -> Option<&str> {
    let line_start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let before = text.get(line_start..at)?;
    let (key, rest) = before.rsplit_once('=')?;
    if !rest.trim().is_empty() {
        return None;
    }
    // The last key of the line: `a = { b = 1 }` names `b`.
    let key = key
        .rsplit(['{', ',', ' ', '\t'])
        .find(|k| !k.is_empty())?
        .trim_matches('"');
    key.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        .then_some(key)
}

fn integer_range(rust_type: &str) -> String {
    match rust_type {
        "u8" => "an integer from 0 to 255".into(),
        "u16" => "an integer from 0 to 65535".into(),
        "u32" => "an integer from 0 to 4294967295".into(),
        "i32" => "an integer from -2147483648 to 2147483647".into(),
        other => plain(other),
    }
}

/// serde's names for expected types, in the words of the config.
fn plain(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "i32" | "i64" | "usize" => "an integer".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a string" => "a string".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_before_their_values() {
        let text = "vrid = 256\ngarp = { count = 7 }\n";
        assert_eq!(key_of(text, 7), Some("vrid"));
        assert_eq!(key_of(text, 28), Some("count"));
        assert_eq!(key_of("[a]\n", 1), None);
    }
}
