//! MLflow's search filter grammar (the subset clients send), ordering and page tokens.
//!
//! `filter := clause (AND clause)*`, no OR and no parentheses; a clause is
//! `identifier comparator value`, `identifier [NOT] IN (v, ...)` or `identifier IS [NOT] NULL`.
//! Filtering and ordering run over loaded entities here, the same way for both database
//! backends; runs searches are answered by the database instead ([`crate::search_sql`]) and
//! come here only for a clause SQL cannot say exactly.

use std::cmp::Ordering;

use base64::Engine as _;

use crate::error::{invalid, Result};

/// What a clause's identifier refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Metric(String),
    Param(String),
    Tag(String),
    Attribute(String),
    Dataset(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    List(Vec<String>),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub field: Field,
    pub op: Op,
    pub value: Literal,
}

/// A value an entity has for a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
}

/// What searchable entities expose.
pub trait Searchable {
    fn field(&self, field: &Field) -> Option<Value>;
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Token>> {
    let bad = |m: String| invalid(format!("Invalid filter '{s}': {m}"));
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' || ch == '"' || ch == '`' {
            // Quoted: strings ('...'), or quoted identifier parts ("..." and `...`).
            let q = ch;
            let mut j = i + 1;
            let mut text = String::new();
            loop {
                if j >= c.len() {
                    return bad("unterminated quote".into());
                }
                if c[j] == '\\' && j + 1 < c.len() {
                    text.push(c[j + 1]);
                    j += 2;
                    continue;
                }
                if c[j] == q {
                    if q == '\'' && j + 1 < c.len() && c[j + 1] == '\'' {
                        text.push('\'');
                        j += 2;
                        continue;
                    }
                    break;
                }
                text.push(c[j]);
                j += 1;
            }
            i = j + 1;
            if q == '\'' {
                out.push(Token::Str(text));
            } else {
                // A quoted key joins a preceding `prefix.`.
                match out.last_mut() {
                    Some(Token::Ident(prev)) if prev.ends_with('.') => prev.push_str(&text),
                    _ => out.push(Token::Ident(text)),
                }
            }
        } else if ch == '(' {
            out.push(Token::LParen);
            i += 1;
        } else if ch == ')' {
            out.push(Token::RParen);
            i += 1;
        } else if ch == ',' {
            out.push(Token::Comma);
            i += 1;
        } else if "=!<>".contains(ch) {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            if ["!=", ">=", "<=", "<>", "=="].contains(&two.as_str()) {
                out.push(Token::Op(if two == "<>" {
                    "!=".into()
                } else if two == "==" {
                    "=".into()
                } else {
                    two
                }));
                i += 2;
            } else if ch == '!' {
                return bad("'!' must be followed by '='".into());
            } else {
                out.push(Token::Op(ch.to_string()));
                i += 1;
            }
            if matches!(c.get(i), Some('=' | '<' | '>')) {
                return bad("unknown comparator".into());
            }
        } else if ch.is_ascii_digit()
            || ((ch == '-' || ch == '.') && c.get(i + 1).is_some_and(|n| n.is_ascii_digit()))
        {
            let mut j = i + 1;
            while j < c.len()
                && (c[j].is_ascii_alphanumeric()
                    || c[j] == '.'
                    || ((c[j] == '-' || c[j] == '+') && matches!(c[j - 1], 'e' | 'E')))
            {
                j += 1;
            }
            let text: String = c[i..j].iter().collect();
            match text.parse::<f64>() {
                Ok(n) => out.push(Token::Num(n)),
                Err(_) => out.push(Token::Ident(text)),
            }
            i = j;
        } else if ch.is_alphanumeric() || ch == '_' {
            let mut j = i;
            while j < c.len() && (c[j].is_alphanumeric() || "_.-:/".contains(c[j])) {
                j += 1;
            }
            let text: String = c[i..j].iter().collect();
            i = j;
            match out.last_mut() {
                // `prefix."quoted key"` followed by nothing; or a bare continuation.
                Some(Token::Ident(prev)) if prev.ends_with('.') => prev.push_str(&text),
                _ => out.push(Token::Ident(text)),
            }
        } else {
            return bad(format!("unexpected character '{ch}'"));
        }
    }
    Ok(out)
}

