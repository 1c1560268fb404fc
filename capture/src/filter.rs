//! Table filters: `include` / `exclude` lists of `<container>.<table>` patterns, where
//! `*` matches any run of characters (the container is a PostgreSQL schema or a MySQL
//! database).

use crate::error::CaptureError;

/// Checks that every pattern names a container and a table; errors name
/// `key_path.include` or `key_path.exclude`.
pub(crate) fn check_patterns(
    key_path: &str,
    container: &str,
    include: &[String],
    exclude: &[String],
) -> Result<(), CaptureError> {
    for (key, patterns) in [("include", include), ("exclude", exclude)] {
        if let Some(p) = patterns.iter().find(|p| !p.contains('.')) {
            return Err(CaptureError::Setup(format!(
                "{key_path}.{key}: pattern {p:?} must be {container}.table (use * as a wildcard)"
            )));
        }
    }
    Ok(())
}

/// Whether `container.name` is selected: matched by `include` (or `include` is empty)
/// and by no `exclude` pattern. Tributary's own bookkeeping (the `tributary` schema or
/// database of a sink: watermarks, echo markers, merge states) is never captured.
pub(crate) fn selected(
    include: &[String],
    exclude: &[String],
    container: &str,
    name: &str,
) -> bool {
    if container == "tributary" {
        return false;
    }
    let full = format!("{container}.{name}");
    let included = include.is_empty() || include.iter().any(|p| glob(p, &full));
    included && !exclude.iter().any(|p| glob(p, &full))
}

/// Matches `text` against `pattern` where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}
