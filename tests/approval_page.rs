//! The built-in approval page, driven over HTTP: form, CSRF, one-time link, security headers.

use ciba_test_support as common;

use common::*;

struct Page {
    link: String,
    cookie: String,
    csrf: String,
    html: String,
    headers: reqwest::header::HeaderMap,
}

async fn open(gw: &Gateway, link: &str) -> Result<Page, u16> {
    let r = gw.http.get(link).send().await.unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let headers = r.headers().clone();
    let set = headers["set-cookie"].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let html = r.text().await.unwrap();
    let csrf = csrf_field(&html);
    Ok(Page {
        link: link.to_owned(),
        cookie,
        csrf,
        html,
        headers,
    })
}

async fn submit(
    gw: &Gateway,
    link: &str,
    cookie: Option<&str>,
    csrf: &str,
    decision: &str,
) -> (u16, String) {
    let mut rb = gw
        .http
        .post(link)
        .form(&[("csrf", csrf), ("decision", decision)]);
    if let Some(c) = cookie {
        rb = rb.header("cookie", c);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn setup(binding: &str) -> (Gateway, String, String) {
    let auth = Authenticator::start().await;
    let gw = start(|c| c.channel = auth.channel_config()).await;
    let r = gw
        .bc(&[
            ("scope", "openid email"),
            ("login_hint", "alice"),
            ("binding_message", binding),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let link = auth.next_call().await.body["approval_url"]
        .as_str()
        .unwrap()
        .to_owned();
    (gw, r.json["auth_req_id"].as_str().unwrap().to_owned(), link)
}

#[tokio::test]
async fn page_shows_client_binding_message_and_scopes_with_strict_headers() {
    let (gw, _id, link) = setup("<b>7 & 9</b>").await;
    let p = open(&gw, &link).await.unwrap();
    assert!(p.html.contains("Post Client"));
    assert!(
        p.html.contains("&#60;b&#62;7 &#38; 9&#60;/b&#62;"),
        "binding message is escaped"
    );
    assert!(!p.html.contains("<b>7"));
    assert!(p.html.contains("<li>email</li>"));
    assert_eq!(p.headers["cache-control"], "no-store");
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"));
    assert_eq!(p.headers["x-frame-options"], "DENY");
    assert_eq!(p.headers["referrer-policy"], "no-referrer");
    let cookie = p.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
}

#[tokio::test]
async fn approve_with_csrf_then_poll_gets_tokens_and_the_link_dies() {
    let (gw, id, link) = setup("1234").await;
    let p = open(&gw, &link).await.unwrap();
    // No cookie, or a token from another page session: refused, nothing resolved.
    assert_eq!(submit(&gw, &p.link, None, &p.csrf, "approve").await.0, 403);
    let other = open(&gw, &link).await.unwrap();
    assert_eq!(
        submit(&gw, &p.link, Some(&other.cookie), &p.csrf, "approve")
            .await
            .0,
        403
    );
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");

    let (status, html) = submit(&gw, &p.link, Some(&p.cookie), &p.csrf, "approve").await;
    assert_eq!(status, 200);
    assert!(html.contains("Approved"));
    gw.clock.advance_secs(5);
    assert_eq!(gw.poll(&id).await.status, 200);
    // Used: the link is dead for GET and POST.
    assert_eq!(open(&gw, &link).await.err(), Some(404));
    assert_eq!(
        submit(&gw, &p.link, Some(&p.cookie), &p.csrf, "deny")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn deny_gives_access_denied() {
    let (gw, id, link) = setup("1234").await;
    let p = open(&gw, &link).await.unwrap();
    let (status, html) = submit(&gw, &p.link, Some(&p.cookie), &p.csrf, "deny").await;
    assert_eq!(status, 200);
    assert!(html.contains("Denied"));
    gw.poll(&id).await.assert_error(400, "access_denied");
}

#[tokio::test]
async fn link_dies_on_expiry() {
    let (gw, id, link) = setup("1234").await;
    let p = open(&gw, &link).await.unwrap();
    gw.clock.advance_secs(121);
    assert_eq!(open(&gw, &link).await.err(), Some(404));
    assert_eq!(
        submit(&gw, &p.link, Some(&p.cookie), &p.csrf, "approve")
            .await
            .0,
        404
    );
    gw.poll(&id).await.assert_error(400, "expired_token");
}

#[tokio::test]
async fn unknown_link_is_404() {
    let gw = gateway().await;
    assert_eq!(
        open(&gw, &format!("{}/approve/nope", gw.url)).await.err(),
        Some(404)
    );
}

/// Several replicas behind one URL: a page rendered by one is posted to another. With a shared
/// `approval.csrf_key` the second accepts the form's CSRF token (and, not holding the request
/// in its own memory store, says the link is gone); with the default per-process key it refuses
/// the form as expired.
#[tokio::test]
async fn a_shared_csrf_key_lets_another_replica_accept_the_form() {
    let key = std::env::temp_dir().join(format!("ciba-csrf-{}", ciba_test_support::random_token()));
    std::fs::write(&key, "a-csrf-key-shared-by-every-replica-0123456789").unwrap();
    let shared = |c: &mut ciba_gateway::Config| {
        c.approval.csrf_key = Some(ciba_gateway::config::SecretRef::new(format!(
            "file:{}",
            key.display()
        )));
    };
    for (share, expected) in [(true, 404), (false, 403)] {
        let auth = Authenticator::start().await;
        let a = start(|c| {
            c.channel = auth.channel_config();
            if share {
                shared(c);
            }
        })
        .await;
        let b = start(|c| {
            if share {
                shared(c);
            }
        })
        .await;
        assert_eq!(
            a.bc(&[("scope", "openid"), ("login_hint", "alice")])
                .await
                .status,
            200
        );
        let link = auth.next_call().await.body["approval_url"]
            .as_str()
            .unwrap()
            .to_owned();
        let p = open(&a, &link).await.unwrap();
        let on_b = link.replace(&a.url, &b.url);
        let (status, _) = submit(&b, &on_b, Some(&p.cookie), &p.csrf, "approve").await;
        assert_eq!(status, expected, "shared key: {share}");
    }
    let _ = std::fs::remove_file(&key);
}
