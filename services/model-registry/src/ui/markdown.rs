//! Markdown artifacts (the training report) as HTML that cannot carry script: raw HTML in the
//! source is shown as text, links and images keep only http(s), mailto and in-page targets, and
//! relative images and links point at the run's other artifacts.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// Renders `source`; `resolve(target, is_image)` maps a relative target (e.g. `roc.png`) to a URL.
pub fn render(source: &str, resolve: &dyn Fn(&str, bool) -> Option<String>) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    let events = Parser::new_ext(source, opts).map(|e| match e {
        // Raw HTML is never passed through.
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(&dest_url, false, resolve),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(&dest_url, true, resolve),
            title,
            id,
        }),
        other => other,
    });
    let mut out = String::with_capacity(source.len() * 2);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

fn safe_url<'a>(
    url: &str,
    image: bool,
    resolve: &dyn Fn(&str, bool) -> Option<String>,
) -> CowStr<'a> {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://")
        || lower.starts_with("http://")
        || lower.starts_with("mailto:")
        || lower.starts_with('#')
    {
        return CowStr::from(url.to_string());
    }
    // Anything else with a scheme (javascript:, data:, file:, …) or a host is dropped.
    let has_scheme = url
        .split_once(':')
        .is_some_and(|(head, _)| !head.contains('/'));
    if has_scheme || url.starts_with("//") {
        return CowStr::from("#");
    }
    CowStr::from(resolve(url, image).unwrap_or_else(|| "#".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(rel: &str, image: bool) -> Option<String> {
        Some(format!("/{}?path={rel}", if image { "a" } else { "b" }))
    }

    #[test]
    fn raw_html_and_script_urls_are_neutralised() {
        let html = render(
            "# Report <script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n[x](javascript:alert(3)) [y](data:text/html,hi) ![ROC](roc.png) [doc](https://example.com)",
            &art,
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img src=\"x\""), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:text"), "{html}");
        assert!(html.contains("src=\"/a?path=roc.png\""), "{html}");
        assert!(html.contains("href=\"https://example.com\""), "{html}");
    }

    #[test]
    fn tables_render() {
        let html = render("| a | b |\n| --- | --- |\n| 1 | 2 |\n", &art);
        assert!(
            html.contains("<table>") && html.contains("<td>2</td>"),
            "{html}"
        );
    }
}
