//! Row changes written to the binlog as statements.
//!
//! With `binlog_format = ROW` the server logs row changes as rows events and DDL as
//! statements, but a session can still override the format (`SET SESSION binlog_format`),
//! and its INSERT, UPDATE, DELETE and REPLACE then reach the binlog as text, without their
//! rows. Such a statement that may touch a captured table stops the capture, since its
//! rows cannot be captured and passing it by would lose them.
//!
//! The check is lexical, not a SQL parse: the statement's leading keyword says whether it
//! changes rows (INSERT, UPDATE, DELETE, REPLACE, LOAD, a `WITH …` common table expression
//! before one of them, or MariaDB's `SET STATEMENT … FOR` before one of them); then every
//! identifier outside literals and comments is taken as a table name, qualified (`db.t`)
//! or in the statement's default database, as written and lower-cased, and any one that
//! the source captures is enough. Within what it sees it errs towards stopping (a column
//! or keyword that happens to match a captured name stops it too), and the remedy, ROW
//! format for every session, is right either way. Statements on tables the source does not
//! capture pass.
//!
//! What it cannot see: rows a statement changes through a trigger, a view or a stored
//! function (`SELECT f()`, `DO f()`) on another table's name. Those are lost with a
//! statement-logged session as with any tool reading the binlog; only ROW format for every
//! session prevents it.

/// The row-changing verbs.
const VERBS: [&str; 5] = ["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"];

/// The row-changing verb `sql` starts with (after comments, a `WITH` clause or a
/// `SET STATEMENT … FOR` prefix), if any.
pub fn row_change_verb(sql: &str) -> Option<&'static str> {
    let words: Vec<&str> = Tokens::new(sql)
        .filter_map(|t| match t {
            Token::Word(w) => Some(w),
            Token::Quoted(_) | Token::Dot => None,
        })
        .collect();
    let verb = |w: &str| VERBS.into_iter().find(|v| w.eq_ignore_ascii_case(v));
    let is = |w: &&str, k: &str| w.eq_ignore_ascii_case(k);
    match words.as_slice() {
        [first, ..] if verb(first).is_some() => verb(first),
        // The first verb after the common table expressions (their SELECTs change nothing).
        [first, rest @ ..] if is(first, "WITH") => rest.iter().find_map(|w| verb(w)),
        [first, second, rest @ ..] if is(first, "SET") && is(second, "STATEMENT") => rest
            .iter()
            .position(|w| is(w, "FOR"))
            .and_then(|i| rest.get(i + 1))
            .and_then(|w| verb(w)),
        _ => None,
    }
}

/// The table a `TRUNCATE [TABLE] [db.]name` statement empties, as `(database, name)` with
/// `default_db` for an unqualified name; `None` for any other statement.
pub fn truncated_table(sql: &str, default_db: &str) -> Option<(String, String)> {
    let tokens: Vec<Token<'_>> = Tokens::new(sql).collect();
    let mut rest = match tokens.as_slice() {
        [Token::Word(w), rest @ ..] if w.eq_ignore_ascii_case("TRUNCATE") => rest,
        _ => return None,
    };
    if let [Token::Word(w), more @ ..] = rest {
        if w.eq_ignore_ascii_case("TABLE") {
            rest = more;
        }
    }
    let name = |t: &Token<'_>| match t {
        Token::Word(w) => Some(w.to_string()),
        Token::Quoted(q) => Some(q.clone()),
        Token::Dot => None,
    };
    match rest {
        [db, Token::Dot, table, ..] => Some((name(db)?, name(table)?)),
        [table, ..] => Some((default_db.to_string(), name(table)?)),
        [] => None,
    }
}

