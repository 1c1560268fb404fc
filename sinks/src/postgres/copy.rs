//! Rows in `COPY ... FROM STDIN` text format.
//!
//! Each row is one line of tab-separated fields ending in a newline. A field is the
//! value's PostgreSQL text input ([`tributary_schemas::pg_text`]) with backslash, tab,
//! newline and carriage return backslash-escaped; `\N` is NULL. The last field of a
//! staging row is the integer operation code, unless every row of a batch is an upsert.

use bytes::BytesMut;
use tributary_schemas::pg_text::write_text;
use tributary_schemas::Value;

/// Writes staging rows, reusing one scratch buffer for value text.
#[derive(Debug, Default)]
pub(crate) struct CopyWriter {
    scratch: String,
}

impl CopyWriter {
    /// Appends one line: `fields` (`None`, NULL and unchanged are all `\N`), then `op`
    /// when there is one.
    pub(crate) fn row<'a>(
        &mut self,
        out: &mut BytesMut,
        fields: impl IntoIterator<Item = Option<&'a Value>>,
        op: Option<i32>,
    ) {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\t");
            }
            match field {
                None | Some(Value::Null | Value::Unchanged) => out.extend_from_slice(b"\\N"),
                Some(value) => {
                    self.scratch.clear();
                    write_text(value, &mut self.scratch);
                    escape_into(out, self.scratch.as_bytes());
                }
            }
        }
        if let Some(op) = op {
            out.extend_from_slice(b"\t");
            out.extend_from_slice(op.to_string().as_bytes());
        }
        out.extend_from_slice(b"\n");
    }
}

/// Appends `text` with COPY's special bytes escaped.
fn escape_into(out: &mut BytesMut, text: &[u8]) {
    let special = |b: &u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r');
    if !text.iter().any(special) {
        out.extend_from_slice(text);
        return;
    }
    out.reserve(text.len() + 8);
    let mut start = 0;
    for (i, b) in text.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_tab_separated_and_escaped() {
        let mut out = BytesMut::new();
        let mut writer = CopyWriter::default();
        let text = Value::Text("a\tb\nc\rd\\e".into());
        let bytes = Value::Bytes(vec![0xde, 0xad]);
        writer.row(
            &mut out,
            [
                Some(&Value::Int32(7)),
                Some(&text),
                None,
                Some(&Value::Unchanged),
                Some(&bytes),
            ],
            Some(2),
        );
        writer.row(&mut out, [Some(&Value::Null)], Some(0));
        writer.row(&mut out, [Some(&Value::Int32(1)), None], None);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "7\ta\\tb\\nc\\rd\\\\e\t\\N\t\\N\t\\\\xdead\t2\n\\N\t0\n1\t\\N\n"
        );
    }

    #[test]
    fn array_literals_keep_their_backslashes_escaped_once_more() {
        let mut out = BytesMut::new();
        let array = Value::Array(vec![Value::Text("x\"y".into())]);
        CopyWriter::default().row(&mut out, [Some(&array)], Some(0));
        assert_eq!(std::str::from_utf8(&out).unwrap(), "{\"x\\\\\"y\"}\t0\n");
    }
}
