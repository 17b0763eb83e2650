//! PLACEHOLDER (replaced by the input helper's module at merge).
use std::borrow::Cow;
pub const MAX_TEXT: usize = 400;
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TextError {
    pub field: String,
    pub message: String,
}
fn bad_char(c: char) -> bool {
    c.is_control()
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}
pub fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), TextError> {
    if value.chars().count() > max_chars {
        return Err(TextError {
            field: field.into(),
            message: format!("at most {max_chars} characters"),
        });
    }
    if let Some((i, c)) = value.chars().enumerate().find(|(_, c)| bad_char(*c)) {
        return Err(TextError {
            field: field.into(),
            message: format!(
                "character {} is U+{:04X}, not printable text",
                i + 1,
                c as u32
            ),
        });
    }
    Ok(())
}
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(bad_char) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if bad_char(c) {
                    format!("\\u{{{:x}}}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}
