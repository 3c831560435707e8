//! Reading the gateway's HTML pages.

/// The value of the hidden `csrf` field of a page's form.
pub fn csrf_field(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// Opens the approval page at `url` and approves on it (its cookie and CSRF field): the page's
/// status and body when it is not 200, else the decision's status and the page's HTML.
pub async fn approve_at(http: &reqwest::Client, url: &str) -> (u16, String) {
    let page = http.get(url).send().await.unwrap();
    if page.status() != 200 {
        return (page.status().as_u16(), page.text().await.unwrap());
    }
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let csrf = csrf_field(&html);
    let done = http
        .post(url)
        .header("cookie", cookie)
        .form(&[("csrf", csrf.as_str()), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    (done.status().as_u16(), html)
}

/// The value of the first `name="…"` attribute on a page (as served, HTML-escaped).
pub fn first_attr<'a>(html: &'a str, name: &str) -> &'a str {
    html.split(&format!("{name}=\""))
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
}
