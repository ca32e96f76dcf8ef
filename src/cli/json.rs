//! The one JSON writer of the binary (`inspect`, `bench --json`, `--report`): pretty
//! JSON in which every character [`sealpipe::escape`] deems unsafe for a terminal is
//! written as a `\uXXXX` escape.
//!
//! serde_json escapes only what JSON requires (below U+0020, `"` and `\`), so DEL, the
//! C1 controls (U+0080 to U+009F, U+009B alone starts an escape sequence on many
//! terminals) and direction overrides from a message's context would reach whoever
//! `cat`s the output. The escapes decode to the same strings, so the document means
//! exactly what it did.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

/// `value` as pretty JSON, terminal-safe.
pub fn to_string_pretty<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, SafeFormatter::new());
    value.serialize(&mut serializer)?;
    // The formatter writes only what serde_json gives it (valid UTF-8) and ASCII escapes.
    Ok(String::from_utf8(out)?)
}

/// [`PrettyFormatter`], with string contents filtered through [`write_safe`].
struct SafeFormatter {
    pretty: PrettyFormatter<'static>,
}

impl SafeFormatter {
    fn new() -> Self {
        Self {
            pretty: PrettyFormatter::new(),
        }
    }
}

/// Writes `fragment` (part of a JSON string, already free of what JSON must escape),
/// turning each unsafe character into `\uXXXX` (all of them lie in the Basic
/// Multilingual Plane, so one escape each).
fn write_safe<W: ?Sized + Write>(writer: &mut W, fragment: &str) -> io::Result<()> {
    let mut start = 0;
    for (i, c) in fragment.char_indices() {
        if sealpipe::escape::is_terminal_unsafe(c) {
            writer.write_all(&fragment.as_bytes()[start..i])?;
            write!(writer, "\\u{:04x}", u32::from(c))?;
            start = i + c.len_utf8();
        }
    }
    writer.write_all(&fragment.as_bytes()[start..])
}

impl Formatter for SafeFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_safe(writer, fragment)
    }

    // The rest is PrettyFormatter's layout.
    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_array(writer)
    }
    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_array(writer)
    }
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_array_value(writer, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(writer)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_object(writer)
    }
    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object(writer)
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_object_key(writer, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(writer)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters_are_escaped_and_decode_back() {
        let value = serde_json::json!({
            "k\u{202e}": ["del\u{7f}", "csi\u{9b}31m", "esc\u{1b}[2J", "zw\u{200b}", "ok é"],
        });
        let text = to_string_pretty(&value).unwrap();
        assert!(
            !text.chars().any(|c| c != '\n' && c.is_control()),
            "{text:?}"
        );
        for escaped in [
            "\\u202e", "\\u007f", "\\u009b", "\\u001b", "\\u200b", "ok é",
        ] {
            assert!(text.contains(escaped), "{escaped} in {text}");
        }
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        // Safe documents come out exactly as serde_json's pretty printer writes them.
        let safe = serde_json::json!({"a": [1, "b", {"c": null}], "d": {}});
        assert_eq!(
            to_string_pretty(&safe).unwrap(),
            serde_json::to_string_pretty(&safe).unwrap()
        );
    }
}
