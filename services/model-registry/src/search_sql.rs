//! Search pushed into SQL: a parsed filter and `order_by` become a `WHERE` condition, joins and
//! an `ORDER BY` over the entity's tables, with every value bound (never spliced), so the
//! database filters, sorts and cuts the page and only that page is loaded.
//!
//! The SQL means exactly what [`crate::search::matches`] and [`crate::search::compare`] mean
//! over loaded entities (missing values sort last in either direction, NaN after numbers, text
//! compared byte by byte, `LIKE` case-sensitive); a clause that SQL cannot say the same way on
//! both backends (`LIKE` on a number, a non-ASCII `ILIKE` pattern on SQLite, dataset fields)
//! makes [`translate`] answer `None`, and the caller searches in memory as before.

use crate::search::{Clause, Field, Literal, Op, OrderBy};
use crate::store::Backend;

/// How an attribute is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, never NULL.
    Text,
    /// An integer, never NULL.
    Number,
    /// An integer that may be NULL (missing).
    OptNumber,
    /// Text that may be NULL (missing).
    OptText,
}

/// Where one entity's searchable fields live. Child tables have the entity's key columns and
/// `key, value` (metrics also `is_nan`), and are joined on the key columns.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// `(child table column, entity's key expression)` for each key column, e.g.
    /// `("run_id", "r.run_id")`.
    pub link: &'static [(&'static str, &'static str)],
    pub metrics: Option<&'static str>,
    pub params: Option<&'static str>,
    pub tags: Option<&'static str>,
    /// `(attribute, column expression, kind)`.
    pub attrs: &'static [(&'static str, &'static str, Kind)],
}

impl Shape {
    /// The condition tying child row `alias` to the entity.
    fn on(&self, alias: &str) -> String {
        self.link
            .iter()
            .map(|(column, key)| format!("{alias}.{column} = {key}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Real(f64),
    Int(i64),
}

/// The parts of one search query.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sql {
    /// Joins: one per filter clause on a metric, param or tag, one `LEFT JOIN` per `order_by`
    /// term on one.
    pub joins: String,
    /// Conditions joined with `AND` (`1 = 1` when there are none).
    pub condition: String,
    /// `ORDER BY` terms, without the keyword.
    pub order: String,
    /// Values for `$first`, `$first+1`, … (numbered placeholders: the statement may name them
    /// in any order).
    pub args: Vec<Arg>,
}

struct Builder {
    backend: Backend,
    first: usize,
    args: Vec<Arg>,
}

impl Builder {
    fn bind(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.first + self.args.len() - 1)
    }

    /// Text compared byte by byte, as Rust compares strings (PostgreSQL's default collation
    /// may be a locale's).
    fn bytewise(&self, expr: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("{expr} COLLATE \"C\""),
            Backend::Sqlite => expr.to_string(),
        }
    }
}

fn sql_op(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "<>",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        _ => unreachable!("only comparators have an SQL operator"),
    }
}

fn is_comparator(op: Op) -> bool {
    matches!(op, Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le)
}

/// A literal read as a number the way `matches` reads it (NaN compares with nothing).
fn number(lit: &Literal) -> Option<f64> {
    match lit {
        Literal::Num(n) => Some(*n),
        Literal::Str(s) => s.parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| !n.is_nan())
}

/// SQLite's `GLOB` pattern for a `LIKE` pattern (`%` → `*`, `_` → `?`, GLOB's own wildcards
/// taken literally); GLOB is case-sensitive, as MLflow's `LIKE` is, where SQLite's `LIKE` is not.
fn glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '%' => out.push('*'),
            '_' => out.push('?'),
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

