//! Text from documents, sources and the model shown on a terminal: control
//! characters (escape sequences, bells, carriage returns) and bidirectional
//! overrides are shown escaped, never sent to the terminal as they are.

/// `s` with every control or bidirectional-override character escaped
/// (`\u{1b}`); newlines and tabs become spaces, so one record stays on one line.
pub fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn escape_sequences_and_overrides_are_shown_escaped() {
        assert_eq!(
            terminal_safe("a\u{1b}[31mred\u{7}\r\nnext\tcol"),
            "a\\u{1b}[31mred\\u{7}\\u{d} next col"
        );
        assert_eq!(terminal_safe("\u{9b}2J"), "\\u{9b}2J", "C1 CSI");
        assert_eq!(terminal_safe("abc\u{202E}gpj.exe"), "abc\\u{202e}gpj.exe");
        assert_eq!(terminal_safe("Zürich — 東京"), "Zürich — 東京");
    }
}