/// An XA statement, as the server logs it (`XA START X'74776f',X'',1`): the verb and the
/// transaction's xid in the server's own spelling, which is the same for every statement
/// of one transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Xa<'a> {
    Start(&'a str),
    /// `XA END`, or another verb that changes nothing in the binlog.
    End,
    Commit {
        xid: &'a str,
        /// `XA COMMIT … ONE PHASE`: the rows are in the same event group.
        one_phase: bool,
    },
    Rollback(&'a str),
}

/// An xid spelled as the server spells it in XA statements:
/// `X'<gtrid hex>',X'<bqual hex>',<formatID>`.
pub fn xid_text(format_id: i32, gtrid: &[u8], bqual: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("X'{}',X'{}',{format_id}", hex(gtrid), hex(bqual))
}

/// The XA statement `sql` is, if it is one.
pub fn xa(sql: &str) -> Option<Xa<'_>> {
    let (first, rest) = sql.trim().split_once(char::is_whitespace)?;
    if !first.eq_ignore_ascii_case("XA") {
        return None;
    }
    let rest = rest.trim_start();
    let (verb, xid) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let xid = xid.trim();
    let is = |w: &str| verb.eq_ignore_ascii_case(w);
    Some(if is("START") || is("BEGIN") {
        Xa::Start(xid)
    } else if is("COMMIT") {
        let upper = xid.to_ascii_uppercase();
        match upper.strip_suffix("ONE PHASE") {
            Some(head) => Xa::Commit {
                xid: xid[..head.len()].trim_end(),
                one_phase: true,
            },
            None => Xa::Commit {
                xid,
                one_phase: false,
            },
        }
    } else if is("ROLLBACK") {
        Xa::Rollback(xid)
    } else {
        Xa::End
    })
}

/// Reserved words that may appear in a row-changing statement: unquoted, they never name
/// a table.
const RESERVED: &[&str] = &[
    "ALL",
    "AND",
    "AS",
    "ASC",
    "BETWEEN",
    "BY",
    "CASE",
    "CROSS",
    "DEFAULT",
    "DELAYED",
    "DELETE",
    "DESC",
    "DISTINCT",
    "DIV",
    "DUAL",
    "ELSE",
    "EXISTS",
    "FALSE",
    "FOR",
    "FROM",
    "GROUP",
    "HAVING",
    "HIGH_PRIORITY",
    "IGNORE",
    "IN",
    "INFILE",
    "INNER",
    "INSERT",
    "INTERVAL",
    "INTO",
    "IS",
    "JOIN",
    "KEY",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOAD",
    "LOW_PRIORITY",
    "MOD",
    "NOT",
    "NULL",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "PARTITION",
    "REGEXP",
    "REPLACE",
    "RETURNING",
    "RIGHT",
    "RLIKE",
    "SELECT",
    "SET",
    "STRAIGHT_JOIN",
    "THEN",
    "TRUE",
    "UNION",
    "UPDATE",
    "USING",
    "VALUES",
    "WHEN",
    "WHERE",
    "WITH",
    "XOR",
];

/// Whether `sql`, run in database `default_db`, may name a table that `captured` selects.
/// A name followed by a dot qualifies the next one; a name alone is taken in
/// `default_db`, unless it is an unquoted reserved word.
pub fn may_touch(sql: &str, default_db: &str, captured: impl Fn(&str, &str) -> bool) -> bool {
    let tokens: Vec<Token<'_>> = Tokens::new(sql).collect();
    let mut qualifier: Option<String> = None;
    for (i, token) in tokens.iter().enumerate() {
        let after_dot = i > 0 && tokens[i - 1] == Token::Dot;
        let name = match token {
            Token::Dot => continue,
            // After a dot even a reserved word is a name (`shop.order`).
            Token::Word(w) if !after_dot && RESERVED.iter().any(|r| w.eq_ignore_ascii_case(r)) => {
                qualifier = None;
                continue;
            }
            Token::Word(w) => w.to_string(),
            Token::Quoted(q) => q.clone(),
        };
        let qualifies = tokens.get(i + 1) == Some(&Token::Dot);
        // As written and lower-cased (lower_case_table_names = 1 or 2 lets a statement
        // name `Shop.T` for the table the binlog calls shop.t).
        let captured_as = |db: &str, name: &str| {
            captured(db, name) || captured(&db.to_lowercase(), &name.to_lowercase())
        };
        let hit = match (&qualifier, after_dot) {
            (Some(db), true) => captured_as(db, &name),
            _ => !qualifies && !default_db.is_empty() && captured_as(default_db, &name),
        };
        if hit {
            return true;
        }
        qualifier = qualifies.then_some(name);
    }
    false
}

/// A lexical token of a statement: what may name a table, and the dots between names.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    /// A bare word (identifier or keyword).
    Word(&'a str),
    /// A back-quoted or double-quoted identifier, unquoted.
    Quoted(String),
    Dot,
}

