//! Terminal output: colours (only on a terminal, and never with `NO_COLOR`), tables, JSON
//! layout, timestamps and durations.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether to colour one stream.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    color: bool,
}

fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Style {
    pub fn stdout() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && !no_color(),
        }
    }
    pub fn stderr() -> Style {
        Style {
            color: std::io::stderr().is_terminal() && !no_color(),
        }
    }
    /// No colours, whatever the streams are.
    #[cfg(test)]
    pub fn plain() -> Style {
        Style { color: false }
    }
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    pub fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub fn cyan(&self, t: &str) -> String {
        self.paint("36", t)
    }
}

/// Writes one line to stdout; `false` once stdout is gone (e.g. a closed pipe).
pub fn line(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|_| out.flush()).is_ok()
}

/// Columns aligned on the widest cell; the header in bold.
pub fn table(style: Style, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<String>, paint: &dyn Fn(&str) -> String| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            s.push_str(&paint(cell));
            if i < last {
                s.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        s
    };
    let mut out = render(headers.iter().map(|h| h.to_string()).collect(), &|h| {
        style.bold(h)
    });
    for row in rows {
        out.push('\n');
        out.push_str(&render(row.clone(), &|c| c.to_string()));
    }
    out
}

/// Lays out JSON text that is already known to be valid: indented by two spaces, or on one
/// line. Keys keep their order and numbers their spelling (nothing is re-encoded).
pub fn json_layout(text: &str, pretty: bool) -> String {
    fn newline(out: &mut String, indent: usize) {
        out.push('\n');
        out.push_str(&"  ".repeat(indent));
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut indent = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    out.push(c);
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if let Some(&close @ ('}' | ']')) = chars.peek() {
                    out.push(close);
                    chars.next();
                    continue;
                }
                indent += 1;
                if pretty {
                    newline(&mut out, indent);
                }
            }
            '}' | ']' => {
                indent = indent.saturating_sub(1);
                if pretty {
                    newline(&mut out, indent);
                }
                out.push(c);
            }
            ',' => {
                out.push(',');
                if pretty {
                    newline(&mut out, indent);
                }
            }
            ':' => out.push_str(if pretty { ": " } else { ":" }),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// `2025-06-01T10:00:00.123Z`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// `42s`, `5m`, `3h`, `2d`: how long ago, coarsely.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Milliseconds with three decimals: `0.214`.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_layout_keeps_order_and_strings() {
        let src = r#" {"b": [1, 2 ,{}], "a":{"s":"x, \"y\": [z]"}, "e":[ ] } "#;
        assert_eq!(
            json_layout(src, false),
            r#"{"b":[1,2,{}],"a":{"s":"x, \"y\": [z]"},"e":[]}"#
        );
        let pretty = json_layout(src, true);
        let v1: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        let v2: serde_json::Value = serde_json::from_str(src).unwrap();
        assert_eq!(v1, v2);
        assert_eq!(
            pretty,
            "{\n  \"b\": [\n    1,\n    2,\n    {}\n  ],\n  \"a\": {\n    \"s\": \"x, \\\"y\\\": [z]\"\n  },\n  \"e\": []\n}"
        );
        assert_eq!(json_layout("42", true), "42");
    }

    #[test]
    fn timestamps_and_ages() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // a leap day
        assert_eq!(utc_timestamp(t), "2024-02-29T12:34:56.789Z");
        assert_eq!(age(Duration::from_secs(59)), "59s");
        assert_eq!(age(Duration::from_secs(7200)), "2h");
        assert_eq!(ms(Duration::from_micros(1500)), "1.500");
    }

    #[test]
    fn tables_align() {
        let t = table(
            Style::plain(),
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y");
    }
}
