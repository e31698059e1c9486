//! The web UI over HTTP: hostile names, tags, descriptions and artifacts are escaped on every
//! page; changes need a confirmation and a CSRF token; sign-in works with basic auth and tokens.
//! (Pages over real training runs are tested with `loanctl train` in cli/loanctl/tests.)

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with_auth, Db, TestApp};
use crate::on_both_backends;

/// A client that does not follow redirects, so tests see the 303s.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of every cookie a response sets.
fn cookies(resp: &reqwest::Response) -> Vec<(String, String)> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The CSRF token of the first form on a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn page(app: &TestApp, path: &str) -> (StatusCode, String) {
    let resp = browser().get(app.url(path)).send().await.unwrap();
    let status = resp.status();
    if status.is_success() {
        let ct = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
    }
    (status, resp.text().await.unwrap())
}

fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const EXP: &str = "<script>alert('experiment')</script>";
const RUN: &str = "<b onmouseover=alert(2)>run</b>";
const MODEL: &str = "<svg onload=alert(8)>";

/// What must never appear unescaped: the pages themselves carry no script at all.
fn assert_inert(path: &str, html: &str) {
    for bad in [
        "<script",
        "<img src=x",
        "<svg onload",
        "<b onmouseover",
        "javascript:",
        "<iframe",
    ] {
        assert!(!html.contains(bad), "{path} contains {bad}:\n{html}");
    }
}

