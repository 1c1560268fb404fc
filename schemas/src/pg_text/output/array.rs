//! Text form of one-dimensional arrays: `{1,2,NULL,"a b","with \"quote\""}`.
//!
//! PostgreSQL prints each element in its own text form and double-quotes it when it is
//! empty, spells `NULL` (in any case), or contains a quote, a backslash, a brace, the
//! delimiter or ASCII white space; inside quotes `"` and `\` are escaped with a
//! backslash. An unquoted `NULL` is a NULL element. The delimiter is `,` for every type
//! but `box`, which uses `;`. An array whose lower bound is not 1 is printed with its
//! bounds first (`[0:1]={1,2}`); we check them and keep the elements only.
//!
//! Multi-dimensional arrays (`{{1,2},{3,4}}`) cannot be carried by [`Value::Array`] and
//! are refused as unsupported.

use super::{excerpt, format_output, parse_text, Fault, TypeError};
use crate::{ColumnType, Value};

/// The element delimiter PostgreSQL uses for arrays of `element`.
pub(super) fn delimiter(element: &ColumnType) -> char {
    match element {
        ColumnType::Other { name } if name == "box" => ';',
        _ => ',',
    }
}

/// Whether `c` is white space to PostgreSQL's array parser.
fn is_array_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Parses an array literal of `element`s; `ty` is the array type, for messages.
pub(super) fn parse_array(
    column: &str,
    ty: &ColumnType,
    element: &ColumnType,
    text: &str,
) -> Result<Value, TypeError> {
    let items =
        split(text, delimiter(element)).map_err(|fault| fault.into_error(column, ty, text))?;
    items
        .into_iter()
        .map(|item| match item {
            None => Ok(Value::Null),
            Some(item) => parse_text(column, element, &item).map_err(|e| in_element(e, text)),
        })
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

/// Adds the whole array's text to an element's error.
fn in_element(err: TypeError, array: &str) -> TypeError {
    match err {
        TypeError::Parse {
            column,
            ty,
            text,
            reason,
        } => TypeError::Parse {
            column,
            ty,
            text,
            reason: format!("{reason} (in array {:?})", excerpt(array)),
        },
        other => other,
    }
}

/// Splits an array literal into its elements' texts (`None` for NULL).
fn split(text: &str, delim: char) -> Result<Vec<Option<String>>, Fault> {
    let mut rest = text.trim_start_matches(is_array_space);
    let mut declared = None;
    if rest.starts_with('[') {
        let (bounds, after) = rest
            .split_once('=')
            .ok_or_else(|| Fault::invalid("dimensions without ="))?;
        declared = Some(dimension(bounds.trim_end_matches(is_array_space))?);
        rest = after.trim_start_matches(is_array_space);
    }
    let mut chars = rest.chars().peekable();
    if chars.next() != Some('{') {
        return Err(Fault::invalid("an array must start with {"));
    }
    let mut items = Vec::new();
    skip_space(&mut chars);
    if chars.peek() == Some(&'}') {
        chars.next();
    } else {
        loop {
            skip_space(&mut chars);
            items.push(element(&mut chars, delim)?);
            match chars.next() {
                Some(c) if c == delim => continue,
                Some('}') => break,
                Some(c) => {
                    return Err(Fault::invalid(format!("unexpected {c:?} after an element")))
                }
                None => return Err(Fault::invalid("missing }")),
            }
        }
    }
    skip_space(&mut chars);
    if chars.next().is_some() {
        return Err(Fault::invalid("junk after the closing }"));
    }
    match declared {
        Some(n) if n != items.len() => Err(Fault::invalid(format!(
            "dimensions say {n} elements, the array has {}",
            items.len()
        ))),
        _ => Ok(items),
    }
}

/// Parses a `[lo:hi]` dimension decoration into an element count.
fn dimension(bounds: &str) -> Result<usize, Fault> {
    let inner = bounds
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .ok_or_else(|| Fault::invalid("bad dimensions"))?;
    if inner.contains('[') {
        return Err(Fault::Unsupported(
            "multi-dimensional arrays are not supported".into(),
        ));
    }
    let (lo, hi) = inner.split_once(':').unwrap_or(("1", inner));
    let bound = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| Fault::invalid("bad dimensions"))
    };
    let (lo, hi) = (bound(lo)?, bound(hi)?);
    usize::try_from(hi - lo + 1).map_err(|_| Fault::invalid("bad dimensions"))
}

/// Skips array white space.
fn skip_space(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| is_array_space(*c)).is_some() {}
}

