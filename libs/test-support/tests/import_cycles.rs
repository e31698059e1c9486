//! No module of any workspace crate imports one that imports it back (directly or round about).
//! The checker itself is tested on a small crate written here, with and without a circle.

use test_support::{import_cycles, mutual_imports};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn no_module_of_the_workspace_imports_one_that_imports_it_back() {
    let mut checked = 0;
    let mut found = Vec::new();
    for group in ["libs", "services", "cli"] {
        for entry in std::fs::read_dir(root().join(group)).unwrap() {
            let src = entry.unwrap().path().join("src");
            if src.is_dir() {
                checked += 1;
                for pair in mutual_imports(&src) {
                    found.push(format!("{}: {pair}", src.display()));
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} crates found");
    assert!(
        found.is_empty(),
        "modules importing each other:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_services_and_the_job_libraries_have_no_circle_of_imports_at_all() {
    for krate in [
        "services/api",
        "services/worker",
        "libs/job-handlers",
        "libs/jobs",
        "libs/training",
        "cli/loanctl",
    ] {
        let cycles = import_cycles(&root().join(krate).join("src"));
        assert!(cycles.is_empty(), "{krate}: circles of imports: {cycles:?}");
    }
}

fn crate_with(files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = test_support::tmp("import-cycles").join("src");
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn the_checker_finds_circles_through_use_groups_super_children_and_reexports() {
    // Two modules naming each other.
    let src = crate_with(&[
        ("lib.rs", "pub mod auth;\npub mod ui;\n"),
        ("auth.rs", "fn f() { crate::ui::page(); }\n"),
        ("ui/mod.rs", "use crate::auth::Auth;\npub fn page() {}\n"),
    ]);
    assert_eq!(mutual_imports(&src), vec!["auth <-> ui".to_string()]);
    // startup -> routes (child call), routes::predict -> startup (group import).
    let src = crate_with(&[
        (
            "lib.rs",
            "pub mod startup;\npub mod routes;\npub use startup::AppState;\n",
        ),
        (
            "startup.rs",
            "pub struct AppState;\nfn f() { crate::routes::configure(); }\n",
        ),
        (
            "routes/mod.rs",
            "pub mod predict;\npub fn configure() { predict::go(); }\n",
        ),
        (
            "routes/predict.rs",
            "use crate::{AppState};\npub fn go() {}\n",
        ),
    ]);
    assert_eq!(
        import_cycles(&src),
        vec![vec![
            "routes".to_string(),
            "routes::predict".into(),
            "startup".into()
        ]]
    );
    // The same crate with the state in its own module: no circle.
    let src = crate_with(&[
        (
            "lib.rs",
            "pub mod startup;\npub mod state;\npub mod routes;\n",
        ),
        ("state.rs", "pub struct AppState;\n"),
        (
            "startup.rs",
            "use crate::state::AppState;\nfn f() { crate::routes::configure(); }\n",
        ),
        (
            "routes/mod.rs",
            "pub mod predict;\npub fn configure() { predict::go(); }\n",
        ),
        (
            "routes/predict.rs",
            "use super::super::state::AppState; // crate::startup in a comment\npub fn go() {}\n",
        ),
    ]);
    assert!(import_cycles(&src).is_empty());
}