/// Which identifier prefixes an entity accepts, and how bare names are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Runs,
    Experiments,
    RegisteredModels,
    ModelVersions,
    LoggedModels,
}

fn field_of(ident: &str, entity: Entity) -> Result<Field> {
    let (prefix, key) = match ident.split_once('.') {
        Some((p, k)) => (p.to_ascii_lowercase(), k.to_string()),
        None => (String::new(), ident.to_string()),
    };
    let f = match prefix.as_str() {
        "metric" | "metrics" if matches!(entity, Entity::Runs | Entity::LoggedModels) => {
            Field::Metric(key)
        }
        "param" | "params" | "parameter" | "parameters"
            if matches!(entity, Entity::Runs | Entity::LoggedModels) =>
        {
            Field::Param(key)
        }
        "tag" | "tags" => Field::Tag(key),
        "attribute" | "attributes" | "attr" => Field::Attribute(attr_name(&key)),
        "run" if entity == Entity::Runs => Field::Attribute(attr_name(&key)),
        "dataset" | "datasets" if entity == Entity::Runs => Field::Dataset(key),
        "" => Field::Attribute(attr_name(&key)),
        _ => {
            return invalid(format!(
                "Invalid identifier '{ident}': unknown prefix '{prefix}'"
            ))
        }
    };
    if let Field::Attribute(a) = &f {
        let allowed: &[&str] = match entity {
            Entity::Runs => &[
                "run_id",
                "run_name",
                "status",
                "user_id",
                "artifact_uri",
                "start_time",
                "end_time",
                "lifecycle_stage",
            ],
            Entity::Experiments => &["name", "experiment_id", "creation_time", "last_update_time"],
            Entity::RegisteredModels => &["name", "creation_timestamp", "last_updated_timestamp"],
            Entity::ModelVersions => &[
                "name",
                "version_number",
                "run_id",
                "source_path",
                "creation_timestamp",
                "last_updated_timestamp",
                "current_stage",
            ],
            Entity::LoggedModels => &[
                "name",
                "model_id",
                "model_type",
                "status",
                "source_run_id",
                "creation_timestamp",
                "last_updated_timestamp",
            ],
        };
        if !allowed.contains(&a.as_str()) {
            return invalid(format!(
                "Invalid attribute key '{a}'. Valid keys: {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(f)
}

fn attr_name(key: &str) -> String {
    match key {
        "created" | "Created" => "start_time".into(),
        "run name" | "runName" => "run_name".into(),
        "creation_time" => "creation_time".into(),
        "last_updated_time" => "last_updated_timestamp".into(),
        k => k.to_string(),
    }
}

/// Parses a filter string ("" means no filter).
pub fn parse_filter(filter: &str, entity: Entity) -> Result<Vec<Clause>> {
    let tokens = tokenize(filter)?;
    let bad = |m: &str| invalid(format!("Invalid filter '{filter}': {m}"));
    let mut clauses = Vec::new();
    let mut i = 0;
    let kw = |t: Option<&Token>, w: &str| matches!(t, Some(Token::Ident(s)) if s.eq_ignore_ascii_case(w));
    while i < tokens.len() {
        let Token::Ident(ident) = &tokens[i] else {
            return bad("expected an identifier");
        };
        let mut field = field_of(ident, entity)?;
        // In logged-model search, bare `creation_time` aliases `creation_timestamp`.
        if entity == Entity::LoggedModels {
            if let Field::Attribute(a) = &mut field {
                if a == "creation_time" {
                    *a = "creation_timestamp".into();
                }
            }
        }
        i += 1;
        let (op, value) = match tokens.get(i) {
            Some(Token::Op(o)) => {
                let op = match o.as_str() {
                    "=" => Op::Eq,
                    "!=" => Op::Ne,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    _ => return bad("unknown comparator"),
                };
                i += 1;
                let v = match tokens.get(i) {
                    Some(Token::Str(s)) => Literal::Str(s.clone()),
                    Some(Token::Num(n)) => Literal::Num(*n),
                    _ => return bad("expected a quoted string or a number after the comparator"),
                };
                i += 1;
                (op, v)
            }
            t if kw(t, "LIKE") || kw(t, "ILIKE") => {
                let op = if kw(t, "LIKE") { Op::Like } else { Op::ILike };
                i += 1;
                let Some(Token::Str(s)) = tokens.get(i) else {
                    return bad("LIKE needs a quoted pattern");
                };
                i += 1;
                (op, Literal::Str(s.clone()))
            }
            t if kw(t, "IN") || (kw(t, "NOT") && kw(tokens.get(i + 1), "IN")) => {
                let op = if kw(t, "NOT") {
                    i += 1;
                    Op::NotIn
                } else {
                    Op::In
                };
                i += 1;
                if tokens.get(i) != Some(&Token::LParen) {
                    return bad("IN needs a parenthesised list");
                }
                i += 1;
                let mut items = Vec::new();
                loop {
                    match tokens.get(i) {
                        Some(Token::Str(s)) => items.push(s.clone()),
                        Some(Token::Num(n)) => items.push(n.to_string()),
                        _ => return bad("IN lists hold quoted strings"),
                    }
                    i += 1;
                    match tokens.get(i) {
                        Some(Token::Comma) => i += 1,
                        Some(Token::RParen) => {
                            i += 1;
                            break;
                        }
                        _ => return bad("unterminated IN list"),
                    }
                }
                (op, Literal::List(items))
            }
            t if kw(t, "IS") => {
                i += 1;
                let not = kw(tokens.get(i), "NOT");
                if not {
                    i += 1;
                }
                if !kw(tokens.get(i), "NULL") {
                    return bad("expected NULL after IS");
                }
                i += 1;
                (if not { Op::IsNotNull } else { Op::IsNull }, Literal::Null)
            }
            _ => return bad("expected a comparator"),
        };
        // Metrics compare numbers; params and tags compare strings.
        match (&field, &value, op) {
            (
                Field::Metric(_),
                Literal::Num(_),
                Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le,
            ) => {}
            (Field::Metric(_), _, _) => {
                return bad("metrics compare with =, !=, <, <=, >, >= and a number")
            }
            (Field::Param(_) | Field::Tag(_) | Field::Dataset(_), Literal::Num(_), _) => {
                return bad("params, tags and datasets compare with quoted strings")
            }
            (Field::Param(_) | Field::Tag(_), _, Op::Gt | Op::Ge | Op::Lt | Op::Le) => {
                return bad("params and tags support =, !=, LIKE, ILIKE, IS NULL")
            }
            _ => {}
        }
        clauses.push(Clause { field, op, value });
        if i < tokens.len() {
            if !kw(tokens.get(i), "AND") {
                return bad("clauses must be joined with AND (OR is not supported)");
            }
            i += 1;
            if i == tokens.len() {
                return bad("nothing after AND");
            }
        }
    }
    Ok(clauses)
}

/// SQL LIKE: `%` any run, `_` one character.
pub fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            text.to_lowercase().chars().collect(),
            pattern.to_lowercase().chars().collect(),
        )
    } else {
        (text.chars().collect(), pattern.chars().collect())
    };
    // Iterative wildcard matching with backtracking to the last '%'.
    let (mut ti, mut pi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether an entity satisfies every clause.
pub fn matches<E: Searchable>(e: &E, clauses: &[Clause]) -> bool {
    clauses.iter().all(|c| {
        let v = e.field(&c.field);
        match (c.op, &c.value, v) {
            (Op::IsNull, _, v) => v.is_none(),
            (Op::IsNotNull, _, v) => v.is_some(),
            // The client hides prompts with `tags.mlflow.prompt.is_prompt != 'true'`; models
            // without the tag must match (MLflow treats it as an anti-join).
            (Op::Ne, Literal::Str(_), None) if matches!(&c.field, Field::Tag(k) if k == "mlflow.prompt.is_prompt") => true,
            (_, _, None) => false,
            (Op::In, Literal::List(l), Some(v)) => l.iter().any(|x| eq_str(&v, x)),
            (Op::NotIn, Literal::List(l), Some(v)) => !l.iter().any(|x| eq_str(&v, x)),
            (Op::Like, Literal::Str(p), Some(v)) => like(&as_text(&v), p, false),
            (Op::ILike, Literal::Str(p), Some(v)) => like(&as_text(&v), p, true),
            (op, lit, Some(v)) => {
                let ord = match (&v, lit) {
                    (Value::Num(a), Literal::Num(b)) => a.partial_cmp(b),
                    (Value::Num(a), Literal::Str(b)) => b.parse::<f64>().ok().and_then(|b| a.partial_cmp(&b)),
                    (Value::Str(a), Literal::Str(b)) => Some(a.as_str().cmp(b.as_str())),
                    (Value::Str(a), Literal::Num(b)) => a.parse::<f64>().ok().and_then(|a| a.partial_cmp(b)),
                    _ => None,
                };
                match (op, ord) {
                    (Op::Eq, Some(o)) => o == Ordering::Equal,
                    (Op::Ne, Some(o)) => o != Ordering::Equal,
                    (Op::Ne, None) => true,
                    (Op::Gt, Some(o)) => o == Ordering::Greater,
                    (Op::Ge, Some(o)) => o != Ordering::Less,
                    (Op::Lt, Some(o)) => o == Ordering::Less,
                    (Op::Le, Some(o)) => o != Ordering::Greater,
                    _ => false,
                }
            }
        }
    })
}

fn as_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Num(n) => n.to_string(),
    }
}

fn eq_str(v: &Value, x: &str) -> bool {
    match v {
        Value::Str(s) => s == x,
        Value::Num(n) => x.parse::<f64>().is_ok_and(|y| y == *n),
    }
}

/// One `order_by` term.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub field: Field,
    pub ascending: bool,
}