/// Reads one element up to (not including) the delimiter or `}`; `None` for NULL.
fn element(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    delim: char,
) -> Result<Option<String>, Fault> {
    let mut out = String::new();
    match chars.peek() {
        Some('{') => {
            return Err(Fault::Unsupported(
                "multi-dimensional arrays are not supported".into(),
            ))
        }
        Some('"') => {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => out.push(
                        chars
                            .next()
                            .ok_or_else(|| Fault::invalid("unterminated quote"))?,
                    ),
                    Some(c) => out.push(c),
                    None => return Err(Fault::invalid("unterminated quote")),
                }
            }
            skip_space(chars);
            return Ok(Some(out));
        }
        _ => {}
    }
    // Unquoted: trailing white space is dropped unless escaped.
    let mut kept = 0;
    let mut escaped = false;
    while let Some(&c) = chars.peek() {
        if c == delim || c == '}' {
            break;
        }
        chars.next();
        match c {
            '\\' => {
                out.push(
                    chars
                        .next()
                        .ok_or_else(|| Fault::invalid("backslash at the end"))?,
                );
                escaped = true;
                kept = out.len();
            }
            '"' | '{' => {
                return Err(Fault::invalid(format!(
                    "unexpected {c:?} in an unquoted element"
                )))
            }
            c => {
                out.push(c);
                if !is_array_space(c) {
                    kept = out.len();
                }
            }
        }
    }
    out.truncate(kept);
    if out.is_empty() && !escaped {
        return Err(Fault::invalid("empty element"));
    }
    if !escaped && out.eq_ignore_ascii_case("NULL") {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Formats an array literal with `delim` between elements, as PostgreSQL does.
pub(super) fn format_array(items: &[Value], delim: char) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(delim);
        }
        if item.is_null() {
            out.push_str("NULL");
            continue;
        }
        let text = format_output(item);
        let quote = text.is_empty()
            || text.eq_ignore_ascii_case("NULL")
            || text
                .chars()
                .any(|c| matches!(c, '"' | '\\' | '{' | '}') || c == delim || is_array_space(c));
        if quote {
            out.push('"');
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(items: &[Option<&str>]) -> Vec<Option<String>> {
        items.iter().map(|i| i.map(String::from)).collect()
    }

    #[test]
    fn splits_postgres_output() {
        let text = r#"{1,2,NULL,"a b","with \"quote\"","NULL","","a\\b","{x}","a,b"}"#;
        let expected = texts(&[
            Some("1"),
            Some("2"),
            None,
            Some("a b"),
            Some("with \"quote\""),
            Some("NULL"),
            Some(""),
            Some("a\\b"),
            Some("{x}"),
            Some("a,b"),
        ]);
        assert_eq!(split(text, ','), Ok(expected.clone()));
        let values: Vec<Value> = expected
            .iter()
            .map(|t| t.clone().map_or(Value::Null, Value::Text))
            .collect();
        assert_eq!(format_array(&values, ','), text);
    }

    #[test]
    fn accepts_what_postgres_accepts_as_input() {
        assert_eq!(split("{}", ','), Ok(vec![]));
        assert_eq!(
            split(" { ab , cd } ", ','),
            Ok(texts(&[Some("ab"), Some("cd")]))
        );
        assert_eq!(
            split(r"{a\ ,null,\NULL}", ','),
            Ok(texts(&[Some("a "), None, Some("NULL")]))
        );
        assert_eq!(
            split(r#"{ "x" , y}"#, ','),
            Ok(texts(&[Some("x"), Some("y")]))
        );
        assert_eq!(
            split("[0:1]={1,2}", ','),
            Ok(texts(&[Some("1"), Some("2")]))
        );
        assert_eq!(
            split("{(1,1),(0,0);(2,2),(1,1)}", ';'),
            Ok(texts(&[Some("(1,1),(0,0)"), Some("(2,2),(1,1)")]))
        );
    }

    #[test]
    fn refuses_malformed_and_multi_dimensional_arrays() {
        for bad in [
            "",
            "1,2",
            "{1,2",
            "{1,,2}",
            "{1,2}x",
            r#"{"a}"#,
            r#"{a"b"}"#,
            "[0:2]={1,2}",
            "{a\\}",
        ] {
            assert!(matches!(split(bad, ','), Err(Fault::Invalid(_))), "{bad}");
        }
        for multi in ["{{1,2},{3,4}}", "[1:2][1:1]={{1},{2}}", "{1,{2}}"] {
            assert!(
                matches!(split(multi, ','), Err(Fault::Unsupported(_))),
                "{multi}"
            );
        }
    }

    #[test]
    fn elements_are_typed_and_quoted() {
        let ty = ColumnType::Array {
            element: Box::new(ColumnType::Bytes),
        };
        let ColumnType::Array { element } = &ty else {
            unreachable!()
        };
        let parsed = parse_array("c", &ty, element, r#"{"\\x0102",NULL}"#).unwrap();
        assert_eq!(
            parsed,
            Value::Array(vec![Value::Bytes(vec![1, 2]), Value::Null])
        );
        assert_eq!(
            format_array(&[Value::Bytes(vec![1, 2]), Value::Null], ','),
            r#"{"\\x0102",NULL}"#
        );
        let stamps = [Value::TimestampTz(1_704_067_200_000_000)];
        assert_eq!(format_array(&stamps, ','), r#"{"2024-01-01 00:00:00+00"}"#);
        let err = parse_array("c", &ty, element, r#"{"\\xzz"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column c") && err.contains("in array"),
            "{err}"
        );
    }
}
