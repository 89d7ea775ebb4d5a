//! Raw statements, written once with PostgreSQL's `$1, $2, …` placeholders for both
//! backends.
//!
//! SQLite accepts `$N`, but treats each as a *named* parameter: parsing looks every name up
//! in a list of those seen so far, and so does binding (sqlx asks each parameter's name), so
//! a statement with *n* placeholders costs O(n²) string comparisons twice. A group commit's
//! multi-row insert has hundreds (14 columns × 30 attempts is 420), and that cost made
//! multi-row inserts slower than one insert per row. On SQLite [`stmt`] therefore rewrites
//! each `$N` into an anonymous `?` and orders the values to match (repeating a value that
//! is used twice), which SQLite binds by position.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};

/// A statement for `backend` from SQL with `$N` placeholders and their values.
pub(crate) fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    if backend != DbBackend::Sqlite || !sql.contains('$') {
        return Statement::from_sql_and_values(backend, sql, values);
    }
    let (sql, values, _) = positional(sql, values);
    Statement::from_sql_and_values(backend, sql, values)
}

/// The JSON of a bound value, for statements that take a batch's rows as one JSON array
/// (PostgreSQL's `json_to_recordset`): text, integers, booleans, or `null`.
pub(crate) fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::String(Some(s)) => serde_json::Value::String(s.to_string()),
        Value::BigInt(Some(i)) => (*i).into(),
        Value::Int(Some(i)) => (*i).into(),
        Value::Bool(Some(b)) => (*b).into(),
        _ => serde_json::Value::Null,
    }
}

/// Runs `statements` (SQL with `$N` placeholders, and values) in order on `db`, normally
/// an open transaction, and returns the rows they produce, in order.
///
/// On SQLite they go as one text of several statements: sqlx runs them one after another
/// on the connection's own thread, binding anonymous `?` parameters across them in order,
/// so a batch costs one hand-off to that thread instead of one per statement. That matters
/// under the single write gate, where every hand-off is time nobody else can write. On
/// PostgreSQL the extended protocol takes one statement per message, so they run in turn.
/// Should one fail, the ones after it do not run and the caller's transaction rolls back.
pub(crate) async fn run_all<C: ConnectionTrait>(
    db: &C,
    statements: Vec<(String, Vec<Value>)>,
) -> Result<Vec<QueryResult>, DbErr> {
    let backend = db.get_database_backend();
    if backend != DbBackend::Sqlite {
        let mut rows = Vec::new();
        for (sql, values) in statements {
            rows.extend(db.query_all_raw(stmt(backend, &sql, values)).await?);
        }
        return Ok(rows);
    }
    let (text, all) = joined(statements)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    db.query_all_raw(Statement::from_sql_and_values(backend, text, all))
        .await
}

/// SQLite: `statements` as one text of several, with anonymous `?` parameters and their
/// values in order ([`run_all`]); empty for none.
pub(crate) fn joined(statements: Vec<(String, Vec<Value>)>) -> Result<(String, Vec<Value>), DbErr> {
    let mut text = String::new();
    let mut all = Vec::new();
    for (sql, values) in statements {
        let (sql, values, complete) = positional(&sql, values);
        // A placeholder without a value stays `$N`, which SQLite would bind to the N-th
        // value of the whole joined list rather than report.
        if !complete {
            return Err(DbErr::Custom(format!(
                "a placeholder has no value in: {sql}"
            )));
        }
        if !text.is_empty() {
            text.push_str(";\n");
        }
        text.push_str(&sql);
        all.extend(values);
    }
    Ok((text, all))
}

/// Rewrites `$N` placeholders outside quoted strings and identifiers into `?`, with the
/// values in the order they now appear. A placeholder without a value is left as it was,
/// so the database reports it; the flag is `false` then.
///
/// It scans bytes and copies the text between placeholders and quotes in runs: a group
/// commit's text is tens of kilobytes, and a character-at-a-time copy of it was a few
/// percent of the inbound pipeline's CPU. (`$`, quotes and digits are ASCII, so a byte scan
/// never splits a UTF-8 character.)
fn positional(sql: &str, values: Vec<Value>) -> (String, Vec<Value>, bool) {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut ordered = Vec::with_capacity(values.len());
    let mut complete = true;
    // `copied`: everything before it is in `out`; `i`: where the scan is.
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                // Skip to the closing quote (a doubled quote closes and reopens: same text).
                i = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == quote)
                    .map_or(bytes.len(), |at| i + 1 + at + 1);
            }
            b'$' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let end = i + 1 + digits;
                let value = sql[i + 1..end]
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|n| values.get(n));
                match value {
                    Some(v) => {
                        out.push_str(&sql[copied..i]);
                        out.push('?');
                        ordered.push(v.clone());
                        copied = end;
                    }
                    None => complete = false,
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    (out, ordered, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_positional_in_the_order_they_appear() {
        let (sql, values, complete) = positional(
            "INSERT INTO t VALUES ($2, $1, $10, $1) WHERE a = '$3' AND \"$4\" = $3",
            (1..=10).map(|n| Value::from(n as i64)).collect(),
        );
        assert_eq!(
            sql,
            "INSERT INTO t VALUES (?, ?, ?, ?) WHERE a = '$3' AND \"$4\" = ?"
        );
        let got: Vec<Value> = values;
        let want: Vec<Value> = [2i64, 1, 10, 1, 3].into_iter().map(Value::from).collect();
        assert_eq!(got, want);
        assert!(complete);
    }

    #[test]
    fn a_quote_inside_a_string_and_a_missing_value_are_left_alone() {
        let (sql, values, complete) = positional(
            "SELECT 'it''s $1', $1, $7, json_extract(x, '$.a')",
            vec![Value::from("v")],
        );
        assert_eq!(sql, "SELECT 'it''s $1', ?, $7, json_extract(x, '$.a')");
        assert_eq!(values, vec![Value::from("v")]);
        assert!(!complete, "$7 has no value");
    }

    #[test]
    fn unterminated_quotes_multibyte_text_and_a_bare_dollar_are_copied_as_they_are() {
        let (sql, values, complete) = positional(
            "SELECT 'café $1', $1, $, \"naïve $2",
            vec![Value::from("v"), Value::from("w")],
        );
        assert_eq!(sql, "SELECT 'café $1', ?, $, \"naïve $2");
        assert_eq!(values, vec![Value::from("v")]);
        assert!(!complete, "a bare $ has no value");
        let (sql, values, complete) = positional("$2$1", vec![Value::from(1i64), 2i64.into()]);
        assert_eq!(sql, "??");
        assert_eq!(values, vec![Value::from(2i64), 1i64.into()]);
        assert!(complete);
    }

    #[test]
    fn postgres_statements_are_untouched() {
        let s = stmt(DbBackend::Postgres, "SELECT $1", vec![Value::from(1i64)]);
        assert_eq!(s.sql, "SELECT $1");
    }
}