pub fn parse_order_by(terms: &[String], entity: Entity) -> Result<Vec<OrderBy>> {
    terms
        .iter()
        .map(|t| {
            let t = t.trim();
            let (ident, ascending) = match t.rsplit_once(char::is_whitespace) {
                Some((i, d)) if d.eq_ignore_ascii_case("asc") => (i.trim(), true),
                Some((i, d)) if d.eq_ignore_ascii_case("desc") => (i.trim(), false),
                _ => (t, true),
            };
            let tokens = tokenize(ident)?;
            let [Token::Ident(name)] = tokens.as_slice() else {
                return invalid(format!("Invalid order_by clause '{t}'"));
            };
            let mut field = field_of(name, entity)?;
            if entity == Entity::Experiments {
                if let Field::Attribute(a) = &mut field {
                    if a == "last_updated_timestamp" {
                        *a = "last_update_time".into();
                    }
                }
            }
            Ok(OrderBy { field, ascending })
        })
        .collect()
}

/// Compares two entities under `order`; missing values sort last in either direction, NaN after
/// real numbers.
pub fn compare<E: Searchable>(a: &E, b: &E, order: &[OrderBy]) -> Ordering {
    for o in order {
        let (x, y) = (a.field(&o.field), b.field(&o.field));
        let ord = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(Value::Num(p)), Some(Value::Num(q))) => match (p.is_nan(), q.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => return Ordering::Greater,
                (false, true) => return Ordering::Less,
                _ => p.total_cmp(&q),
            },
            (Some(p), Some(q)) => as_text(&p).cmp(&as_text(&q)),
        };
        let ord = if o.ascending { ord } else { ord.reverse() };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Page tokens are base64(JSON {"offset": N}), as MLflow's.