impl Builder {
    /// A condition on a text value expression that exists (`None`: not expressible).
    fn text_condition(&mut self, value: &str, op: Op, lit: &Literal) -> Option<String> {
        Some(match (op, lit) {
            (Op::Eq | Op::Ne, Literal::Str(s)) => {
                format!("{value} {} {}", sql_op(op), self.bind(Arg::Text(s.clone())))
            }
            (op, Literal::Str(s)) if is_comparator(op) => format!(
                "{} {} {}",
                self.bytewise(value),
                sql_op(op),
                self.bind(Arg::Text(s.clone()))
            ),
            (Op::In | Op::NotIn, Literal::List(items)) => {
                if items.is_empty() {
                    return Some(if op == Op::In { "1 = 0" } else { "1 = 1" }.into());
                }
                let marks: Vec<String> = items
                    .iter()
                    .map(|i| self.bind(Arg::Text(i.clone())))
                    .collect();
                let not = if op == Op::NotIn { "NOT " } else { "" };
                format!("{value} {not}IN ({})", marks.join(", "))
            }
            (Op::Like | Op::ILike, Literal::Str(p)) => match (self.backend, op) {
                (Backend::Postgres, Op::Like) => {
                    format!("{value} LIKE {} ESCAPE ''", self.bind(Arg::Text(p.clone())))
                }
                (Backend::Postgres, _) => {
                    format!(
                        "{value} ILIKE {} ESCAPE ''",
                        self.bind(Arg::Text(p.clone()))
                    )
                }
                (Backend::Sqlite, Op::Like) => {
                    format!("{value} GLOB {}", self.bind(Arg::Text(glob(p))))
                }
                // SQLite lowers ASCII letters only: a pattern with others is left to memory.
                (Backend::Sqlite, _) if p.is_ascii() => format!(
                    "LOWER({value}) GLOB {}",
                    self.bind(Arg::Text(glob(&p.to_ascii_lowercase())))
                ),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// A condition on a number value expression that exists; `nan` is the column that is not 0
    /// where the value is NaN, if it can be.
    fn number_condition(
        &mut self,
        value: &str,
        nan: Option<&str>,
        op: Op,
        lit: &Literal,
    ) -> Option<String> {
        let real = |cond: String| match nan {
            Some(nan) => format!("{nan} = 0 AND {cond}"),
            None => cond,
        };
        Some(match (op, lit) {
            (Op::Ne, lit) => match number(lit) {
                Some(n) => {
                    let cond = format!("{value} <> {}", self.bind(Arg::Real(n)));
                    match nan {
                        Some(nan) => format!("({nan} <> 0 OR {cond})"),
                        None => cond,
                    }
                }
                // Nothing equals a value that is not a number: every existing value differs.
                None => "1 = 1".into(),
            },
            (op, lit) if is_comparator(op) => match number(lit) {
                Some(n) => real(format!(
                    "{value} {} {}",
                    sql_op(op),
                    self.bind(Arg::Real(n))
                )),
                None => "1 = 0".into(),
            },
            (Op::In | Op::NotIn, Literal::List(items)) => {
                let nums: Vec<f64> = items
                    .iter()
                    .filter_map(|i| i.parse::<f64>().ok())
                    .filter(|n| !n.is_nan())
                    .collect();
                let inside = if nums.is_empty() {
                    "1 = 0".to_string()
                } else {
                    let marks: Vec<String> =
                        nums.into_iter().map(|n| self.bind(Arg::Real(n))).collect();
                    real(format!("{value} IN ({})", marks.join(", ")))
                };
                if op == Op::In {
                    inside
                } else {
                    format!("NOT ({inside})")
                }
            }
            _ => return None,
        })
    }

    /// A clause as a join (`Join`) or a condition (`Where`). Child tables hold one row per
    /// entity and key (their primary key), so a clause that needs the row to exist becomes an
    /// inner join, which lets the database start from the most selective index.
    fn clause(&mut self, shape: &Shape, c: &Clause, alias: &str) -> Option<Part> {
        let join = |table: &str, key_mark: &str, cond: &str| {
            Part::Join(format!(
                " JOIN {table} {alias} ON {} AND {alias}.key = {key_mark} AND {cond}",
                shape.on(alias)
            ))
        };
        let absent = |table: &str, key_mark: &str, cond: &str| {
            Part::Where(format!(
                "NOT EXISTS (SELECT 1 FROM {table} x WHERE {} AND x.key = {key_mark} AND {cond})",
                shape.on("x")
            ))
        };
        match &c.field {
            Field::Metric(k) | Field::Param(k) | Field::Tag(k) => {
                let (table, is_metric) = match &c.field {
                    Field::Metric(_) => (shape.metrics?, true),
                    Field::Param(_) => (shape.params?, false),
                    _ => (shape.tags?, false),
                };
                let key_mark = self.bind(Arg::Text(k.clone()));
                match c.op {
                    Op::IsNull => return Some(absent(table, &key_mark, "1 = 1")),
                    Op::IsNotNull => return Some(join(table, &key_mark, "1 = 1")),
                    _ => {}
                }
                // Clients hide prompts with `tags.mlflow.prompt.is_prompt != 'true'`: entities
                // without the tag match too (`matches` has the same exception).
                if c.op == Op::Ne
                    && matches!(&c.field, Field::Tag(k) if k == "mlflow.prompt.is_prompt")
                {
                    let cond = self.text_condition("x.value", Op::Eq, &c.value)?;
                    return Some(absent(table, &key_mark, &cond));
                }
                let value = format!("{alias}.value");
                let cond = if is_metric {
                    let nan = format!("{alias}.is_nan");
                    self.number_condition(&value, Some(&nan), c.op, &c.value)?
                } else {
                    if matches!(c.value, Literal::Num(_)) {
                        return None;
                    }
                    self.text_condition(&value, c.op, &c.value)?
                };
                Some(join(table, &key_mark, &cond))
            }
            Field::Attribute(a) => {
                let &(_, column, kind) = shape.attrs.iter().find(|(name, _, _)| name == a)?;
                let cond = match (kind, c.op) {
                    (Kind::OptNumber | Kind::OptText, Op::IsNull) => format!("{column} IS NULL"),
                    (Kind::OptNumber | Kind::OptText, Op::IsNotNull) => {
                        format!("{column} IS NOT NULL")
                    }
                    (_, Op::IsNull) => "1 = 0".into(),
                    (_, Op::IsNotNull) => "1 = 1".into(),
                    (Kind::Text | Kind::OptText, _) if matches!(c.value, Literal::Num(_)) => {
                        return None
                    }
                    (Kind::Text, op) => self.text_condition(column, op, &c.value)?,
                    (Kind::OptText, op) => {
                        let cond = self.text_condition(column, op, &c.value)?;
                        format!("{column} IS NOT NULL AND {cond}")
                    }
                    (Kind::Number, op) => self.number_condition(column, None, op, &c.value)?,
                    (Kind::OptNumber, op) => {
                        let cond = self.number_condition(column, None, op, &c.value)?;
                        format!("{column} IS NOT NULL AND {cond}")
                    }
                };
                Some(Part::Where(cond))
            }
            Field::Dataset(_) => None,
        }
    }
}

enum Part {
    Join(String),
    Where(String),
}

/// The SQL for `clauses` and `order` over `shape`, with placeholders numbered from `first`;
/// `None` when some clause or term has no exact SQL form on this backend.
pub fn translate(
    shape: &Shape,
    clauses: &[Clause],
    order: &[OrderBy],
    backend: Backend,
    first: usize,
) -> Option<Sql> {
    let mut b = Builder {
        backend,
        first,
        args: Vec::new(),
    };
    let mut joins = String::new();
    let mut conditions = Vec::new();
    // Fields a filter already joins (their row exists): ordering on one reuses that join.
    let mut joined: Vec<(&Field, String)> = Vec::new();
    for (i, c) in clauses.iter().enumerate() {
        let alias = format!("f{i}");
        match b.clause(shape, c, &alias)? {
            Part::Join(j) => {
                joins.push_str(&j);
                joined.push((&c.field, alias));
            }
            Part::Where(w) => conditions.push(w),
        }
    }
    let mut terms: Vec<String> = Vec::new();
    for (i, o) in order.iter().enumerate() {
        let dir = if o.ascending { "ASC" } else { "DESC" };
        match &o.field {
            Field::Metric(k) | Field::Param(k) | Field::Tag(k) => {
                let table = match &o.field {
                    Field::Metric(_) => shape.metrics?,
                    Field::Param(_) => shape.params?,
                    _ => shape.tags?,
                };
                let alias = match joined.iter().find(|(f, _)| *f == &o.field) {
                    Some((_, alias)) => alias.clone(),
                    None => {
                        let alias = format!("o{i}");
                        let mark = b.bind(Arg::Text(k.clone()));
                        joins.push_str(&format!(
                            " LEFT JOIN {table} {alias} ON {} AND {alias}.key = {mark}",
                            shape.on(&alias)
                        ));
                        alias
                    }
                };
                // Missing values last in either direction.
                terms.push(format!(
                    "CASE WHEN {alias}.{} IS NULL THEN 1 ELSE 0 END",
                    shape.link[0].0
                ));
                if matches!(o.field, Field::Metric(_)) {
                    // NaN after every number, in either direction.
                    terms.push(format!("{alias}.is_nan"));
                    terms.push(format!(
                        "CASE WHEN {alias}.is_nan = 0 THEN {alias}.value END {dir}"
                    ));
                } else {
                    terms.push(format!("{} {dir}", b.bytewise(&format!("{alias}.value"))));
                }
            }
            Field::Attribute(a) => {
                let &(_, column, kind) = shape.attrs.iter().find(|(name, _, _)| name == a)?;
                match kind {
                    Kind::Text => terms.push(format!("{} {dir}", b.bytewise(column))),
                    Kind::Number => terms.push(format!("{column} {dir}")),
                    Kind::OptNumber => {
                        terms.push(format!("CASE WHEN {column} IS NULL THEN 1 ELSE 0 END"));
                        terms.push(format!("{column} {dir}"));
                    }
                    Kind::OptText => {
                        terms.push(format!("CASE WHEN {column} IS NULL THEN 1 ELSE 0 END"));
                        terms.push(format!("{} {dir}", b.bytewise(column)));
                    }
                }
            }
            Field::Dataset(_) => return None,
        }
    }
    Some(Sql {
        joins,
        condition: if conditions.is_empty() {
            "1 = 1".into()
        } else {
            conditions
                .iter()
                .map(|c| format!("({c})"))
                .collect::<Vec<_>>()
                .join(" AND ")
        },
        order: terms.join(", "),
        args: b.args,
    })
}

/// Search values as a query's arguments, in order (for `sqlx::query_as_with` and
/// `sqlx::query_scalar_with`).
pub fn arguments(args: &[Arg]) -> sqlx::Result<sqlx::any::AnyArguments<'static>> {
    use sqlx::Arguments;
    let mut out = sqlx::any::AnyArguments::default();
    for a in args {
        match a {
            Arg::Text(s) => out.add(s.clone()),
            Arg::Real(n) => out.add(*n),
            Arg::Int(i) => out.add(*i),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(out)
}

/// Where a search looks: the entity's table and alias (`runs r`), the key columns to load
/// (`r.run_id`), and a condition every result meets, with its values bound first (`$1`, …).
pub struct Scope<'a> {
    pub from: &'a str,
    pub keys: &'a str,
    pub condition: String,
    pub args: Vec<Arg>,
}

/// One page of a search the database filters, orders and cuts: the keys of the entities from
/// `offset`, at most `max`, in order, and whether more follow. `None` when the filter or the
/// order has a term SQL cannot say exactly; the caller then searches in memory.
#[allow(clippy::too_many_arguments)]
pub async fn page_keys<'c, K, E>(
    db: E,
    backend: Backend,
    shape: &Shape,
    scope: Scope<'_>,
    clauses: &[Clause],
    order: &[OrderBy],
    offset: usize,
    max: usize,
) -> crate::error::Result<Option<(Vec<K>, bool)>>
where
    K: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let Some(sql) = translate(shape, clauses, order, backend, scope.args.len() + 1) else {
        return Ok(None);
    };
    let order_by = if sql.order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", sql.order)
    };
    let statement = format!(
        "SELECT {} FROM {}{} WHERE ({}) AND {}{order_by} LIMIT {} OFFSET {offset}",
        scope.keys,
        scope.from,
        sql.joins,
        scope.condition,
        sql.condition,
        max.saturating_add(1),
    );
    let mut args = scope.args;
    args.extend(sql.args);
    let mut keys = sqlx::query_as_with::<_, K, _>(&statement, arguments(&args)?)
        .fetch_all(db)
        .await?;
    let more = keys.len() > max;
    keys.truncate(max);
    Ok(Some((keys, more)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{parse_filter, parse_order_by, Entity};

    fn sql(filter: &str, order: &[&str], backend: Backend) -> Option<Sql> {
        let clauses = parse_filter(filter, Entity::Runs).unwrap();
        let order: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        let order = parse_order_by(&order, Entity::Runs).unwrap();
        translate(&crate::store::runs::SHAPE, &clauses, &order, backend, 3)
    }

    #[test]
    fn values_are_bound_in_statement_order_never_spliced() {
        let s = sql(
            "metrics.auc > 0.75 and params.depth = '3' and attributes.run_name LIKE 'a%'",
            &["metrics.auc DESC"],
            Backend::Postgres,
        )
        .unwrap();
        assert_eq!(
            s.args,
            vec![
                Arg::Text("auc".into()),
                Arg::Real(0.75),
                Arg::Text("depth".into()),
                Arg::Text("3".into()),
                Arg::Text("a%".into()),
            ]
        );
        assert!(
            s.joins.contains("f0.is_nan = 0 AND f0.value > $4"),
            "{}",
            s.joins
        );
        assert!(
            s.joins.contains("f1.key = $5 AND f1.value = $6"),
            "{}",
            s.joins
        );
        assert!(
            !s.joins.contains("LEFT JOIN"),
            "the filter's join is reused: {}",
            s.joins
        );
        assert!(
            s.condition.contains("r.run_name LIKE $7 ESCAPE ''"),
            "{}",
            s.condition
        );
        assert!(!s.joins.contains("0.75") && !s.joins.contains("'3'"));
        assert!(s.order.contains("f0.value END DESC"), "{}", s.order);
    }

    #[test]
    fn sqlite_like_is_a_case_sensitive_glob() {
        let s = sql("params.p LIKE '%a_*'", &[], Backend::Sqlite).unwrap();
        assert!(s.joins.contains("GLOB"), "{}", s.joins);
        assert_eq!(s.args[1], Arg::Text("*a?[*]".into()));
        let s = sql("params.p ILIKE '%A%'", &[], Backend::Sqlite).unwrap();
        assert_eq!(s.args[1], Arg::Text("*a*".into()));
        assert!(s.joins.contains("LOWER(f0.value)"));
    }

    #[test]
    fn what_sql_cannot_say_exactly_is_left_to_memory() {
        assert!(sql("params.p ILIKE '%É%'", &[], Backend::Sqlite).is_none());
        assert!(sql("params.p ILIKE '%É%'", &[], Backend::Postgres).is_some());
        assert!(sql("dataset.name = 'x'", &[], Backend::Sqlite).is_none());
    }

    #[test]
    fn text_orders_byte_by_byte_on_postgres() {
        let s = sql(
            "attributes.run_name > 'a'",
            &["params.p"],
            Backend::Postgres,
        )
        .unwrap();
        assert!(
            s.order.contains("o0.value COLLATE \"C\" ASC"),
            "{}",
            s.order
        );
        assert!(
            s.condition.contains("r.run_name COLLATE \"C\" >"),
            "{}",
            s.condition
        );
        let s = sql("attributes.run_name > 'a'", &["params.p"], Backend::Sqlite).unwrap();
        assert!(!s.order.contains("COLLATE") && !s.condition.contains("COLLATE"));
    }
}
