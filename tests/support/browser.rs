//! A scripted browser over HTTP: keeps portcullis's cookies itself (to inspect them), keeps the
//! OP's cookies in a jar, drives the OP's login and consent forms, and records every response
//! portcullis sent so tests can scan them for tokens.

use std::collections::BTreeMap;

use reqwest::header::HeaderMap;
use url::Url;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

pub struct Browser {
    pub origin: String,
    http: reqwest::Client,
    op: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    /// Every status line, header and body portcullis returned, for leak scans.
    pub transcript: String,
}

impl Browser {
    pub fn new(origin: &str) -> Browser {
        let no_redirects =
            || reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        Browser {
            origin: origin.to_string(),
            http: no_redirects().build().expect("client"),
            op: no_redirects()
                .cookie_store(true)
                .build()
                .expect("op client"),
            cookies: BTreeMap::new(),
            transcript: String::new(),
        }
    }

    pub fn session_cookie(&self) -> Option<&str> {
        self.cookies.get("__Host-portcullis").map(String::as_str)
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn request(
        &mut self,
        method: &str,
        path_or_url: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.origin)
        };
        let mut req = self.http.request(method.parse().expect("method"), &url);
        if !self.cookies.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("portcullis answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        let response = Response {
            status,
            headers,
            body,
        };
        self.record(&response);
        for sc in response.set_cookies() {
            self.apply_set_cookie(&sc);
        }
        response
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers).await
    }

    fn record(&mut self, r: &Response) {
        self.transcript.push_str(&format!("{}\n", r.status));
        for (k, v) in &r.headers {
            self.transcript
                .push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("")));
        }
        self.transcript.push_str(&r.body);
        self.transcript.push('\n');
    }

    fn apply_set_cookie(&mut self, line: &str) {
        let first = line.split(';').next().unwrap_or("");
        let Some((name, value)) = first.split_once('=') else {
            return;
        };
        let expired = line
            .split(';')
            .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
        if expired || value.is_empty() {
            self.cookies.remove(name.trim());
        } else {
            self.cookies
                .insert(name.trim().to_string(), value.trim().to_string());
        }
    }

    /// `GET /bff/login`: returns the OP authorization URL portcullis redirected to.
    pub async fn start_login(&mut self, return_to: &str) -> Url {
        let path = format!("/bff/login?returnTo={}", super::op::form_encode(return_to));
        let resp = self.get(&path, &[]).await;
        assert_eq!(resp.status, 302, "login redirects to the OP: {}", resp.body);
        Url::parse(resp.header("location").expect("location")).expect("absolute OP URL")
    }

    /// Drives the OP (login form, consent form, SSO redirects) until it redirects back to
    /// portcullis; returns that callback URL.
    pub async fn authorize_at_op(&mut self, auth_url: Url, user: &str) -> String {
        let mut url = auth_url;
        for _ in 0..12 {
            let resp = self.op.get(url.clone()).send().await.expect("OP answers");
            if resp.status().is_redirection() {
                let loc = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .expect("OP location");
                let next = url.join(loc).expect("resolvable location");
                if next.as_str().starts_with(&self.origin) {
                    return next.to_string();
                }
                url = next;
                continue;
            }
            let page = resp.text().await.unwrap_or_default();
            let form: Vec<(&str, &str)> = if page.contains("name=\"prompt\" value=\"login\"") {
                vec![("prompt", "login"), ("login", user), ("password", "x")]
            } else if page.contains("name=\"prompt\" value=\"consent\"") {
                vec![("prompt", "consent")]
            } else {
                panic!(
                    "unexpected OP page at {url}: {}",
                    &page[..page.len().min(300)]
                );
            };
            let resp = self
                .op
                .post(url.clone())
                .form(&form)
                .send()
                .await
                .expect("OP form answers");
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("OP form redirects");
            url = url.join(loc).expect("resolvable location");
        }
        panic!("the OP never redirected back to portcullis");
    }

    /// The whole login; returns the callback response (the landing page).
    pub async fn login(&mut self, user: &str, return_to: &str) -> Response {
        let auth = self.start_login(return_to).await;
        let callback = self.authorize_at_op(auth, user).await;
        let resp = self.get(&callback, &[]).await;
        assert_eq!(
            resp.status, 200,
            "callback lands on the bounce page: {}",
            resp.body
        );
        assert!(
            self.session_cookie().is_some(),
            "callback sets the session cookie"
        );
        resp
    }

    /// Logs out at the OP directly (its end-session page and confirmation form), as a user
    /// would from another application; the OP then calls back-channel logout.
    pub async fn logout_at_op(&mut self, issuer: &str) {
        let start = format!("{issuer}/session/end?client_id={}", super::op::CLIENT_ID);
        self.end_session_at_op(&start).await;
    }

    /// Follows an end-session URL at the OP through its confirmation form; returns where the OP
    /// then redirects (the post-logout redirect URI, with `state` when one was sent).
    pub async fn end_session_at_op(&mut self, start: &str) -> String {
        let issuer = {
            let u = Url::parse(start).expect("absolute end-session URL");
            u.origin().ascii_serialization()
        };
        let page = self
            .op
            .get(start)
            .send()
            .await
            .expect("OP answers")
            .text()
            .await
            .unwrap_or_default();
        let xsrf = hidden_input(&page, "xsrf")
            .unwrap_or_else(|| panic!("no xsrf field on the OP's logout page: {page}"));
        let resp = self
            .op
            .post(format!("{issuer}/session/end/confirm"))
            .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
            .send()
            .await
            .expect("OP confirms");
        assert!(
            resp.status().is_redirection(),
            "the OP confirmed the logout: {}",
            resp.status()
        );
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    pub async fn api(&mut self, path: &str) -> Response {
        self.get(path, &[("x-csrf", "1")]).await
    }

    /// The logout link `/bff/user` offers this browser's session.
    pub async fn logout_url(&mut self) -> String {
        let user: serde_json::Value =
            serde_json::from_str(&self.api("/bff/user").await.body).expect("/bff/user JSON");
        user["logout_url"]
            .as_str()
            .expect("a logout_url")
            .to_string()
    }

    /// Logs out through that link, as the SPA would; the status of portcullis's answer.
    pub async fn logout(&mut self) -> u16 {
        let url = self.logout_url().await;
        self.get(&url, &[]).await.status
    }
}

/// The value of `<input … name="NAME" … value="…">` in an HTML page, attribute order aside.
fn hidden_input(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let at = page.find(&marker)?;
    let tag_start = page[..at].rfind('<')?;
    let tag_end = at + page[at..].find('>')?;
    let tag = &page[tag_start..tag_end];
    let value = tag.split("value=\"").nth(1)?;
    Some(value.split('"').next()?.to_string())
}
