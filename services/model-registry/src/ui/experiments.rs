//! Experiments, an experiment's runs as a sortable table, and the comparison of chosen runs.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

use super::chart::{line_chart, Series};
use super::{
    badge, duration, name_matches, name_search, none_found, number, or_error_page, page, param, q,
    query_pairs, time, Page,
};
use crate::error::invalid;
use crate::search::{self, Entity, Field, Searchable};
use crate::startup::AppState;
use crate::store::{experiments, runs, View};

/// Runs shown in one experiment table; the filter narrows larger experiments.
const MAX_ROWS: usize = 500;
/// Runs in one comparison.
const MAX_COMPARE: usize = 20;
/// Metric charts on one comparison.
const MAX_CHARTS: usize = 24;

pub async fn list(req: HttpRequest, s: web::Data<AppState>) -> HttpResponse {
    let r = list_page(&req, &s).await;
    or_error_page(&req, r)
}

async fn list_page(req: &HttpRequest, s: &AppState) -> Page {
    let query = query_pairs(req);
    let needle = param(&query, "q").unwrap_or_default();
    let mut exps = experiments::list_experiments(&s.pool, View::ActiveOnly).await?;
    exps.retain(|e| name_matches(&e.name, &needle));
    exps.sort_by_key(|e| std::cmp::Reverse(e.last_update_time));
    let counts = runs::count_by_experiment(&s.pool).await?;
    Ok(page(
        req,
        "Experiments",
        html! {
            h1 { "Experiments" }
            (name_search("/", &needle))
            @if exps.is_empty() {
                (none_found("experiments", &needle))
            } @else {
                table {
                    thead { tr { th { "Name" } th { "ID" } th.num { "Runs" } th { "Created" } th { "Last updated" } th { "Tags" } } }
                    tbody {
                        @for e in &exps {
                            tr {
                                td { a href=(format!("/experiments/{}", e.id)) { (e.name) } }
                                td { (e.id) }
                                td.num { (counts.get(&e.id).copied().unwrap_or(0)) }
                                td.time { (time(e.creation_time)) }
                                td.time { (time(e.last_update_time)) }
                                td { (tags_inline(&e.tags)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

fn tags_inline(tags: &[(String, String)]) -> Markup {
    html! {
        @for (k, v) in tags.iter().filter(|(k, _)| !k.starts_with("mlflow.")) {
            span.tag { (k) "=" (v) } " "
        }
    }
}

/// A column of the runs table: a metric or a param.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Column {
    Metric(String),
    Param(String),
}

impl Column {
    fn parse(s: &str) -> Option<Column> {
        if let Some(k) = s.strip_prefix("metrics.") {
            Some(Column::Metric(k.to_string()))
        } else {
            s.strip_prefix("params.")
                .map(|k| Column::Param(k.to_string()))
        }
    }
    fn id(&self) -> String {
        match self {
            Column::Metric(k) => format!("metrics.{k}"),
            Column::Param(k) => format!("params.{k}"),
        }
    }
    fn field(&self) -> Field {
        match self {
            Column::Metric(k) => Field::Metric(k.clone()),
            Column::Param(k) => Field::Param(k.clone()),
        }
    }
    fn cell(&self, run: &runs::Run) -> String {
        match run.field(&self.field()) {
            Some(search::Value::Num(v)) => number(v),
            Some(search::Value::Str(s)) => s,
            None => String::new(),
        }
    }
}

/// Orders two runs by a field: numbers numerically (params too, when both parse), missing last.
fn by_field(a: &runs::Run, b: &runs::Run, f: &Field) -> Ordering {
    let num = |v: &Option<search::Value>| match v {
        Some(search::Value::Num(n)) => Some(*n),
        Some(search::Value::Str(s)) => s.parse::<f64>().ok(),
        None => None,
    };
    let (va, vb) = (a.field(f), b.field(f));
    match (&va, &vb) {
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Greater,
        (_, None) => Ordering::Less,
        _ => match (num(&va), num(&vb)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => match (va, vb) {
                (Some(search::Value::Str(x)), Some(search::Value::Str(y))) => x.cmp(&y),
                _ => Ordering::Equal,
            },
        },
    }
}

pub async fn show(req: HttpRequest, id: web::Path<String>, s: web::Data<AppState>) -> HttpResponse {
    let r = show_page(&req, &id, &s).await;
    or_error_page(&req, r)
}

async fn show_page(req: &HttpRequest, id: &str, s: &AppState) -> Page {
    let exp = experiments::get_experiment(&s.pool, experiments::parse_id(id)?).await?;
    let query = query_pairs(req);
    let filter = param(&query, "filter").unwrap_or_default();
    let sort = param(&query, "sort").unwrap_or_else(|| "start_time".into());
    let desc = param(&query, "desc").map_or(sort == "start_time", |v| v == "1");
    let mut all = runs::list_runs(&s.pool, &[exp.id], View::ActiveOnly).await?;

    let filter_error = match search::parse_filter(&filter, Entity::Runs) {
        Ok(clauses) => {
            all.retain(|r| search::matches(r, &clauses));
            None
        }
        Err(e) => Some(e.to_string()),
    };
    let metric_keys: BTreeSet<String> = all
        .iter()
        .flat_map(|r| r.metrics.iter().map(|m| m.key.clone()))
        .collect();
    let param_keys: BTreeSet<String> = all
        .iter()
        .flat_map(|r| r.params.iter().map(|(k, _)| k.clone()))
        .collect();
    let chosen: Vec<Column> = query
        .iter()
        .filter(|(k, _)| k == "col")
        .filter_map(|(_, v)| Column::parse(v))
        .collect();
    let columns: Vec<Column> = if param(&query, "cols").is_some() {
        chosen
    } else {
        // Default: every metric, and the params whose values differ between runs.
        let varying = param_keys.iter().filter(|k| {
            let values: BTreeSet<String> = all
                .iter()
                .map(|r| Column::Param((*k).clone()).cell(r))
                .collect();
            values.len() > 1
        });
        metric_keys
            .iter()
            .take(10)
            .map(|k| Column::Metric(k.clone()))
            .chain(varying.take(6).map(|k| Column::Param(k.clone())))
            .collect()
    };

    let sort_field = match sort.as_str() {
        "run_name" | "status" | "start_time" | "user_id" => Field::Attribute(sort.clone()),
        other => Column::parse(other)
            .map(|c| c.field())
            .unwrap_or(Field::Attribute("start_time".into())),
    };
    all.sort_by(|a, b| {
        let o = by_field(a, b, &sort_field);
        // Missing values stay last either way.
        let missing = a.field(&sort_field).is_none() || b.field(&sort_field).is_none();
        if desc && !missing {
            o.reverse()
        } else {
            o
        }
    });
    let total = all.len();
    all.truncate(MAX_ROWS);

    // Links keep the filter and the chosen columns.
    let keep = {
        let mut k = String::new();
        if !filter.is_empty() {
            k.push_str(&format!("&filter={}", q(&filter)));
        }
        if param(&query, "cols").is_some() {
            k.push_str("&cols=1");
            for c in &columns {
                k.push_str(&format!("&col={}", q(&c.id())));
            }
        }
        k
    };
    let header = |key: &str, label: &str| -> Markup {
        let active = sort == key;
        let next_desc = if active { !desc } else { key != "run_name" };
        let arrow = if active {
            if desc {
                " ▼"
            } else {
                " ▲"
            }
        } else {
            ""
        };
        let aria = if active {
            if desc {
                "descending"
            } else {
                "ascending"
            }
        } else {
            "none"
        };
        html! {
            th aria-sort=(aria) {
                a href=(format!("?sort={}&desc={}{}", q(key), u8::from(next_desc), keep)) { (label) (arrow) }
            }
        }
    };

    Ok(page(
        req,
        &exp.name,
        html! {
            p.crumbs { a href="/" { "Experiments" } " / " }
            h1 { (exp.name) }
            p.muted { "Experiment " (exp.id) " · artifacts at " code { (exp.artifact_location) } }
            @if !exp.tags.is_empty() { p { (tags_inline(&exp.tags)) } }
            form.search method="get" role="search" {
                label for="filter" { "Filter runs" }
                input #filter type="search" name="filter" value=(filter) placeholder="metrics.test_roc_auc > 0.8 and params.trees = '200'" size="48";
                input type="hidden" name="sort" value=(sort);
                input type="hidden" name="desc" value=(u8::from(desc));
                button type="submit" { "Apply" }
            }
            @if let Some(e) = &filter_error { p.error role="alert" { "The filter was not applied: " (e) } }
            details.columns {
                summary { "Columns" }
                form method="get" {
                    input type="hidden" name="cols" value="1";
                    input type="hidden" name="filter" value=(filter);
                    input type="hidden" name="sort" value=(sort);
                    input type="hidden" name="desc" value=(u8::from(desc));
                    fieldset {
                        legend { "Metrics" }
                        @for k in &metric_keys {
                            @let c = Column::Metric(k.clone());
                            label { input type="checkbox" name="col" value=(c.id()) checked[columns.contains(&c)]; " " (k) }
                        }
                    }
                    fieldset {
                        legend { "Parameters" }
                        @for k in &param_keys {
                            @let c = Column::Param(k.clone());
                            label { input type="checkbox" name="col" value=(c.id()) checked[columns.contains(&c)]; " " (k) }
                        }
                    }
                    button type="submit" { "Show columns" }
                }
            }
            @if all.is_empty() {
                p.muted { "No runs." }
            } @else {
                form #compare method="get" action="/compare" {
                    p {
                        button type="submit" { "Compare selected runs" }
                        " "
                        span.muted { (total) " run" @if total != 1 { "s" }
                            @if total > MAX_ROWS { " (the first " (MAX_ROWS) " shown; filter to narrow)" } }
                    }
                    div.scroll {
                        table.runs {
                            thead {
                                tr {
                                    th { span.visually-hidden { "Select" } }
                                    (header("run_name", "Run"))
                                    (header("status", "Status"))
                                    (header("start_time", "Started"))
                                    th { "Duration" }
                                    (header("user_id", "User"))
                                    @for c in &columns {
                                        @match c {
                                            Column::Metric(k) => (header(&c.id(), k)),
                                            Column::Param(k) => (header(&c.id(), &format!("{k} (param)"))),
                                        }
                                    }
                                }
                            }
                            tbody {
                                @for r in &all {
                                    tr {
                                        td { input type="checkbox" name="run" value=(r.run_id) aria-label=(format!("Select {}", r.run_name)); }
                                        td { a href=(format!("/runs/{}", r.run_id)) { (r.run_name) } }
                                        td { (badge(&r.status)) }
                                        td.time { (time(r.start_time)) }
                                        td { @if let Some(end) = r.end_time { (duration(end - r.start_time)) } }
                                        td { (r.user_id) }
                                        @for c in &columns {
                                            td.num[matches!(c, Column::Metric(_))] { (c.cell(r)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

pub async fn compare(req: HttpRequest, s: web::Data<AppState>) -> HttpResponse {
    let r = compare_page(&req, &s).await;
    or_error_page(&req, r)
}

async fn compare_page(req: &HttpRequest, s: &AppState) -> Page {
    let query = query_pairs(req);
    let mut ids: Vec<String> = Vec::new();
    for (k, v) in &query {
        if k == "run" && !ids.contains(v) {
            ids.push(v.clone());
        }
    }
    if ids.is_empty() {
        return invalid("Select at least one run to compare.");
    }
    if ids.len() > MAX_COMPARE {
        return invalid(format!("Compare at most {MAX_COMPARE} runs at a time."));
    }
    let mut list = Vec::with_capacity(ids.len());
    for id in &ids {
        list.push(runs::get_run(&s.pool, id).await?);
    }
    let param_keys: BTreeSet<String> = list
        .iter()
        .flat_map(|r| r.params.iter().map(|(k, _)| k.clone()))
        .collect();
    let metric_keys: BTreeSet<String> = list
        .iter()
        .flat_map(|r| r.metrics.iter().map(|m| m.key.clone()))
        .collect();
    let mut charts = Vec::new();
    for key in metric_keys.iter().take(MAX_CHARTS) {
        let mut series = Vec::new();
        for r in &list {
            let history = runs::metric_history(&s.pool, &r.run_id, key).await?;
            if !history.is_empty() {
                series.push(Series {
                    label: r.run_name.clone(),
                    points: history
                        .iter()
                        .map(|m| (m.step as f64, if m.is_nan { f64::NAN } else { m.value }))
                        .collect(),
                });
            }
        }
        charts.push((key.clone(), series));
    }
    let row = |label: &str, cells: Vec<String>| -> Markup {
        let differs = cells.iter().collect::<BTreeSet<_>>().len() > 1;
        html! {
            tr.differs[differs] {
                th scope="row" { (label) }
                @for c in &cells { td { (c) } }
            }
        }
    };
    Ok(page(
        req,
        "Compare runs",
        html! {
            p.crumbs { a href="/" { "Experiments" } " / " }
            h1 { "Comparing " (list.len()) " run" @if list.len() != 1 { "s" } }
            p.muted { "Rows whose values differ are highlighted." }
            div.scroll {
                table.compare {
                    thead {
                        tr {
                            th { "" }
                            @for r in &list { th { a href=(format!("/runs/{}", r.run_id)) { (r.run_name) } } }
                        }
                    }
                    tbody {
                        (row("Status", list.iter().map(|r| r.status.clone()).collect()))
                        (row("Started", list.iter().map(|r| time(r.start_time)).collect()))
                        (row("Duration", list.iter().map(|r| r.end_time.map(|e| duration(e - r.start_time)).unwrap_or_default()).collect()))
                        tr.section { th colspan=(list.len() + 1) { "Metrics" } }
                        @for k in &metric_keys {
                            (row(k, list.iter().map(|r| Column::Metric(k.clone()).cell(r)).collect()))
                        }
                        tr.section { th colspan=(list.len() + 1) { "Parameters" } }
                        @for k in &param_keys {
                            (row(k, list.iter().map(|r| Column::Param(k.clone()).cell(r)).collect()))
                        }
                    }
                }
            }
            h2 { "Metric histories" }
            div.charts {
                @for (k, series) in &charts {
                    section { h3 { (k) } (line_chart(k, series)) }
                }
            }
        },
    ))
}