async fn hostile_input_is_escaped_on_every_page(db: Db) {
    let app = spawn_app(db).await;
    let (s, v) = app
        .post(
            "/experiments/create",
            json!({"name": EXP, "tags": [{"key": "note", "value": "\"><img src=x onerror=alert(1)>"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let exp = v["experiment_id"].as_str().unwrap().to_string();
    let (s, v) = app
        .post(
            "/runs/create",
            json!({"experiment_id": exp, "run_name": RUN}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let run = v["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let artifact_uri = v["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = app
        .post(
            "/runs/log-batch",
            json!({
                "run_id": run,
                "params": [{"key": "p", "value": "<script>alert(3)</script>"}],
                "tags": [{"key": "t", "value": "</td><script>alert(4)</script>"}],
                "metrics": [
                    {"key": "loss", "value": 1.0, "timestamp": 1, "step": 0},
                    {"key": "loss", "value": 0.5, "timestamp": 2, "step": 1},
                    {"key": "loss", "value": 0.25, "timestamp": 3, "step": 2},
                ],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let art = artifact_uri.trim_start_matches("mlflow-artifacts:/");
    for (name, body) in [
        (
            "notes.md",
            "# Notes <script>alert(5)</script>\n\n[click](javascript:alert(6)) ![plot](plot.png)\n\n<iframe src=x></iframe>\n",
        ),
        ("evil.html", "<script>alert(7)</script>"),
        ("data.json", "{\"a\": [1, 2, {\"b\": \"<script>alert(10)</script>\"}]}"),
    ] {
        let (s, _) = app
            .raw(
                reqwest::Method::PUT,
                &format!("/api/2.0/mlflow-artifacts/artifacts/{art}/{name}"),
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, v) = app
        .post(
            "/registered-models/create",
            json!({"name": MODEL, "description": "<script>alert(9)</script>"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .post(
            "/model-versions/create",
            json!({"name": MODEL, "source": format!("runs:/{run}/model"), "run_id": run, "description": "<img src=x onerror=alert(11)>"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let pages = [
        "/".to_string(),
        format!("/?q={}", q("<script>")),
        format!("/experiments/{exp}"),
        format!(
            "/experiments/{exp}?sort=metrics.loss&desc=1&filter={}",
            q("params.p = '<script>'")
        ),
        format!("/runs/{run}"),
        format!("/compare?run={run}"),
        format!("/runs/{run}/artifacts"),
        format!("/runs/{run}/artifacts?path=notes.md"),
        format!("/runs/{run}/artifacts?path=data.json"),
        format!("/runs/{run}/artifacts?path=evil.html"),
        "/models".to_string(),
        format!("/model?name={}", q(MODEL)),
        format!(
            "/model/confirm?name={}&action=set-alias&alias=champion&version=1",
            q(MODEL)
        ),
    ];
    for path in &pages {
        let (status, html) = page(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert_inert(path, &html);
    }
    // The names are there, escaped.
    let (_, html) = page(&app, "/").await;
    assert!(
        html.contains("&lt;script&gt;alert('experiment')&lt;/script&gt;"),
        "{html}"
    );
    let (_, html) = page(&app, &format!("/runs/{run}")).await;
    assert!(
        html.contains("&lt;b onmouseover=alert(2)&gt;run&lt;/b&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;/td&gt;&lt;script&gt;alert(4)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("3 points over steps 0 to 2"),
        "the loss history is charted: {html}"
    );
    let (_, html) = page(&app, &format!("/runs/{run}/artifacts?path=notes.md")).await;
    assert!(
        html.contains("&lt;script&gt;alert(5)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains(&format!("src=\"/runs/{run}/artifact-file?path=plot.png\"")),
        "relative images point at the run's artifacts: {html}"
    );
    let (_, html) = page(&app, &format!("/model?name={}", q(MODEL))).await;
    assert!(html.contains("&lt;svg onload=alert(8)&gt;"), "{html}");

    // Raw files: HTML is a download, never rendered in the registry's origin.
    let resp = browser()
        .get(app.url(&format!("/runs/{run}/artifact-file?path=evil.html")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h[CONTENT_TYPE], "application/octet-stream");
    assert!(h["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
    assert_eq!(h["x-content-type-options"], "nosniff");

    // Paths out of the run, and unknown runs, are refused with a page.
    for path in ["../../..", "../x", "/etc/passwd", "a/../../b", "%2e%2e/x"] {
        for route in ["artifacts", "artifact-file"] {
            let (status, html) = page(&app, &format!("/runs/{run}/{route}?path={}", q(path))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{route} {path}: {html}");
            assert!(html.contains("Invalid path"), "{html}");
        }
    }
    let (status, html) = page(&app, "/runs/0123456789abcdef").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("not found"), "{html}");
}
on_both_backends!(hostile_input, hostile_input_is_escaped_on_every_page);

async fn two_versions(app: &TestApp) -> String {
    let exp = app.create_experiment("ui-flow").await;
    let run = app.create_run(&exp).await;
    let (s, v) = app
        .post("/registered-models/create", json!({"name": "loan-default"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for _ in 0..2 {
        let (s, v) = app
            .post(
                "/model-versions/create",
                json!({"name": "loan-default", "source": format!("runs:/{run}/model"), "run_id": run}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = app
        .post(
            "/registered-models/alias",
            json!({"name": "loan-default", "alias": "champion", "version": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    run
}

async fn champion(app: &TestApp) -> (StatusCode, String) {
    let (s, v) = app
        .get(
            "/registered-models/alias",
            &[("name", "loan-default"), ("alias", "champion")],
        )
        .await;
    (
        s,
        v["model_version"]["version"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

async fn changes_need_confirmation_and_a_csrf_token(db: Db) {
    let app = spawn_app(db).await;
    two_versions(&app).await;
    let b = browser();
    let confirm =
        app.url("/model/confirm?name=loan-default&action=set-alias&alias=champion&version=2");
    let resp = b.get(&confirm).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csrf_cookie = cookies(&resp)
        .into_iter()
        .find(|(k, _)| k == "registry_csrf")
        .expect("the confirmation page sets the CSRF cookie")
        .1;
    let html = resp.text().await.unwrap();
    assert!(html.contains("from version 1 to version"), "{html}");
    let token = csrf_of(&html);
    assert_eq!(token, csrf_cookie);
    assert_eq!(
        champion(&app).await.1,
        "1",
        "showing the confirmation changes nothing"
    );

    let form = |token: &str| {
        vec![
            ("csrf", token.to_string()),
            ("name", "loan-default".to_string()),
            ("action", "set-alias".to_string()),
            ("alias", "champion".to_string()),
            ("version", "2".to_string()),
        ]
    };
    let apply = app.url("/model/apply");
    // No cookie, a token that does not match it, another site's origin: all refused.
    let refused = [
        b.post(&apply).form(&form(&token)).send().await.unwrap(),
        b.post(&apply)
            .header(COOKIE, format!("registry_csrf={csrf_cookie}"))
            .form(&form("0123456789abcdef0123456789abcdef"))
            .send()
            .await
            .unwrap(),
        b.post(&apply)
            .header(COOKIE, format!("registry_csrf={csrf_cookie}"))
            .header(ORIGIN, "http://evil.example")
            .form(&form(&token))
            .send()
            .await
            .unwrap(),
    ];
    for resp in refused {
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp
            .text()
            .await
            .unwrap()
            .contains("came from another site"));
    }
    assert_eq!(champion(&app).await.1, "1");

    let resp = b
        .post(&apply)
        .header(COOKIE, format!("registry_csrf={csrf_cookie}"))
        .header(ORIGIN, app.address.clone())
        .form(&form(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()[LOCATION].to_str().unwrap().to_string();
    assert_eq!(
        location,
        "/model?name=loan-default&done=alias&alias=champion"
    );
    assert_eq!(champion(&app).await.1, "2", "the REST API sees the move");
    let (_, html) = page(&app, &location).await;
    assert!(
        html.contains("Alias “champion” now points to version 2."),
        "{html}"
    );

    // A stage transition, archiving the version already in Production.
    let post = |fields: Vec<(&'static str, &'static str)>| {
        let mut f: Vec<(&str, String)> = vec![("csrf", token.clone())];
        f.extend(fields.into_iter().map(|(k, v)| (k, v.to_string())));
        b.post(&apply)
            .header(COOKIE, format!("registry_csrf={csrf_cookie}"))
            .form(&f)
            .send()
    };
    for v in ["1", "2"] {
        let resp = post(vec![
            ("name", "loan-default"),
            ("action", "stage"),
            ("version", v),
            ("stage", "production"),
            ("archive", "1"),
        ])
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    }
    let stage = |v: &'static str| {
        let app = &app;
        async move {
            let (_, body) = app
                .get(
                    "/model-versions/get",
                    &[("name", "loan-default"), ("version", v)],
                )
                .await;
            body["model_version"]["current_stage"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(stage("2").await, "Production");
    assert_eq!(stage("1").await, "Archived");
    let (_, html) = page(
        &app,
        "/model/confirm?name=loan-default&action=stage&version=1&stage=Production&archive=1",
    )
    .await;
    assert!(html.contains("2 in Production will be archived"), "{html}");

    // Bad requests are explained before anything is posted.
    let (status, html) = page(
        &app,
        "/model/confirm?name=loan-default&action=set-alias&alias=latest&version=2",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("reserved"), "{html}");
    let (status, _) = page(
        &app,
        "/model/confirm?name=loan-default&action=set-alias&alias=champion&version=9",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Removing the alias.
    let resp = post(vec![
        ("name", "loan-default"),
        ("action", "delete-alias"),
        ("alias", "champion"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        champion(&app).await.0,
        StatusCode::BAD_REQUEST,
        "the alias is gone"
    );
}
on_both_backends!(confirm_and_csrf, changes_need_confirmation_and_a_csrf_token);

/// Before a promotion the reviewer sees what the move changes: the held-out figures training
/// logged to each version's source run, side by side, the serving version marked and the
/// proposed one with its differences (gains and losses told apart).
async fn a_promotion_shows_the_versions_side_by_side(db: Db) {
    let app = spawn_app(db).await;
    let exp = app.create_experiment("compare").await;
    let (s, v) = app
        .post("/registered-models/create", json!({"name": "loan-default"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let figures = [
        ("test_roc_auc", 0.78, 0.80),
        ("test_ks", 0.41, 0.45),
        ("test_brier", 0.17, 0.16),
        ("test_approval_rate", 0.62, 0.60),
        ("test_min_adverse_impact_ratio", 0.85, 0.72),
    ];
    for version in 0..2 {
        let run = app.create_run(&exp).await;
        let metrics: Vec<_> = figures
            .iter()
            .map(|(k, a, b)| json!({"key": k, "value": if version == 0 { a } else { b }, "timestamp": 1, "step": 0}))
            .collect();
        let (s, v) = app
            .post(
                "/runs/log-batch",
                json!({"run_id": run, "metrics": metrics}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = app
            .post(
                "/model-versions/create",
                json!({"name": "loan-default", "source": format!("runs:/{run}/model"), "run_id": run}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // A third version without a source run has an empty row.
    let (s, v) = app
        .post(
            "/model-versions/create",
            json!({"name": "loan-default", "source": "s3://elsewhere/model"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .post(
            "/registered-models/alias",
            json!({"name": "loan-default", "alias": "champion", "version": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, html) = page(
        &app,
        "/model/confirm?name=loan-default&action=set-alias&alias=champion&version=2",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let at = html.find("What the move changes").expect("a comparison");
    let table = &html[at..];
    for figure in ["0.7800", "0.8000", "0.4500", "0.1700", "0.620", "0.720"] {
        assert!(table.contains(figure), "{figure} in {table}");
    }
    assert!(
        table.contains("<span class=\"gain\">(+0.0200)</span>"),
        "ROC AUC up: {table}"
    );
    assert!(
        table.contains("<span class=\"gain\">(-0.0100)</span>"),
        "Brier down: {table}"
    );
    assert!(
        table.contains("<span class=\"change\">(-0.020)</span>"),
        "approval rate: {table}"
    );
    assert!(
        table.contains("<span class=\"loss\">(-0.130)</span>"),
        "impact ratio: {table}"
    );
    assert!(
        table.find("serving").unwrap() < table.find("proposed").unwrap(),
        "the serving version marked, then the proposed one"
    );
    assert!(
        !table.contains("<th class=\"num\" scope=\"row\">3"),
        "only the two versions of the move"
    );

    let (s, html) = page(&app, "/model?name=loan-default").await;
    assert_eq!(s, StatusCode::OK);
    let at = html
        .find("Compare versions")
        .expect("the model page compares");
    let table = &html[at..html[at..].find("</table>").map_or(html.len(), |e| at + e)];
    assert!(
        table.contains("serving") && table.contains("0.8000") && table.contains("—"),
        "{table}"
    );
}

on_both_backends!(
    compare_versions,
    a_promotion_shows_the_versions_side_by_side
);

#[tokio::test]
async fn browsers_sign_in_with_basic_auth_or_a_token() {
    let app = spawn_app_with_auth(Db::Sqlite).await;
    let b = browser();

    let resp = b.get(app.url("/models")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"mlflow\"");
    assert!(resp.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.text().await.unwrap().contains("href=\"/login\""));
    for open in ["/login", "/static/ui.css"] {
        let resp = b.get(app.url(open)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{open}");
    }
    let resp = b
        .get(app.url("/models"))
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = b
        .get(app.url("/models"))
        .bearer_auth("tok-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Token sign-in keeps the token in a cookie that UI pages accept and the API does not.
    let resp = b.get(app.url("/login")).send().await.unwrap();
    let csrf = cookies(&resp)
        .into_iter()
        .find(|(k, _)| k == "registry_csrf")
        .unwrap()
        .1;
    let token = csrf_of(&resp.text().await.unwrap());
    let login = |t: &'static str| {
        b.post(app.url("/login"))
            .header(COOKIE, format!("registry_csrf={csrf}"))
            .form(&[("csrf", token.as_str()), ("token", t)])
            .send()
    };
    let resp = login("tok-wrong").await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("not accepted"));
    let resp = login("tok-abc").await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = cookies(&resp);
    let session = set
        .iter()
        .find(|(k, _)| k == "registry_token")
        .expect("a session cookie");
    assert_eq!(session.1, "tok-abc");
    let raw = resp.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        raw.contains("httponly") && raw.contains("samesite=strict"),
        "{raw}"
    );
    let jar = format!("registry_csrf={csrf}; registry_token=tok-abc");
    let resp = b
        .get(app.url("/models"))
        .header(COOKIE, &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("Sign out"));
    let resp = b
        .get(app.url("/api/2.0/mlflow/registered-models/search"))
        .header(COOKIE, &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the cookie is for pages only, never the API"
    );
    let resp = b
        .post(app.url("/logout"))
        .header(COOKIE, &jar)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cleared = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cleared.starts_with("registry_token=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}
