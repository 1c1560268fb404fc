//! Lines of `COPY ... TO STDOUT` in text format.
//!
//! A line holds one field per column, separated by tabs; `\N` alone is NULL. Inside a
//! field, backslash escapes stand for the bytes that would otherwise end the field or the
//! line: `\b \f \n \r \t \v \\`, `\NNN` (one to three octal digits) and `\xHH` (one or two
//! hex digits); a backslash before any other character stands for that character. The
//! un-escaped bytes must be UTF-8 (the database encoding). Each field is then the
//! value's text output, for [`super::types::parse_text`].
//!
//! [`join_copy_line`] is the inverse, for writing `COPY ... FROM STDIN`.
//!
//! Failure model: a malformed line is a definite [`TypeError::Copy`] naming the field; the
//! same bytes always fail the same way.

use super::types::TypeError;

/// Splits one line of COPY ... TO STDOUT (text format, without the trailing newline) into fields, un-escaping backslash sequences (\b \f \n \r \t \v \\ \NNN octal, \xHH) and mapping `\N` to None.
pub fn split_copy_line(line: &[u8]) -> Result<Vec<Option<String>>, TypeError> {
    line.split(|&b| b == b'\t')
        .enumerate()
        .map(|(i, raw)| {
            if raw == b"\\N" {
                return Ok(None);
            }
            // Most fields hold no escape: copied as they are.
            let bytes = if raw.contains(&b'\\') {
                unescape(raw)
            } else {
                raw.to_vec()
            };
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| TypeError::Copy {
                    field: i + 1,
                    reason: format!("not valid UTF-8 ({})", e.utf8_error()),
                })
        })
        .collect()
}

/// Resolves the backslash escapes of one field.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            // A lone backslash at the end is kept as is, like PostgreSQL's COPY FROM does.
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut value = 0;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
    out
}

/// Joins fields into one line of COPY ... FROM STDIN text format (without the newline), escaping what must be and writing `\N` for None.
pub fn join_copy_line<S: AsRef<str>>(fields: &[Option<S>]) -> String {
    let mut out = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let Some(field) = field else {
            out.push_str("\\N");
            continue;
        };
        for c in field.as_ref().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\x08' => out.push_str("\\b"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                c => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(items: &[Option<&str>]) -> Vec<Option<String>> {
        items.iter().map(|i| i.map(String::from)).collect()
    }

    #[test]
    fn splits_and_unescapes() {
        let line = b"1\t\\N\ta\\tb\\\\c\t\t\\n\\r\\b\\f\\v\tx\\101\\60\\0y\t\\x41\\x4\\xg\tcaf\xc3\xa9\t\\N\\N\t\\q";
        assert_eq!(
            split_copy_line(line),
            Ok(fields(&[
                Some("1"),
                None,
                Some("a\tb\\c"),
                Some(""),
                Some("\n\r\x08\x0c\x0b"),
                Some("xA0\0y"),
                Some("A\x04xg"),
                Some("café"),
                Some("NN"),
                Some("q"),
            ]))
        );
        assert_eq!(split_copy_line(b""), Ok(fields(&[Some("")])));
        assert_eq!(split_copy_line(b"\\N"), Ok(vec![None]));
    }

    #[test]
    fn octal_escapes_build_utf8() {
        assert_eq!(split_copy_line(b"\\303\\251"), Ok(fields(&[Some("é")])));
        let err = split_copy_line(b"ok\t\\377").unwrap_err();
        assert!(matches!(err, TypeError::Copy { field: 2, .. }), "{err}");
        assert!(
            err.to_string().starts_with("COPY field 2: not valid UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn joins_what_it_splits() {
        let items = fields(&[
            Some("a\tb"),
            None,
            Some("\\N"),
            Some(""),
            Some("x\ny\r\x08\x0b\x0c"),
        ]);
        let line = join_copy_line(&items);
        assert_eq!(line, "a\\tb\t\\N\t\\\\N\t\tx\\ny\\r\\b\\v\\f");
        assert_eq!(split_copy_line(line.as_bytes()), Ok(items));
    }

    proptest! {
        #[test]
        fn join_then_split_round_trips(items in prop::collection::vec(prop::option::of(any::<String>()), 1..8)) {
            let line = join_copy_line(&items);
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(split_copy_line(line.as_bytes()), Ok(items));
        }
    }
}
