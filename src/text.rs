//! How raw bytes and messages are shown: paths (which need not be UTF-8) and one-line error
//! messages, with control and bidirectional-override characters escaped so that a hostile file
//! name cannot break a line of output or reorder it.

/// Display form of a path, for messages and human listings, unambiguous and on one line: a
/// backslash is doubled, control and bidirectional-override characters are escaped (`\n`,
/// `\u{202e}`), and bytes that are not UTF-8 become `\xNN`. Two different names never look
/// the same, and a name never breaks or reorders a line of output.
pub fn display_path(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    for chunk in p.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c, true);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Characters that reorder how a terminal shows the text around them (Trojan Source).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char, backslash: bool) {
    match c {
        '\\' if backslash => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control() || is_bidi(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

/// `s` with every control and bidirectional-override character escaped (`\n`, `\r`, `\t`, else
/// `\u{..}`), so that text from file names, arguments or config values keeps a message on one
/// line and in order.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || is_bidi(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c, false);
    }
    std::borrow::Cow::Owned(out)
}

/// `1.5 MB`-style sizes (powers of 1000, as df -H and restic do).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
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
