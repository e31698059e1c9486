//! Registered models: the list, a model's versions with stages and aliases, and the two changes a
//! reviewer makes from the browser — set or move an alias, transition a stage — each through a
//! confirmation page whose POST form carries the CSRF token.

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

use super::{
    badge, check_csrf, csrf_field, name_matches, name_search, none_found, or_error_page, page,
    param, q, query_pairs, see_other, time, Page,
};
use crate::error::{invalid, Result};
use crate::moves::{self, Via};
use crate::startup::AppState;
use crate::store::registry::{self, ModelVersion, STAGES};

pub async fn list(req: HttpRequest, s: web::Data<AppState>) -> HttpResponse {
    let r = list_page(&req, &s).await;
    or_error_page(&req, r)
}

fn model_url(name: &str) -> String {
    format!("/model?name={}", q(name))
}

async fn list_page(req: &HttpRequest, s: &AppState) -> Page {
    let query = query_pairs(req);
    let needle = param(&query, "q").unwrap_or_default();
    let mut models = registry::list_registered_models(&s.pool).await?;
    models.retain(|m| name_matches(&m.name, &needle));
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let versions = registry::list_model_versions(&s.pool).await?;
    Ok(page(
        req,
        "Registered models",
        html! {
            h1 { "Registered models" }
            (name_search("/models", &needle))
            @if models.is_empty() {
                (none_found("registered models", &needle))
            } @else {
                table {
                    thead { tr { th { "Name" } th.num { "Latest version" } th { "Aliases" } th { "Last updated" } th { "Description" } } }
                    tbody {
                        @for m in &models {
                            @let latest = versions.iter().filter(|v| v.name == m.name).map(|v| v.version).max();
                            tr {
                                td { a href=(model_url(&m.name)) { (m.name) } }
                                td.num { @if let Some(v) = latest { (v) } }
                                td { @for (a, v) in &m.aliases { span.tag { "@" (a) " → " (v) } " " } }
                                td.time { (time(m.last_updated_timestamp)) }
                                td { (short(&m.description, 120)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub async fn show(req: HttpRequest, s: web::Data<AppState>) -> HttpResponse {
    let r = show_page(&req, &s).await;
    or_error_page(&req, r)
}

/// What just happened, from the redirect after a change (fixed texts with current values, never
/// text taken from the URL).
fn done_message(query: &[(String, String)], versions: &[ModelVersion]) -> Option<String> {
    match param(query, "done")?.as_str() {
        "alias" => {
            let alias = param(query, "alias")?;
            let v = versions.iter().find(|v| v.aliases.contains(&alias))?;
            Some(format!(
                "Alias “{alias}” now points to version {}.",
                v.version
            ))
        }
        "unalias" => {
            let alias = param(query, "alias")?;
            (!versions.iter().any(|v| v.aliases.contains(&alias)))
                .then(|| format!("Alias “{alias}” was removed."))
        }
        "stage" => {
            let n: i64 = param(query, "version")?.parse().ok()?;
            let v = versions.iter().find(|v| v.version == n)?;
            Some(format!(
                "Version {} is now in stage {}.",
                v.version, v.current_stage
            ))
        }
        _ => None,
    }
}

async fn show_page(req: &HttpRequest, s: &AppState) -> Page {
    let query = query_pairs(req);
    let Some(name) = param(&query, "name") else {
        return Ok(see_other("/models"));
    };
    let model = registry::get_registered_model(&s.pool, &name).await?;
    let mut versions = registry::versions_of(&s.pool, &name).await?;
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    let done = done_message(&query, &versions);
    let compared = super::compare::rows(s, &versions).await?;
    let confirm = "/model/confirm";
    Ok(page(
        req,
        &model.name,
        html! {
            p.crumbs { a href="/models" { "Registered models" } " / " }
            h1 { (model.name) }
            @if let Some(msg) = &done { p.notice role="status" { (msg) } }
            @if !model.description.is_empty() { p.description { (model.description) } }
            p.muted { "Created " (time(model.creation_timestamp)) " · last updated " (time(model.last_updated_timestamp)) }
            @if !model.tags.is_empty() {
                p { @for (k, v) in &model.tags { span.tag { (k) "=" (v) } " " } }
            }

            h2 { "Aliases" }
            p.muted { "Services load " code { "models:/" (model.name) "@<alias>" } " and follow the alias when it moves." }
            @if model.aliases.is_empty() { p.muted { "No aliases yet." } } @else {
                table.aliases {
                    thead { tr { th { "Alias" } th.num { "Version" } th { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for (a, v) in &model.aliases {
                            tr {
                                th scope="row" { "@" (a) }
                                td.num { (v) }
                                td {
                                    form.inline method="get" action=(confirm) {
                                        input type="hidden" name="name" value=(model.name);
                                        input type="hidden" name="action" value="delete-alias";
                                        input type="hidden" name="alias" value=(a);
                                        button type="submit" { "Remove…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !versions.is_empty() {
                form.set-alias method="get" action=(confirm) {
                    input type="hidden" name="name" value=(model.name);
                    input type="hidden" name="action" value="set-alias";
                    label for="alias" { "Set alias" }
                    input #alias name="alias" value="champion" required maxlength="255" pattern="[A-Za-z0-9_\\-]+";
                    label for="alias-version" { "to version" }
                    select #alias-version name="version" {
                        @for v in &versions { option value=(v.version) { (v.version) } }
                    }
                    button type="submit" { "Review change…" }
                }
            }

            @if versions.len() > 1 {
                h2 { "Compare versions" }
                (super::compare::table(&compared, model.aliases.iter().find(|(a, _)| a == "champion").map(|(_, v)| *v), None))
            }

            h2 { "Versions" }
            @if versions.is_empty() { p.muted { "No versions yet." } } @else {
                div.scroll {
                    table.versions {
                        thead {
                            tr {
                                th.num { "Version" } th { "Stage" } th { "Aliases" } th { "Status" }
                                th { "Created" } th { "Source run" } th { "Description" } th { "Change stage" }
                            }
                        }
                        tbody {
                            @for v in &versions {
                                tr id=(format!("v{}", v.version)) {
                                    td.num { (v.version) }
                                    td { (badge(&v.current_stage)) }
                                    td { @for a in &v.aliases { span.tag { "@" (a) } " " } }
                                    td { (badge(&v.status)) }
                                    td.time { (time(v.creation_timestamp)) }
                                    td {
                                        @if v.run_id.is_empty() { (v.source) } @else {
                                            a href=(format!("/runs/{}", v.run_id)) { code { (v.run_id.chars().take(8).collect::<String>()) } }
                                        }
                                    }
                                    td { (short(&v.description, 200)) }
                                    td {
                                        form.inline method="get" action=(confirm) {
                                            input type="hidden" name="name" value=(model.name);
                                            input type="hidden" name="action" value="stage";
                                            input type="hidden" name="version" value=(v.version);
                                            label.visually-hidden for=(format!("stage-{}", v.version)) { "Stage for version " (v.version) }
                                            select id=(format!("stage-{}", v.version)) name="stage" {
                                                @for st in STAGES { option value=(st) selected[st == v.current_stage] { (st) } }
                                            }
                                            label { input type="checkbox" name="archive" value="1"; " archive others in that stage" }
                                            button type="submit" { "Review…" }
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

/// A change to confirm and apply.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    SetAlias {
        alias: String,
        version: i64,
    },
    DeleteAlias {
        alias: String,
    },
    Stage {
        version: i64,
        stage: String,
        archive: bool,
    },
}

/// Reads and checks a change (from the confirmation link or the POST form): the model name and
/// the action, with the alias, version and stage validated against the store.
async fn parse_action(s: &AppState, pairs: &[(String, String)]) -> Result<(String, Action)> {
    let Some(name) = param(pairs, "name") else {
        return invalid("Which model? The form is missing the model name.");
    };
    registry::get_registered_model(&s.pool, &name).await?;
    let version =
        || -> Result<i64> { registry::parse_version(&param(pairs, "version").unwrap_or_default()) };
    let action = match param(pairs, "action").as_deref() {
        Some("set-alias") => {
            let alias = param(pairs, "alias").unwrap_or_default().trim().to_string();
            registry::check_alias(&alias)?;
            let version = version()?;
            registry::get_model_version(&s.pool, &name, version).await?;
            Action::SetAlias { alias, version }
        }
        Some("delete-alias") => {
            let alias = param(pairs, "alias").unwrap_or_default();
            registry::get_version_by_alias(&s.pool, &name, &alias).await?;
            Action::DeleteAlias { alias }
        }
        Some("stage") => {
            let version = version()?;
            registry::get_model_version(&s.pool, &name, version).await?;
            let stage = registry::canonical_stage(&param(pairs, "stage").unwrap_or_default())?;
            Action::Stage {
                version,
                stage: stage.to_string(),
                archive: param(pairs, "archive").as_deref() == Some("1"),
            }
        }
        _ => return invalid("Unknown change: use set-alias, delete-alias or stage."),
    };
    Ok((name, action))
}

pub async fn confirm(req: HttpRequest, s: web::Data<AppState>) -> HttpResponse {
    let r = confirm_page(&req, &s).await;
    or_error_page(&req, r)
}

async fn confirm_page(req: &HttpRequest, s: &AppState) -> Page {
    let pairs = query_pairs(req);
    let (name, action) = parse_action(s, &pairs).await?;
    let versions = registry::versions_of(&s.pool, &name).await?;
    let holder = |alias: &str| {
        versions
            .iter()
            .find(|v| v.aliases.iter().any(|a| a == alias))
            .map(|v| v.version)
    };
    let (what, consequence, nothing_to_do): (Markup, Markup, bool) = match &action {
        Action::SetAlias { alias, version } => match holder(alias) {
            Some(v) if v == *version => (
                html! { "Alias " strong { "@" (alias) } " already points to version " (version) "." },
                html! {},
                true,
            ),
            Some(v) => (
                html! { "Move alias " strong { "@" (alias) } " of " strong { (name) } " from version " (v) " to version " strong { (version) } "." },
                html! { "Services that load " code { "models:/" (name) "@" (alias) } " switch to version " (version) " at their next poll." },
                false,
            ),
            None => (
                html! { "Create alias " strong { "@" (alias) } " on " strong { (name) } " pointing to version " strong { (version) } "." },
                html! { "Services that load " code { "models:/" (name) "@" (alias) } " can start." },
                false,
            ),
        },
        Action::DeleteAlias { alias } => (
            html! { "Remove alias " strong { "@" (alias) } " from " strong { (name) } " (now on version " (holder(alias).unwrap_or_default()) ")." },
            html! { "Services that load " code { "models:/" (name) "@" (alias) } " keep their loaded model but can no longer resolve the alias." },
            false,
        ),
        Action::Stage {
            version,
            stage,
            archive,
        } => {
            let current = versions
                .iter()
                .find(|v| v.version == *version)
                .map(|v| v.current_stage.clone())
                .unwrap_or_default();
            let others: Vec<i64> = versions
                .iter()
                .filter(|v| {
                    *archive
                        && (stage == "Staging" || stage == "Production")
                        && v.current_stage == *stage
                        && v.version != *version
                })
                .map(|v| v.version)
                .collect();
            (
                html! { "Move version " strong { (version) } " of " strong { (name) } " from stage " (current) " to " strong { (stage) } "." },
                html! {
                    @if !others.is_empty() {
                        "Version" @if others.len() > 1 { "s" } " "
                        (others.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
                        " in " (stage) " will be archived."
                    }
                },
                current == *stage && others.is_empty(),
            )
        }
    };
    // An alias move compares the version that holds it now with the one it would point to.
    let comparison = match &action {
        Action::SetAlias { alias, version } if !nothing_to_do => {
            let pair: Vec<ModelVersion> = versions
                .iter()
                .filter(|v| v.version == *version || Some(v.version) == holder(alias))
                .cloned()
                .collect();
            let mut rows = super::compare::rows(s, &pair).await?;
            // What serves now, then what would.
            rows.sort_by_key(|r| Some(r.version) != holder(alias));
            Some(super::compare::table(&rows, holder(alias), Some(*version)))
        }
        _ => None,
    };
    let back = model_url(&name);
    Ok(page(
        req,
        "Confirm change",
        html! {
            p.crumbs { a href="/models" { "Registered models" } " / " a href=(back) { (name) } " / " }
            h1 { "Confirm change" }
            p.change { (what) }
            p { (consequence) }
            @if let Some(c) = &comparison {
                h2 { "What the move changes" }
                (c)
            }
            @if nothing_to_do {
                p { a href=(back) { "Back to " (name) } }
            } @else {
                form method="post" action="/model/apply" {
                    (csrf_field(req))
                    input type="hidden" name="name" value=(name);
                    @match &action {
                        Action::SetAlias { alias, version } => {
                            input type="hidden" name="action" value="set-alias";
                            input type="hidden" name="alias" value=(alias);
                            input type="hidden" name="version" value=(version);
                        }
                        Action::DeleteAlias { alias } => {
                            input type="hidden" name="action" value="delete-alias";
                            input type="hidden" name="alias" value=(alias);
                        }
                        Action::Stage { version, stage, archive } => {
                            input type="hidden" name="action" value="stage";
                            input type="hidden" name="version" value=(version);
                            input type="hidden" name="stage" value=(stage);
                            @if *archive { input type="hidden" name="archive" value="1"; }
                        }
                    }
                    button.primary type="submit" { "Confirm" }
                    " "
                    a href=(back) { "Cancel" }
                }
            }
        },
    ))
}

pub async fn apply(
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
    s: web::Data<AppState>,
) -> HttpResponse {
    let r = apply_change(&req, &form, &s).await;
    or_error_page(&req, r)
}

async fn apply_change(req: &HttpRequest, pairs: &[(String, String)], s: &AppState) -> Page {
    check_csrf(req, &param(pairs, "csrf").unwrap_or_default())?;
    if pairs
        .iter()
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return invalid("The form may not contain the NUL character.");
    }
    let (name, action) = parse_action(s, pairs).await?;
    let back = model_url(&name);
    let next = match &action {
        Action::SetAlias { alias, version } => {
            moves::set_alias(req, Via::Ui, &s.pool, &name, alias, *version).await?;
            format!("{back}&done=alias&alias={}", q(alias))
        }
        Action::DeleteAlias { alias } => {
            moves::delete_alias(req, Via::Ui, &s.pool, &name, alias).await?;
            format!("{back}&done=unalias&alias={}", q(alias))
        }
        Action::Stage {
            version,
            stage,
            archive,
        } => {
            moves::transition_stage(req, Via::Ui, &s.pool, &name, *version, stage, *archive)
                .await?;
            format!("{back}&done=stage&version={version}")
        }
    };
    Ok(see_other(&next))
}
