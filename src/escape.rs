//! Printing what we do not control: object names, file names, and bytes from messages
//! (provider IDs, key names, context values), server error messages.
//!
//! Two functions, for two needs:
//! - [`name`] renders a name losslessly: every byte sequence maps to a distinct
//!   printable string (a backslash is doubled, so `\xff` in the output can only mean the
//!   byte 0xFF). Reports and error lines use it, so a file whose name is not UTF-8 is
//!   still named exactly.
//! - [`text`] makes free text safe for a terminal or a log line: control characters,
//!   line breaks and direction overrides become visible escapes, so nothing read from an
//!   object can start a forged `error:` line or send escape sequences to a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

/// Whether `c` must not reach a terminal as it is: C0 and C1 controls, DEL, and the
/// invisible formatting characters that reorder or hide text (bidirectional overrides,
/// zero-width characters, the byte-order mark).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

/// Whether `c` must be escaped before it reaches a terminal (controls, DEL, C1,
/// direction overrides, zero-width characters), for writers that escape in their own
/// syntax, such as JSON's `\uXXXX`.
pub fn is_terminal_unsafe(c: char) -> bool {
    is_unsafe(c)
}

fn push_char(out: &mut String, c: char, double_backslash: bool) {
    match c {
        '\\' if double_backslash => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if is_unsafe(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// A lossless, printable rendering of a name that may hold any bytes: valid UTF-8 stays
/// as it is (but for escapes of unsafe characters and a doubled backslash), each byte
/// that is not part of valid UTF-8 becomes `\xNN`.
pub fn name(bytes: &[u8]) -> String {
    escape_bytes(bytes, true)
}

fn escape_bytes(bytes: &[u8], double_backslash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c, double_backslash);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// [`name`] of a path's bytes (on Unix, exactly the bytes the OS holds).
pub fn path(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        name(path.as_os_str().as_bytes())
    }
    #[cfg(not(unix))]
    {
        name(path.to_string_lossy().as_bytes())
    }
}

/// `text` with every unsafe character (controls, line breaks, direction overrides)
/// replaced by a visible escape; borrowed when there is none.
pub fn text(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| is_unsafe(c) || matches!(c, '\n' | '\r' | '\t'))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_char(&mut out, c, false);
    }
    Cow::Owned(out)
}

/// [`text`] of bytes that should be UTF-8 but may not be: invalid bytes become `\xNN`.
pub fn bytes(bytes: &[u8]) -> String {
    escape_bytes(bytes, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lossless_and_printable() {
        assert_eq!(name(b"plain/r\xc3\xa9sum\xc3\xa9.txt"), "plain/résumé.txt");
        assert_eq!(name(b"bad\xff\xfe"), "bad\\xff\\xfe");
        // A literal backslash sequence cannot be confused with an escaped byte.
        assert_eq!(name(b"bad\\xff"), "bad\\\\xff");
        assert_ne!(name(b"bad\\xff"), name(b"bad\xff"));
        assert_eq!(name(b"a\nerror: forged"), "a\\nerror: forged");
        assert_eq!(name(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(name("\u{202e}txt.exe".as_bytes()), "\\u{202e}txt.exe");
        assert_eq!(name("\u{9b}31m".as_bytes()), "\\u{9b}31m");
        for s in [name(b"x\x00y\x7f"), name(b"\r\t")] {
            assert!(!s.chars().any(is_unsafe), "{s:?}");
        }
    }

    #[test]
    fn text_escapes_controls_but_keeps_backslashes() {
        assert!(matches!(text("plain \\ text"), Cow::Borrowed(_)));
        assert_eq!(
            text("line\nerror: x\x1b]0;t\x07"),
            "line\\nerror: x\\u{1b}]0;t\\u{7}"
        );
        assert_eq!(bytes(b"id\xff\n"), "id\\xff\\n");
    }
}
