//! A CIBA client that knows a gateway by its URLs alone: for tests that build their own
//! servers around the library (the examples' tests) rather than a [`crate::Gateway`].

use serde_json::Value;

use crate::authenticator::Authenticator;
use crate::gateway::{Reply, reply};

/// A client (`id`, `secret`, `client_secret_post`) of the gateway at `origin`, whose
/// endpoints sit under `prefix` (the issuer's path), the token endpoint at `token_path`.
pub struct UrlClient {
    pub http: reqwest::Client,
    pub origin: String,
    pub prefix: String,
    pub token_path: String,
    pub client: (&'static str, &'static str),
}

impl UrlClient {
    /// A bc-authorize for `user` (scope `openid`): its `auth_req_id`.
    pub async fn bc_authorize(&self, user: &str) -> String {
        let r = self
            .http
            .post(format!("{}{}/bc-authorize", self.origin, self.prefix))
            .form(&[
                ("client_id", self.client.0),
                ("client_secret", self.client.1),
                ("scope", "openid"),
                ("login_hint", user),
            ])
            .send()
            .await
            .unwrap();
        let r = reply(r).await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json["auth_req_id"].as_str().unwrap().to_owned()
    }

    /// A token request with the CIBA grant.
    pub async fn poll(&self, auth_req_id: &str) -> Reply {
        let r = self
            .http
            .post(format!("{}{}", self.origin, self.token_path))
            .form(&[
                ("grant_type", "urn:openid:params:grant-type:ciba"),
                ("client_id", self.client.0),
                ("client_secret", self.client.1),
                ("auth_req_id", auth_req_id),
            ])
            .send()
            .await
            .unwrap();
        reply(r).await
    }

    /// The whole poll flow: bc-authorize for `user`, the user approves through `auth` (the HTTP
    /// authentication channel's callback), the poll gets the tokens.
    pub async fn flow(&self, user: &str, auth: &Authenticator) -> Value {
        let id = self.bc_authorize(user).await;
        let call = auth.next_call().await;
        let r = self
            .http
            .post(format!("{}{}/ciba/callback", self.origin, self.prefix))
            .bearer_auth(&call.bearer)
            .json(&serde_json::json!({"status": "SUCCEED"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let tokens = self.poll(&id).await;
        assert_eq!(tokens.status, 200, "{}", tokens.json);
        assert!(tokens.json["id_token"].is_string(), "{}", tokens.json);
        tokens.json
    }
}
