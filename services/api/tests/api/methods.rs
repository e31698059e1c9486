//! A path answers a method it does not take with 405 and an `Allow` header (RFC 9110) listing the
//! methods the OpenAPI document gives that path.

use crate::helpers::{shared_bundle, spawn_api};

#[tokio::test]
async fn a_wrong_method_is_a_405_whose_allow_lists_the_documented_methods() {
    let api = spawn_api(&["--model-uri", shared_bundle().to_str().unwrap()]).await;
    let (s, doc) = api.get("/openapi.json").await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{} paths", paths.len());
    for (path, item) in paths {
        let mut documented: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
            .map(|m| m.to_uppercase())
            .collect();
        documented.sort();
        let concrete = path.replace("{id}", "20261204000000-0123456789abcdef0123456789abcdef");
        // JSON, so that the border's content-type check lets it through to routing.
        let r = api
            .client
            .patch(format!("{}{concrete}", api.address))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let mut allow: Vec<String> = r
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{path}: no Allow header"))
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_string())
            .collect();
        allow.sort();
        assert_eq!(allow, documented, "{path}");
    }
}
