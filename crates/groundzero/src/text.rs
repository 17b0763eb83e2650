//! Free text that people and feeds give us (reasons, names, sources) and how it reaches a terminal.
//!
//! Two halves of one rule. On the way in, [`check_text`] accepts printable text of bounded
//! length only. On the way out, [`for_terminal`] escapes whatever [`check_text`] would refuse,
//! because text stored before the rule, text from a feed file, or text from a daemon of another
//! version can still hold terminal escapes (`ESC [2J` clears root's screen), bidi overrides that
//! make `allow` read as `block`, or invisible characters that make two names look the same.

use std::borrow::Cow;

/// The longest reason or name accepted, in characters.
pub const MAX_TEXT: usize = 400;

/// Why a piece of text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{field}: {chars} characters, at most {max} allowed")]
    TooLong {
        field: String,
        chars: usize,
        max: usize,
    },
    /// `position` counts characters from 1.
    #[error(
        "{field}: character {position} is {}, which is not printable text \
         (control, bidi or invisible characters are refused)",
        code_point(*.ch)
    )]
    Unprintable {
        field: String,
        position: usize,
        ch: char,
    },
}

fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Whether `c` would let text rewrite the terminal or hide what it says.
///
/// - C0 and C1 controls and DEL (`char::is_control` is exactly the Cc category): ESC sequences,
///   carriage returns and newlines that overwrite or forge lines.
/// - Bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) and the Arabic
///   letter mark U+061C: they reorder what follows.
/// - Zero-width and other invisible format characters (U+200B–U+200F, U+2060–U+206F, U+FEFF,
///   U+180E) and the line/paragraph separators U+2028/U+2029: they make different strings look
///   the same or break lines.
/// - Interlinear annotation characters U+FFF9–U+FFFB.
pub fn is_refused(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Accepts `value` for `field` if it is printable text (nothing [`is_refused`]) of at most
/// `max_chars` characters. The error names the field, the position and the character.
pub fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), TextError> {
    if let Some((index, ch)) = value.chars().enumerate().find(|(_, c)| is_refused(*c)) {
        return Err(TextError::Unprintable {
            field: field.to_string(),
            position: index + 1,
            ch,
        });
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(TextError::TooLong {
            field: field.to_string(),
            chars,
            max: max_chars,
        });
    }
    Ok(())
}

/// `s` with every character [`check_text`] would refuse written as `\u{..}` (Rust's escape, hex),
/// so nothing in it can act on a terminal and invisible characters become visible. Borrows when
/// nothing needs escaping.
///
/// Backslashes are left alone, so ordinary text prints unchanged and escaping twice changes
/// nothing; the price is that a literal `\u{1b}` typed by someone looks like an escaped ESC.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(is_refused) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if is_refused(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`for_terminal`], but keeps `\n` as a line break: for multi-line messages (a list
/// file's bad lines) whose line structure is ours. A `\r` is still escaped, so no line can be
/// overwritten.
pub fn for_terminal_lines(s: &str) -> String {
    s.split('\n')
        .map(for_terminal)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_passes_including_non_ascii() {
        for ok in [
            "",
            "spam from 198.51.100.7",
            "Müller's \"test\" — ok ✓",
            "日本語の理由",
            "tab\\t is written, not typed",
        ] {
            assert_eq!(check_text("reason", ok, MAX_TEXT), Ok(()), "{ok}");
            assert!(matches!(for_terminal(ok), Cow::Borrowed(_)), "{ok}");
        }
    }

    #[test]
    fn refused_characters_are_named_with_field_and_position() {
        let err = check_text("reason", "ab\u{1b}[2J", MAX_TEXT).unwrap_err();
        assert_eq!(
            err,
            TextError::Unprintable {
                field: "reason".into(),
                position: 3,
                ch: '\u{1b}'
            }
        );
        let msg = err.to_string();
        assert!(msg.starts_with("reason: character 3 is U+001B"), "{msg}");

        for (bad, code) in [
            ("\n", "U+000A"),
            ("\r", "U+000D"),
            ("\t", "U+0009"),
            ("\u{7f}", "U+007F"),
            ("\u{9b}", "U+009B"), // C1 CSI: an escape sequence on its own
            ("\u{202e}", "U+202E"),
            ("\u{2066}", "U+2066"),
            ("\u{200b}", "U+200B"),
            ("\u{feff}", "U+FEFF"),
            ("\u{2028}", "U+2028"),
        ] {
            let msg = check_text("name", &format!("x{bad}y"), MAX_TEXT)
                .unwrap_err()
                .to_string();
            assert!(msg.contains(&format!("character 2 is {code}")), "{msg}");
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let at_max = "é".repeat(MAX_TEXT);
        assert_eq!(check_text("reason", &at_max, MAX_TEXT), Ok(()));
        let err = check_text("reason", &format!("{at_max}x"), MAX_TEXT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reason: 401 characters, at most 400 allowed"
        );
    }

    #[test]
    fn for_terminal_escapes_exactly_what_check_text_refuses() {
        let escaped = for_terminal("\u{1b}[2J\u{1b}[31mPWNED\u{202e}txt.exe\r\n");
        assert_eq!(
            escaped,
            "\\u{1b}[2J\\u{1b}[31mPWNED\\u{202e}txt.exe\\u{d}\\u{a}"
        );
        assert!(check_text("out", &escaped, usize::MAX).is_ok());
        // Escaping is idempotent: output that is already safe is borrowed as it is.
        assert!(matches!(for_terminal(&escaped), Cow::Borrowed(_)));
    }

    #[test]
    fn for_terminal_lines_keeps_only_newlines() {
        let out = for_terminal_lines("x: 2 bad lines\n  x:1: `\u{1b}]0;t\u{7}`\r\n");
        assert_eq!(out, "x: 2 bad lines\n  x:1: `\\u{1b}]0;t\\u{7}`\\u{d}\n");
        assert!(!out.contains('\u{1b}'));
    }
}