pub fn decode_token(token: Option<&str>) -> Result<usize> {
    let Some(t) = token.filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
        .map_err(|_| {
            crate::error::RegistryError::InvalidParameter(
                "Invalid page token, could not base64-decode".into(),
            )
        })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
        crate::error::RegistryError::InvalidParameter(
            "Invalid page token, could not parse JSON".into(),
        )
    })?;
    v.get("offset")
        .and_then(serde_json::Value::as_u64)
        .map(|o| o as usize)
        .ok_or_else(|| {
            crate::error::RegistryError::InvalidParameter("Invalid page token, no offset".into())
        })
}

pub fn encode_token(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{{\"offset\": {offset}}}"))
}

/// Cuts one page out of sorted results; returns the page and the next token, if any.
pub fn page<T>(
    mut items: Vec<T>,
    token: Option<&str>,
    max_results: usize,
) -> Result<(Vec<T>, Option<String>)> {
    let offset = decode_token(token)?;
    if offset >= items.len() {
        return Ok((Vec::new(), None));
    }
    let end = offset.saturating_add(max_results).min(items.len());
    let next = (end < items.len()).then(|| encode_token(end));
    let rest = items.split_off(offset);
    let mut page = rest;
    page.truncate(end - offset);
    Ok((page, next))
}