/// The tokens of a statement, skipping literals, numbers, operators and comments. The
/// text of MySQL's executable comments (`/*! … */`, `/*M! … */`) is read as SQL.
struct Tokens<'a> {
    sql: &'a str,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn new(sql: &'a str) -> Self {
        Tokens { sql, at: 0 }
    }

    /// The position after the quoted text starting at `start` (its opening `quote`), and
    /// the text with escapes undone.
    fn quoted(&self, start: usize, quote: u8) -> (usize, String) {
        let bytes = self.sql.as_bytes();
        let mut text = Vec::new();
        let mut i = start + 1;
        while i < bytes.len() {
            let b = bytes[i];
            if b == quote {
                if bytes.get(i + 1) == Some(&quote) {
                    text.push(quote);
                    i += 2;
                    continue;
                }
                return (i + 1, String::from_utf8_lossy(&text).into_owned());
            }
            if b == b'\\' && quote != b'`' && i + 1 < bytes.len() {
                text.push(bytes[i + 1]);
                i += 2;
                continue;
            }
            text.push(b);
            i += 1;
        }
        (bytes.len(), String::from_utf8_lossy(&text).into_owned())
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let bytes = self.sql.as_bytes();
        while self.at < bytes.len() {
            let start = self.at;
            let b = bytes[start];
            let rest = &bytes[start..];
            if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") {
                // An executable comment: skip its marker and version, read its text.
                self.at += if rest[2] == b'M' { 4 } else { 3 };
                while self.at < bytes.len() && bytes[self.at].is_ascii_digit() {
                    self.at += 1;
                }
            } else if rest.starts_with(b"/*") {
                self.at = self.sql[start + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |end| start + 2 + end + 2);
            } else if rest.starts_with(b"*/") {
                self.at += 2;
            } else if b == b'#' || rest.starts_with(b"-- ") || rest == b"--" {
                self.at = self.sql[start..]
                    .find('\n')
                    .map_or(bytes.len(), |end| start + end + 1);
            } else if b == b'\'' {
                self.at = self.quoted(start, b'\'').0;
            } else if b == b'`' || b == b'"' {
                let (end, text) = self.quoted(start, b);
                self.at = end;
                return Some(Token::Quoted(text));
            } else if b == b'.' {
                self.at += 1;
                return Some(Token::Dot);
            } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80 {
                let len = self.sql[start..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()))
                    .unwrap_or(bytes.len() - start);
                self.at += len;
                let word = &self.sql[start..start + len];
                // A number (or its digits after a decimal point) names nothing.
                if !word.bytes().all(|b| b.is_ascii_digit()) {
                    return Some(Token::Word(word));
                }
            } else {
                // Whitespace, operators, parentheses, commas; multi-byte characters whole.
                self.at += self.sql[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop_t(db: &str, name: &str) -> bool {
        db == "shop" && name.eq_ignore_ascii_case("t")
    }

    #[test]
    fn xa_statements_give_their_xid() {
        assert_eq!(
            xa("XA START X'74776f',X'',1"),
            Some(Xa::Start("X'74776f',X'',1"))
        );
        assert_eq!(xa("xa end X'74776f',X'',1"), Some(Xa::End));
        assert_eq!(
            xa("XA COMMIT X'0102',X'aa',7"),
            Some(Xa::Commit {
                xid: "X'0102',X'aa',7",
                one_phase: false
            })
        );
        assert_eq!(
            xa("XA COMMIT X'6f6e65',X'',1 ONE PHASE"),
            Some(Xa::Commit {
                xid: "X'6f6e65',X'',1",
                one_phase: true
            })
        );
        assert_eq!(
            xa("XA ROLLBACK X'72',X'',1"),
            Some(Xa::Rollback("X'72',X'',1"))
        );
        assert_eq!(xa("XACT"), None);
        assert_eq!(xa("INSERT INTO xa VALUES (1)"), None);
    }

    #[test]
    fn truncated_tables_are_named() {
        let t = |db: &str, n: &str| Some((db.to_string(), n.to_string()));
        assert_eq!(truncated_table("TRUNCATE TABLE t", "shop"), t("shop", "t"));
        assert_eq!(truncated_table("truncate `shop`.`t`", "x"), t("shop", "t"));
        assert_eq!(
            truncated_table("/* x */ TRUNCATE TABLE other.order", ""),
            t("other", "order")
        );
        assert_eq!(truncated_table("TRUNCATE TABLE", "shop"), None);
        assert_eq!(truncated_table("DROP TABLE t", "shop"), None);
    }

    #[test]
    fn verbs_are_found_after_comments() {
        assert_eq!(row_change_verb("insert into t values (1)"), Some("INSERT"));
        assert_eq!(
            row_change_verb("/* app 1 */ -- x\n UPDATE t SET a = 1"),
            Some("UPDATE")
        );
        assert_eq!(row_change_verb("/*!40000 DELETE */ FROM t"), Some("DELETE"));
        assert_eq!(
            row_change_verb("WITH c AS (SELECT 1 AS id) UPDATE t JOIN c USING (id) SET a = 2"),
            Some("UPDATE")
        );
        assert_eq!(
            row_change_verb("SET STATEMENT max_statement_time = 5 FOR DELETE FROM t"),
            Some("DELETE")
        );
        assert_eq!(
            row_change_verb("SET STATEMENT x = 1 FOR ALTER TABLE t"),
            None
        );
        assert_eq!(row_change_verb("ALTER TABLE t ADD c int"), None);
        assert_eq!(row_change_verb("CREATE TABLE insert_log (a int)"), None);
        assert_eq!(row_change_verb(""), None);
    }

    #[test]
    fn captured_tables_are_found_qualified_quoted_or_by_default_database() {
        assert!(may_touch("INSERT INTO t VALUES (1)", "shop", shop_t));
        assert!(may_touch("INSERT INTO shop.t VALUES (1)", "other", shop_t));
        assert!(may_touch("INSERT INTO `shop` . `t` VALUES (1)", "", shop_t));
        assert!(may_touch(
            "UPDATE other.u JOIN shop.t USING (id) SET u.a = 1",
            "other",
            shop_t
        ));
        assert!(may_touch(
            "DELETE /*!40005 LOW_PRIORITY */ FROM `t`",
            "shop",
            shop_t
        ));
        // Names in literals, comments and other databases do not count.
        assert!(!may_touch(
            "INSERT INTO u VALUES ('shop.t', 't', \"x\") -- t",
            "other",
            shop_t
        ));
        assert!(!may_touch(
            "INSERT INTO other.t VALUES (1.5, 'ñ–x') – ünïcode",
            "shop",
            shop_t
        ));
        assert!(!may_touch(
            "/* shop.t */ INSERT INTO u SELECT 'it''s t', 'a\\'t' # t",
            "other",
            shop_t
        ));
        // A table of the same name in another database is not the captured one.
        assert!(!may_touch(
            "INSERT INTO other.t VALUES (1)",
            "other",
            shop_t
        ));
        // With every table of the default database captured, reserved words and
        // qualifiers are not taken for its tables.
        let all_of_shop = |d: &str, _: &str| d == "shop";
        assert!(!may_touch(
            "INSERT INTO other.u VALUES (1), (2)",
            "shop",
            all_of_shop
        ));
        // A column is taken for a table too: the check errs towards stopping.
        assert!(may_touch(
            "INSERT INTO other.u VALUES (1) ON DUPLICATE KEY UPDATE id = 2",
            "shop",
            all_of_shop
        ));
        assert!(may_touch(
            "DELETE FROM log WHERE id > 3",
            "shop",
            all_of_shop
        ));
        assert!(may_touch(
            "INSERT INTO `key` VALUES (1)",
            "shop",
            all_of_shop
        ));
        // A reserved word after a dot names a table; names are also tried lower-cased.
        let order = |d: &str, n: &str| d == "shop" && n == "order";
        assert!(may_touch("INSERT INTO shop.order VALUES (1)", "", order));
        assert!(may_touch("UPDATE SHOP.T SET a = 1", "", shop_t));
        assert!(may_touch("DELETE FROM T", "Shop", shop_t));
        // Non-ASCII letters and marks belong to an identifier (NFD café: e + U+0301).
        let cafe = |d: &str, n: &str| d == "shop" && n == "cafe\u{301}s";
        assert!(may_touch(
            "INSERT INTO cafe\u{301}s VALUES (1)",
            "shop",
            cafe
        ));
    }
}
