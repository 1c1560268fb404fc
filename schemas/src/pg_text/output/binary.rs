//! Text forms of `bytea` and `uuid`.
//!
//! With `bytea_output=hex` PostgreSQL prints `\x` followed by two lowercase hex digits per
//! byte; the older `escape` format (printable ASCII as is, `\\` and `\ooo` octal for the
//! rest) is read too, so a session that lost the setting still decodes correctly.

use super::Fault;

/// Parses a `bytea` in hex (`\x0a0b`) or escape format.
pub(super) fn parse_bytea(text: &str) -> Result<Vec<u8>, Fault> {
    match text.strip_prefix("\\x") {
        Some(hex_digits) => {
            hex::decode(hex_digits).map_err(|e| Fault::invalid(format!("bad hex: {e}")))
        }
        None => parse_escaped(text.as_bytes()),
    }
}

/// Parses the `escape` format of `bytea`.
fn parse_escaped(mut text: &[u8]) -> Result<Vec<u8>, Fault> {
    let mut out = Vec::with_capacity(text.len());
    while let Some((&b, rest)) = text.split_first() {
        if b != b'\\' {
            out.push(b);
            text = rest;
        } else if rest.first() == Some(&b'\\') {
            out.push(b'\\');
            text = &rest[1..];
        } else {
            match rest {
                [a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] => {
                    out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                    text = &rest[3..];
                }
                _ => {
                    return Err(Fault::invalid(
                        "a backslash must be followed by \\ or three octal digits",
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// Formats a `bytea` in hex format.
pub(super) fn format_bytea(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("\\x");
    out.push_str(&hex::encode(bytes));
    out
}

/// Parses a UUID (hyphenated as PostgreSQL prints it; braces or no hyphens also accepted).
pub(super) fn parse_uuid(text: &str) -> Result<[u8; 16], Fault> {
    uuid::Uuid::try_parse(text)
        .map(|u| u.into_bytes())
        .map_err(|e| Fault::invalid(e.to_string()))
}

/// Formats a UUID as PostgreSQL does (lowercase, hyphenated).
pub(super) fn format_uuid(bytes: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*bytes).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_hex_and_escape() {
        assert_eq!(parse_bytea("\\x0a0B"), Ok(vec![10, 11]));
        assert_eq!(parse_bytea("\\x"), Ok(vec![]));
        assert_eq!(
            parse_bytea("ab\\\\c\\001\\377"),
            Ok(vec![b'a', b'b', b'\\', b'c', 1, 255])
        );
        assert!(parse_bytea("\\x0").is_err());
        assert!(parse_bytea("\\xzz").is_err());
        assert!(parse_bytea("a\\9").is_err());
        assert_eq!(format_bytea(&[0, 255, 16]), "\\x00ff10");
    }

    #[test]
    fn uuids() {
        let text = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let bytes = parse_uuid(text).unwrap();
        assert_eq!(format_uuid(&bytes), text);
        assert_eq!(parse_uuid("A0EEBC999C0B4EF8BB6D6BB9BD380A11"), Ok(bytes));
        assert!(parse_uuid("a0eebc99").is_err());
    }
}