/// Filters, orders and pages loaded entities: one search, the same for every resource.
pub fn select<E: Searchable>(
    items: Vec<E>,
    clauses: &[Clause],
    order: &[OrderBy],
    token: Option<&str>,
    max: usize,
) -> Result<(Vec<E>, Option<String>)> {
    let mut all: Vec<E> = items.into_iter().filter(|e| matches(e, clauses)).collect();
    all.sort_by(|a, b| compare(a, b, order));
    page(all, token, max)
}

/// The page the database cut (`pushed`: the page from `offset` and whether more follow) or,
/// when it could not say the search exactly (`None`), the page cut in memory out of `all`,
/// which is loaded only then.
pub async fn page_or_memory<E: Searchable>(
    pushed: Option<(Vec<E>, bool)>,
    offset: usize,
    max: usize,
    token: Option<&str>,
    clauses: &[Clause],
    order: &[OrderBy],
    all: impl std::future::Future<Output = Result<Vec<E>>>,
) -> Result<(Vec<E>, Option<String>)> {
    match pushed {
        Some((page, more)) => Ok((page, more.then(|| encode_token(offset + max)))),
        None => select(all.await?, clauses, order, token, max),
    }
}

/// `{"<key>": [...], "next_page_token": "…"}`, the token only when there is a next page.
pub fn page_body(
    key: &str,
    items: Vec<serde_json::Value>,
    next: Option<String>,
) -> serde_json::Value {
    let mut out = serde_json::json!({ key: items });
    if let Some(t) = next {
        out["next_page_token"] = serde_json::json!(t);
    }
    out
}

/// Checks `max_results` against a limit.
pub fn max_results(requested: Option<i64>, default: usize, limit: usize) -> Result<usize> {
    match requested {
        None => Ok(default),
        Some(n) if n <= 0 => invalid(format!(
            "Invalid value {n} for parameter 'max_results': it must be positive"
        )),
        Some(n) if n as usize > limit => invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be at most {limit}"
        )),
        Some(n) => Ok(n as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Run(Vec<(Field, Value)>);
    impl Searchable for Run {
        fn field(&self, f: &Field) -> Option<Value> {
            self.0.iter().find(|(k, _)| k == f).map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn attribute_prefixes_work_for_every_entity() {
        for entity in [
            Entity::Experiments,
            Entity::RegisteredModels,
            Entity::ModelVersions,
        ] {
            for prefix in ["attribute", "attributes", "attr"] {
                let c = parse_filter(&format!("{prefix}.name = 'x'"), entity).unwrap();
                assert_eq!(
                    c[0].field,
                    Field::Attribute("name".into()),
                    "{prefix} {entity:?}"
                );
            }
        }
        assert!(parse_filter("run.name = 'x'", Entity::Experiments).is_err());
    }

    #[test]
    fn parses_the_filters_clients_send() {
        let c = parse_filter(
            "metrics.auc > 0.72 and params.max_depth = '4' AND tags.owner = 'alice'",
            Entity::Runs,
        )
        .unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].field, Field::Metric("auc".into()));
        let c = parse_filter(
            "tags.`mlflow.prompt.is_prompt` != 'true'",
            Entity::RegisteredModels,
        )
        .unwrap();
        assert_eq!(c[0].field, Field::Tag("mlflow.prompt.is_prompt".into()));
        let c = parse_filter("tags.mlflow.parentRunId = 'abc'", Entity::Runs).unwrap();
        assert_eq!(c[0].field, Field::Tag("mlflow.parentRunId".into()));
        let c = parse_filter("attributes.run_name LIKE 'batch%'", Entity::Runs).unwrap();
        assert_eq!(c[0].op, Op::Like);
        let c = parse_filter(
            "name IN ('a', 'b') and version_number >= 2",
            Entity::ModelVersions,
        )
        .unwrap();
        assert_eq!(c[0].value, Literal::List(vec!["a".into(), "b".into()]));
        let c = parse_filter("params.\"my key\" IS NOT NULL", Entity::Runs).unwrap();
        assert_eq!(c[0].field, Field::Param("my key".into()));
        for bad in [
            "metrics.auc >>> 1",
            "metrics.auc > 1 OR metrics.auc < 0",
            "metrics.auc = 'x'",
            "foo.bar = 'x'",
            "name = ",
            "params.x > '1'",
        ] {
            assert!(
                parse_filter(bad, Entity::Runs).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn matching_like_in_null_and_numbers() {
        let r = Run(vec![
            (Field::Metric("auc".into()), Value::Num(0.8)),
            (
                Field::Attribute("run_name".into()),
                Value::Str("batch-7".into()),
            ),
            (Field::Tag("owner".into()), Value::Str("Alice".into())),
        ]);
        let yes = |f: &str| matches(&r, &parse_filter(f, Entity::Runs).unwrap());
        assert!(yes("metrics.auc > 0.72"));
        assert!(!yes("metrics.auc > 0.9"));
        assert!(yes("attributes.run_name LIKE 'batch%'"));
        assert!(!yes("attributes.run_name LIKE 'Batch%'"));
        assert!(yes("attributes.run_name ILIKE 'BATCH-_'"));
        assert!(yes("tags.owner IN ('Alice', 'Bob')"));
        assert!(yes("params.x IS NULL") && !yes("params.x = 'y'"));
        assert!(
            !yes("tags.missing != 'x'"),
            "a missing tag does not match !="
        );
        assert!(
            yes("tags.`mlflow.prompt.is_prompt` != 'true'"),
            "models without the prompt tag match"
        );
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_rejected() {
        let (p, next) = page((0..25).collect::<Vec<_>>(), None, 10).unwrap();
        assert_eq!(p, (0..10).collect::<Vec<_>>());
        let (p, next) = page((0..25).collect::<Vec<_>>(), next.as_deref(), 10).unwrap();
        assert_eq!(p[0], 10);
        let (p, next) = page((0..25).collect::<Vec<_>>(), next.as_deref(), 10).unwrap();
        assert_eq!((p.len(), next), (5, None));
        assert!(decode_token(Some("not base64!")).is_err());
        assert_eq!(decode_token(Some("eyJvZmZzZXQiOiAyfQ==")).unwrap(), 2);
    }
}
