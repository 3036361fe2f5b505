//! Table tests: each bad configuration gives exactly the message a user would read.

use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
public_url: "https://app.example.com"
oidc:
  issuer: "https://idp.example.com/realms/main"
  client_id: "spa"
  client_secret_file: "secret/client-secret"
routes:
  - path: "/api/"
    upstream: "http://127.0.0.1:8080"
    kind: api
  - path: "/"
    upstream: "http://127.0.0.1:3000"
    kind: page
"#;

fn read_secret(path: &Path) -> std::io::Result<String> {
    if path.ends_with("secret/client-secret") {
        Ok("s3cret\n".to_string())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        ))
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_with(text, Path::new("/etc/portcullis/config.yaml"), &read_secret)
}

fn messages(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => vec![],
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn the_contract_example_is_complete() {
    let cfg = load(MINIMAL).expect("valid");
    assert_eq!(cfg.listen.to_string(), "0.0.0.0:4480");
    assert_eq!(cfg.admin_listen.to_string(), "0.0.0.0:4481");
    assert_eq!(
        cfg.redirect_uri.as_str(),
        "https://app.example.com/bff/callback"
    );
    assert_eq!(
        cfg.oidc.client_secret.as_ref().map(|s| s.expose().as_str()),
        Some("s3cret")
    );
    assert_eq!(cfg.oidc.scopes, ["openid", "profile", "email"]);
    assert_eq!(
        cfg.oidc.post_logout_redirect_uri.as_str(),
        "https://app.example.com/bff/logout/callback"
    );
    assert_eq!(cfg.session.cookie_name, "__Host-portcullis");
    assert_eq!(cfg.session.same_site, SameSite::Strict);
    assert_eq!(cfg.session.idle_timeout.as_secs(), 1800);
    assert_eq!(cfg.session.absolute_timeout.as_secs(), 43200);
    assert!(matches!(cfg.session.store, StoreConfig::Memory));
    assert_eq!(cfg.routes.len(), 2);
    assert!(cfg.public_is_https);
}

#[test]
fn redis_urls_of_every_topology_are_accepted() {
    for url in [
        "redis://127.0.0.1:6379",
        "rediss://redis.example:6380",
        "redis-cluster://h1:7000,h2:7001",
        "redis-sentinel://s1:26379,s2:26379/mymaster",
        "redis-sentinel://s1:26379?sentinelServiceName=mymaster",
    ] {
        let text = MINIMAL.replace(
            "routes:",
            &format!("session:\n  store: redis\n  redis_url: \"{url}\"\nroutes:"),
        );
        let cfg = load(&text).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(matches!(cfg.session.store, StoreConfig::Redis(_)));
    }
}

#[test]
fn each_problem_names_the_file_the_key_and_the_fix() {
    const F: &str = "/etc/portcullis/config.yaml";
    let cases: &[(&str, &str, &str)] = &[
        ("public_url: \"https://app.example.com\"", "public_url: \"http://app.example.com\"",
         "public_url: plain http is accepted only for loopback hosts (serve the app over https)"),
        ("public_url: \"https://app.example.com\"", "public_url: \"https://app.example.com/app\"",
         "public_url: must be an origin without path, query or fragment (e.g. \"https://app.example.com\")"),
        ("issuer: \"https://idp.example.com/realms/main\"", "issuer: \"http://idp.example.com\"",
         "oidc.issuer: plain http is accepted only for loopback hosts (use https, or set oidc.allow_plaintext_http: true to accept the risk)"),
        ("client_secret_file: \"secret/client-secret\"", "client_secret_file: \"missing\"",
         "oidc.client_secret_file: cannot read /etc/portcullis/missing: No such file or directory (os error 2) (check the path and its permissions)"),
        ("client_secret_file: \"secret/client-secret\"", "client_secret_file: \"secret/client-secret\"\n  client_secret: \"x\"",
         "oidc.client_secret: set either client_secret or client_secret_file, not both"),
        ("kind: api", "kind: apis",
         "routes[0].kind: \"apis\" is not a route kind (use api, public, page or static)"),
        ("upstream: \"http://127.0.0.1:8080\"", "upstream: \"http://backend.svc:8080\"",
         "routes[0].upstream: plain http to a non-loopback host would send bearer tokens unencrypted (use https, or set allow_plaintext_http: true on this route for in-cluster traffic)"),
        ("path: \"/api/\"", "path: \"/bff/api/\"",
         "routes[0].path: must not be under /bff/ (portcullis owns those endpoints)"),
        ("path: \"/api/\"", "host: \"api.example.com:443\"\n    path: \"/api/\"",
         "routes[0].host: \"api.example.com:443\" is not a host name (write it as in a Host header, without scheme or port; a wildcard only as a leading \"*.\" on a parent with a dot, e.g. *.example.com)"),
        ("path: \"/\"", "path: \"/api/\"",
         "routes[1].path: \"/api/\" on the same host as routes[0]: routes[1] could never be reached (each host and path once)"),
        ("routes:", "session:\n  idle_timeout: \"soon\"\nroutes:",
         "session.idle_timeout: \"soon\" is not a duration (write e.g. \"90s\", \"30m\", \"12h\")"),
        ("routes:", "session:\n  idle_timeout: \"13h\"\nroutes:",
         "session.idle_timeout: must not be longer than session.absolute_timeout"),
        ("routes:", "session:\n  same_site: none\nroutes:",
         "session.same_site: \"none\" is not allowed (use strict or lax; none would send the cookie on cross-site requests)"),
        ("routes:", "session:\n  cookie_name: \"portcullis\"\nroutes:",
         "session.cookie_name: must start with \"__Host-\" (the prefix makes browsers refuse Domain-scoped or non-Secure overwrites)"),
        ("routes:", "session:\n  store: redis\nroutes:",
         "session.redis_url: is required when session.store is redis (e.g. \"redis://127.0.0.1:6379\")"),
        ("routes:", "session:\n  store: redis\n  redis_url: \"http://x\"\nroutes:",
         "session.redis_url: has an unknown scheme (use redis://, rediss://, redis-cluster://, rediss-cluster:// or redis-sentinel://)"),
        ("routes:", "session:\n  store: redis\n  redis_url: \"redis-sentinel://:pw@s1:26379\"\nroutes:",
         "session.redis_url: needs the monitored service name as its path (e.g. redis-sentinel://s1:26379,s2:26379/mymaster)"),
        ("routes:", "session:\n  store: dynamo\nroutes:",
         "session.store: \"dynamo\" is not a store (use memory or redis)"),
        ("routes:", "oidc_extra: 1\nroutes:",
         "oidc_extra: is not a known key (check its spelling and indentation)"),
        ("client_id: \"spa\"", "client_id: \"spa\"\n  scopes: [\"profile\"]",
         "oidc.scopes: must include \"openid\" (portcullis is an OpenID Connect client)"),
        ("client_id: \"spa\"", "client_id: \"spa\"\n  allowed_login_params: [\"redirect_uri\"]",
         "oidc.allowed_login_params: \"redirect_uri\" is set by portcullis itself and cannot be passed through (remove it)"),
        ("routes:", "access:\n  email_domains: [\"@example.com\"]\nroutes:",
         "access.email_domains[0]: must be a domain such as example.com (no @, no leading dot, no wildcard)"),
        ("routes:", "access:\n  groups: [\"\"]\nroutes:",
         "access.groups[0]: must not be empty (list group names as the OP puts them in the groups claim)"),
        ("routes:", "listen: \"4480\"\nroutes:",
         "listen: \"4480\" is not an address (write IP:PORT, e.g. \"0.0.0.0:4480\")"),
        ("routes:", "listen: \"0.0.0.0:9000\"\nadmin_listen: \"127.0.0.1:9000\"\nroutes:",
         "admin_listen: must differ from listen (the admin port is never browser-facing)"),
        ("routes:", "server:\n  allowed_hosts: [\"shop.svc:8080\"]\nroutes:",
         "server.allowed_hosts[0]: \"shop.svc:8080\" is not a host name (write it as in a Host header, without scheme, port, path or wildcard)"),
        ("routes:", "server:\n  allowed_hosts: [\"*.example.com\"]\nroutes:",
         "server.allowed_hosts[0]: \"*.example.com\" is not a host name (write it as in a Host header, without scheme, port, path or wildcard)"),
        ("routes:", "server:\n  max_connections: 0\nroutes:",
         "server.max_connections: must be between 1 and 1000000"),
        ("routes:", "server:\n  upstream_keepalive_pool_size: 0\nroutes:",
         "server.upstream_keepalive_pool_size: must be between 1 and 1000000"),
        ("routes:", "server:\n  request_header_timeout: \"0s\"\nroutes:",
         "server.request_header_timeout: must be longer than zero (e.g. \"30s\", \"5m\")"),
        ("routes:", "security:\n  max_header_count: 300\nroutes:",
         "security.max_header_count: must be between 8 and 256"),
        ("routes:", "security:\n  max_header_bytes: 2000000\nroutes:",
         "security.max_header_bytes: must be between 256 and 524288 bytes"),
        ("routes:", "telemetry:\n  sampling_ratio: 1.5\nroutes:",
         "telemetry.sampling_ratio: must be between 0 and 1 (e.g. 0.1 records one new trace in ten)"),
        ("routes:", "telemetry:\n  otlp_endpoint: \"grpc://collector:4317\"\nroutes:",
         "telemetry.otlp_endpoint: \"grpc://collector:4317\" must be an http(s) URL (portcullis sends OTLP over HTTP/protobuf, usually to port 4318; gRPC is not supported)"),
        ("routes:", "telemetry:\n  otlp_endpoint: \"https://user:key@collector:4318\"\nroutes:",
         "telemetry.otlp_endpoint: must not hold credentials (pass them as headers in OTEL_EXPORTER_OTLP_HEADERS)"),
        ("routes:", "telemetry:\n  service_name: \" \"\nroutes:",
         "telemetry.service_name: must be 1 to 255 printable characters (e.g. \"portcullis\")"),
        ("routes:", "telemetry:\n  export_timeout: \"soon\"\nroutes:",
         "telemetry.export_timeout: \"soon\" is not a duration (write e.g. \"90s\", \"30m\", \"12h\")"),
        ("routes:", "telemetry:\n  trusted_trace_callers: [\"10.0.0.0/8\", \"ingress\"]\nroutes:",
         "telemetry.trusted_trace_callers[1]: \"ingress\" is not an IP address or network (write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"fd00::/8\")"),
        ("routes:", "telemetry:\n  trusted_trace_callers: [\"10.0.0.1/8\"]\nroutes:",
         "telemetry.trusted_trace_callers[0]: \"10.0.0.1/8\" is not a network: its prefix length is too long, or the address has bits set past it (write the network's first address, e.g. \"10.0.0.0/8\")"),
    ];
    for (from, to, expected) in cases {
        assert!(MINIMAL.contains(from), "fixture lacks {from}");
        let got = messages(&MINIMAL.replacen(from, to, 1));
        assert_eq!(got, vec![format!("{F}: {expected}")], "for {to:?}");
    }
}

#[test]
fn edge_settings_have_protective_defaults_and_hosts_are_normalised() {
    let cfg = load(MINIMAL).expect("valid");
    let s = &cfg.server;
    assert_eq!(s.request_header_timeout, Duration::from_secs(10));
    assert_eq!(s.request_body_timeout, Duration::from_secs(30));
    assert_eq!(s.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(s.max_connections, 1024);
    assert_eq!(
        s.upstream_keepalive_pool_size, 1024,
        "follows max_connections"
    );
    assert!(s.allowed_hosts.is_empty());
    assert_eq!(cfg.security.max_chunked_body_bytes, 1024 * 1024);
    assert!(cfg.routes.iter().all(|r| !r.allow_chunked_requests));
    let cfg = load(&MINIMAL.replacen(
        "routes:",
        "server:\n  allowed_hosts: [\"Shop.Shop.SVC\", \"10.0.0.7\", \"[::1]\"]\nroutes:",
        1,
    ))
    .expect("valid");
    assert_eq!(
        cfg.server.allowed_hosts,
        ["shop.shop.svc", "10.0.0.7", "[::1]"]
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let text = MINIMAL
        .replace("kind: api", "kind: apis")
        .replace("routes:", "session:\n  same_site: none\n  idle_timeout: \"x\"\n  typo: 1\nlog:\n  colour: red\nroutes:");
    let got = messages(&text);
    assert_eq!(
        got,
        vec![
            "/etc/portcullis/config.yaml: session.typo: is not a known key (check its spelling and indentation)",
            "/etc/portcullis/config.yaml: log.colour: is not a known key (check its spelling and indentation)",
        ],
        "unknown keys are reported together first"
    );
    let got = messages(&MINIMAL.replace("kind: api", "kind: apis").replace(
        "routes:",
        "session:\n  same_site: none\n  idle_timeout: \"x\"\nroutes:",
    ));
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn missing_required_keys_are_named() {
    let got = messages("listen: \"127.0.0.1:1\"\n");
    assert_eq!(
        got,
        vec![
            "/etc/portcullis/config.yaml: public_url: is required (the origin the browser sees, e.g. \"https://app.example.com\")",
            "/etc/portcullis/config.yaml: oidc: is required (set oidc.issuer, oidc.client_id and a client secret)",
            "/etc/portcullis/config.yaml: routes: needs at least one route (e.g. path \"/\" to your SPA, kind page)",
        ]
    );
}

#[test]
fn type_errors_name_the_key_and_empty_files_are_explained() {
    let got = messages(&MINIMAL.replace("routes:", "server:\n  threads: many\nroutes:"));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("/etc/portcullis/config.yaml: server.threads: wrong type"),
        "{got:?}"
    );
    assert_eq!(
        messages("  \n"),
        vec![
            "/etc/portcullis/config.yaml: (file): is empty (see the README for a complete example)"
        ]
    );
    let got = messages("public_url: [unclosed");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("/etc/portcullis/config.yaml: "),
        "{got:?}"
    );
}

#[test]
fn secrets_never_appear_in_messages() {
    let text = MINIMAL
        .replace(
            "client_secret_file: \"secret/client-secret\"",
            "client_secret: \"TOPSECRET\"",
        )
        .replace(
            "routes:",
            "session:\n  store: redis\n  redis_url: \"http://user:HUNTER2@x\"\nroutes:",
        );
    let all = messages(&text).join("\n");
    assert!(
        !all.contains("TOPSECRET") && !all.contains("HUNTER2"),
        "{all}"
    );
    let cfg = load(&MINIMAL.replace(
        "client_secret_file: \"secret/client-secret\"",
        "client_secret: \"TOPSECRET\"",
    ))
    .unwrap();
    assert!(!format!("{cfg:?}").contains("TOPSECRET"));
}

#[test]
fn unknown_keys_cannot_forge_lines() {
    let got = messages(&MINIMAL.replace("routes:", "\"a\\nFILE: evil\": 1\nroutes:"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0], "/etc/portcullis/config.yaml: a\\nFILE: evil: is not a known key (check its spelling and indentation)");
}

#[test]
fn telemetry_is_off_by_default_and_its_endpoint_gets_the_traces_path() {
    let cfg = load(MINIMAL).expect("valid");
    assert!(cfg.telemetry.traces.is_none(), "tracing is off by default");
    assert!(cfg.telemetry.trusted_trace_callers.is_empty());

    let on = |extra: &str| {
        load(&MINIMAL.replacen(
            "routes:",
            &format!("telemetry:\n  enabled: true\n{extra}routes:"),
            1,
        ))
        .expect("valid")
        .telemetry
    };
    let defaults = on("").traces.expect("on");
    assert_eq!(
        defaults.endpoint.as_str(),
        "http://localhost:4318/v1/traces"
    );
    assert_eq!(defaults.sampling_ratio, 1.0);
    assert_eq!(defaults.service_name, "portcullis");
    assert_eq!(defaults.export_timeout, Duration::from_secs(10));
    for (base, traces) in [
        (
            "http://collector.observability:4318/",
            "http://collector.observability:4318/v1/traces",
        ),
        (
            "https://otlp.example/tenant-7",
            "https://otlp.example/tenant-7/v1/traces",
        ),
    ] {
        let t = on(&format!(
            "  otlp_endpoint: \"{base}\"\n  sampling_ratio: 0.25\n"
        ));
        let export = t.traces.expect("on");
        assert_eq!(export.endpoint.as_str(), traces);
        assert_eq!(export.sampling_ratio, 0.25);
    }
}

#[test]
fn trusted_trace_callers_are_networks() {
    let t = load(&MINIMAL.replacen(
        "routes:",
        "telemetry:\n  trusted_trace_callers: [\"10.0.0.0/8\", \"192.0.2.7\", \"fd00::/8\"]\nroutes:",
        1,
    ))
    .expect("valid")
    .telemetry;
    assert!(
        t.traces.is_none(),
        "trusting callers does not turn tracing on"
    );
    let trusted = |ip: &str| {
        let ip = ip.parse().expect("an address");
        t.trusted_trace_callers.iter().any(|n| n.contains(ip))
    };
    for ip in [
        "10.1.2.3",
        "10.255.255.255",
        "192.0.2.7",
        "::ffff:10.0.0.9",
        "fd12::1",
    ] {
        assert!(trusted(ip), "{ip} is trusted");
    }
    for ip in [
        "11.0.0.1",
        "192.0.2.8",
        "127.0.0.1",
        "fe80::1",
        "::ffff:192.0.2.8",
    ] {
        assert!(!trusted(ip), "{ip} is not trusted");
    }
}

const INGRESS: &str = r#"
public_url: "https://auth.example.com"
oidc:
  issuer: "https://idp.example.com/realms/main"
  client_id: "spa"
  client_secret_file: "secret/client-secret"
session:
  cookie_domain: "Example.com"
ingress_auth:
  enabled: true
  controller: nginx
  trusted_ingress: ["10.0.0.0/8"]
  hosts:
    - host: app.example.com
      access:
        groups: ["admins"]
      paths:
        - { path: "/api/", kind: api }
        - { path: "/", kind: page }
    - host: "*.apps.example.com"
      paths:
        - { path: "/", kind: public }
"#;

#[test]
fn ingress_auth_needs_no_routes_and_shares_the_cookie_under_its_domain() {
    let cfg = load(INGRESS).expect("valid");
    assert!(cfg.routes.is_empty());
    assert_eq!(cfg.session.cookie_domain.as_deref(), Some("example.com"));
    assert_eq!(cfg.session.cookie_name, "__Secure-portcullis");
    let auth = cfg.ingress_auth.expect("ingress auth on");
    assert_eq!(auth.listen.to_string(), "0.0.0.0:4482");
    assert_eq!(auth.controller, IngressController::Nginx);
    let headers: Vec<(&str, &str)> = auth
        .identity_headers
        .iter()
        .map(|h| (h.name.as_str(), h.claim.as_str()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-auth-request-user", "sub"),
            ("x-auth-request-email", "email"),
            ("x-auth-request-preferred-username", "preferred_username"),
            ("x-auth-request-groups", "groups"),
        ]
    );
    assert_eq!(
        auth.hosts[0].host,
        HostPattern::Exact("app.example.com".into())
    );
    assert_eq!(
        auth.hosts[0].access.as_ref().map(|a| a.groups.clone()),
        Some(vec!["admins".to_string()])
    );
    assert_eq!(
        auth.hosts[1].host,
        HostPattern::Under(".apps.example.com".into())
    );
    assert!(auth.hosts[1].host.matches("x.apps.example.com"));
    assert!(!auth.hosts[1].host.matches("apps.example.com"));
    let custom = load(&INGRESS.replace(
        "  controller: nginx\n",
        "  controller: traefik\n  identity_headers:\n    X-User: preferred_username\n",
    ))
    .expect("valid");
    let auth = custom.ingress_auth.expect("on");
    assert_eq!(auth.identity_headers.len(), 1);
    assert_eq!(auth.identity_headers[0].name.as_str(), "x-user");
    assert_eq!(auth.controller, IngressController::Traefik);
}

#[test]
fn ingress_auth_problems_name_the_key_and_the_fix() {
    const F: &str = "/etc/portcullis/config.yaml";
    let cases: &[(&str, &str, &str)] = &[
        ("  controller: nginx\n", "",
         "ingress_auth.controller: is required: nginx (ingress-nginx auth-url), traefik (ForwardAuth) or envoy (ext_authz, Envoy Gateway)"),
        ("controller: nginx", "controller: haproxy",
         "ingress_auth.controller: \"haproxy\" is not a controller (use nginx, traefik or envoy)"),
        ("  trusted_ingress: [\"10.0.0.0/8\"]\n", "",
         "ingress_auth.trusted_ingress: must list the ingress controller's addresses (e.g. the pod network \"10.0.0.0/8\"): the auth endpoint answers no one else, and believes no one else's description of a request"),
        ("enabled: true", "enabled: true\n  listen: \"0.0.0.0:4480\"",
         "ingress_auth.listen: must differ from listen and admin_listen (the auth port is for the ingress controller only, never for browsers)"),
        ("enabled: true", "enabled: true\n  identity_headers:\n    Authorization: sub",
         "ingress_auth.identity_headers.Authorization: cannot carry a claim (Authorization, Cookie and Cache-Control are the answer's own; framing, routing and forwarding headers are never a claim's; each header once)"),
        ("enabled: true", "enabled: true\n  identity_headers:\n    Host: preferred_username",
         "ingress_auth.identity_headers.Host: cannot carry a claim (Authorization, Cookie and Cache-Control are the answer's own; framing, routing and forwarding headers are never a claim's; each header once)"),
        ("    - host: app.example.com\n", "    - host: app.example.com\n      machine_clients: { audiences: [spa] }\n",
         "ingress_auth.hosts[0].machine_clients.audiences: \"spa\" is oidc.client_id: the ID tokens portcullis receives carry that audience (name the API's own audience instead)"),
        ("    - host: app.example.com\n", "    - host: app.example.com\n      machine_clients: { audience: [api] }\n",
         "ingress_auth.hosts[0].machine_clients.audience: is not a known key (did you mean \"audiences\"?)"),
        ("enabled: true", "enabled: true\n  identity_assertion: true",
         "ingress_auth.identity_assertion: needs the identity_assertion section (its key_file signs the assertion)"),
        ("enabled: true", "enabled: true\n  identity_headers:\n    Transfer-Encoding: sub",
         "ingress_auth.identity_headers.Transfer-Encoding: cannot carry a claim (Authorization, Cookie and Cache-Control are the answer's own; framing, routing and forwarding headers are never a claim's; each header once)"),
        ("host: app.example.com", "host: \"app.example.com:443\"",
         "ingress_auth.hosts[0].host: \"app.example.com:443\" is not a host name (write it as in a Host header, without scheme or port; a wildcard only as a leading \"*.\" on a parent with a dot, e.g. *.example.com)"),
        ("host: \"*.apps.example.com\"", "host: \"*\"",
         "ingress_auth.hosts[1].host: \"*\" is not a host name (write it as in a Host header, without scheme or port; a wildcard only as a leading \"*.\" on a parent with a dot, e.g. *.example.com)"),
        ("host: \"*.apps.example.com\"", "host: APP.example.com",
         "ingress_auth.hosts[1].host: is the same host as ingress_auth.hosts[0].host (list each host once)"),
        ("host: \"*.apps.example.com\"", "host: \"*.example.org\"",
         "ingress_auth.hosts[1].host: \"example.org\" is not under session.cookie_domain \"example.com\": the session cookie would never reach it"),
        ("{ path: \"/api/\", kind: api }", "{ path: \"/api/\", kind: apis }",
         "ingress_auth.hosts[0].paths[0].kind: \"apis\" is not a route kind (use api, public or page)"),
        ("{ path: \"/api/\", kind: api }", "{ path: \"/api/;x\", kind: api }",
         "ingress_auth.hosts[0].paths[0].path: \"/api/;x\" must be a plain path starting with \"/\""),
        ("groups: [\"admins\"]", "groups: [\"\"]",
         "ingress_auth.hosts[0].access.groups[0]: must not be empty (list group names as the OP puts them in the groups claim)"),
        ("cookie_domain: \"Example.com\"", "cookie_domain: \".example.com\"",
         "session.cookie_domain: \".example.com\" is not a parent domain (write e.g. example.com: no scheme, port, leading dot or wildcard, at least two labels)"),
        ("cookie_domain: \"Example.com\"", "cookie_domain: \"com\"",
         "session.cookie_domain: \"com\" is not a parent domain (write e.g. example.com: no scheme, port, leading dot or wildcard, at least two labels)"),
        ("cookie_domain: \"Example.com\"", "cookie_domain: \"Example.com\"\n  cookie_name: \"__Host-portcullis\"",
         "session.cookie_name: must not start with \"__Host-\" when session.cookie_domain is set (browsers refuse a __Host- cookie with a Domain; use __Secure-)"),
        ("public_url: \"https://auth.example.com\"", "public_url: \"https://auth.example.org\"",
         "session.cookie_domain: \"example.com\" does not cover public_url's host \"auth.example.org\" (use a parent domain of it)"),
        ("enabled: true", "enabled: false",
         "ingress_auth.enabled: is not true, so the other ingress_auth keys would do nothing (set enabled: true, or remove them)"),
    ];
    for (from, to, expected) in cases {
        assert!(INGRESS.contains(from), "fixture lacks {from}");
        let got = messages(&INGRESS.replacen(from, to, 1));
        let expected = format!("{F}: {expected}");
        assert!(got.contains(&expected), "for {to:?}: {got:?}");
    }
    // Without the mode, routes are required as before.
    let without = INGRESS.split("ingress_auth:").next().unwrap_or_default();
    assert!(messages(without)
        .iter()
        .any(|m| m.contains("routes: needs at least one route")));
}

/// The FAPI keys (`private_key_jwt`, PAR, DPoP), read with a key file the test makes.
mod fapi {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    const F: &str = "/etc/portcullis/config.yaml";
    const JWT_CLIENT: &str =
        "token_endpoint_auth_method: private_key_jwt\n  client_key_file: \"keys/client.pem\"";

    fn load_with_key(text: &str) -> Result<Config, ConfigError> {
        let der = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .expect("a key");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der.as_ref())
        );
        let read = move |path: &Path| {
            if path.ends_with("keys/client.pem") {
                Ok(pem.clone())
            } else {
                read_secret(path)
            }
        };
        Config::from_yaml_with(text, Path::new(F), &read)
    }

    fn fapi_messages(text: &str) -> Vec<String> {
        match load_with_key(text) {
            Ok(_) => vec![],
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn a_fapi_client_needs_no_secret_and_gets_the_keys_defaults() {
        let text = MINIMAL
            .replace("client_secret_file: \"secret/client-secret\"", JWT_CLIENT)
            .replace(
                "client_id: \"spa\"",
                "client_id: \"spa\"\n  dpop: true\n  pushed_authorization_requests: required",
            )
            .replace("kind: api", "kind: api\n    dpop: true");
        let cfg = load_with_key(&text).expect("valid");
        assert_eq!(cfg.oidc.auth_method, TokenAuthMethod::PrivateKeyJwt);
        assert!(cfg.oidc.client_secret.is_none());
        let key = cfg.oidc.client_key.expect("a client key");
        assert_eq!(
            key.alg,
            SigningAlg::Es256,
            "an EC key signs ES256 unless told"
        );
        assert_eq!(key.kid, None);
        assert_eq!(cfg.oidc.pushed_authorization_requests, ParMode::Required);
        assert!(cfg.oidc.dpop && cfg.routes[0].dpop && !cfg.routes[1].dpop);
        let defaults = load(MINIMAL).expect("valid");
        assert_eq!(defaults.oidc.pushed_authorization_requests, ParMode::Off);
        assert!(!defaults.oidc.dpop && defaults.oidc.client_key.is_none());
    }

    #[test]
    fn each_fapi_problem_names_the_key_and_the_fix() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("client_id: \"spa\"", "client_id: \"spa\"\n  token_endpoint_auth_method: private_key_jwt", &[
                "oidc.client_key_file: is required with token_endpoint_auth_method: private_key_jwt (a PEM or JWK file holding the client's private key)",
                "oidc.client_secret_file: is not used with token_endpoint_auth_method: private_key_jwt (remove it)",
            ]),
            ("client_secret_file: \"secret/client-secret\"", "token_endpoint_auth_method: private_key_jwt\n  client_key_file: \"keys/client.pem\"\n  client_key_alg: PS256", &[
                "oidc.client_key_alg: /etc/portcullis/keys/client.pem: PS256 needs an RSA key, but the file holds an EC key (set oidc.client_key_alg to match the key, or replace the key)",
            ]),
            ("client_secret_file: \"secret/client-secret\"", "token_endpoint_auth_method: private_key_jwt\n  client_key_file: \"keys/client.pem\"\n  client_key_alg: HS256", &[
                "oidc.client_key_alg: \"HS256\" is not supported (use ES256, PS256 or RS256)",
            ]),
            ("client_id: \"spa\"", "client_id: \"spa\"\n  client_key_file: \"keys/client.pem\"", &[
                "oidc.client_key_file: is used only with token_endpoint_auth_method: private_key_jwt (set that, or remove this key)",
            ]),
            ("client_id: \"spa\"", "client_id: \"spa\"\n  token_endpoint_auth_method: client_secret_jwt", &[
                "oidc.token_endpoint_auth_method: \"client_secret_jwt\" is not supported (use client_secret_basic, client_secret_post, private_key_jwt or tls_client_auth)",
            ]),
            ("client_id: \"spa\"", "client_id: \"spa\"\n  token_endpoint_auth_method: tls_client_auth", &[
                "oidc.client_certificate_file: is required with token_endpoint_auth_method: tls_client_auth (the client certificate (PEM))",
                "oidc.client_certificate_key_file: is required with token_endpoint_auth_method: tls_client_auth (the client certificate's private key (PEM))",
                "oidc.client_secret_file: is not used with token_endpoint_auth_method: tls_client_auth (remove it)",
            ]),
            ("client_id: \"spa\"", "client_id: \"spa\"\n  client_certificate_file: \"keys/client.pem\"", &[
                "oidc.client_certificate_file: is used only with token_endpoint_auth_method: tls_client_auth (set that, or remove this key)",
            ]),
            ("client_id: \"spa\"", "client_id: \"spa\"\n  tls_ca_file: \"keys/client.pem\"", &[
                "oidc.tls_ca_file: /etc/portcullis/keys/client.pem: holds no certificate (write the CA certificates the provider's certificate chains to, as PEM)",
            ]),
            ("client_id: \"spa\"", "client_id: \"spa\"\n  pushed_authorization_requests: sometimes", &[
                "oidc.pushed_authorization_requests: \"sometimes\" is not a mode (use auto, required or off)",
            ]),
            ("kind: api", "kind: api\n    dpop: true", &[
                "routes[0].dpop: needs oidc.dpop: true (sessions hold no DPoP key otherwise; set it, or remove this key)",
            ]),
        ];
        for (from, to, expected) in cases {
            assert!(MINIMAL.contains(from), "fixture lacks {from}");
            let got = fapi_messages(&MINIMAL.replacen(from, to, 1));
            let expected: Vec<String> = expected.iter().map(|e| format!("{F}: {e}")).collect();
            assert_eq!(got, expected, "for {to:?}");
        }
    }

    const ASSERTION: &str = "identity_assertion:\n  key_file: \"keys/client.pem\"\n";

    #[test]
    fn identity_assertions_get_defaults_and_need_a_session_route() {
        let text = format!(
            "{}{ASSERTION}",
            MINIMAL.replace("kind: api", "kind: api\n    identity_assertion: true")
        );
        let cfg = load_with_key(&text).expect("valid");
        let a = cfg.identity_assertion.expect("configured");
        assert_eq!(a.alg, SigningAlg::Es256);
        assert_eq!(a.header.as_str(), "x-portcullis-assertion");
        assert_eq!(a.lifetime, Duration::from_secs(60));
        assert_eq!(a.claims, ["email", "name", "preferred_username", "groups"]);
        assert!(cfg.routes[0].identity_assertion && !cfg.routes[1].identity_assertion);
        assert!(load(MINIMAL).expect("valid").identity_assertion.is_none());
    }

    #[test]
    fn each_identity_assertion_problem_names_the_key_and_the_fix() {
        let route = "kind: api\n    identity_assertion: true";
        let public = "kind: public\n    identity_assertion: true";
        let with_key = |extra: &str| format!("{ASSERTION}{extra}");
        // (the route's kind written as, the section appended, the messages)
        let cases: &[(&str, String, &[&str])] = &[
            (route, String::new(), &[
                "routes[0].identity_assertion: needs the identity_assertion section (its key_file signs the assertion)",
            ]),
            (public, with_key(""), &[
                "routes[0].identity_assertion: is sent only with a session (this route never looks one up: give it policy user or optional)",
            ]),
            ("kind: api", "identity_assertion:\n  alg: ES256\n".into(), &[
                "identity_assertion.key_file: is required (a PEM or JWK file holding portcullis's private signing key: EC P-256 or RSA 2048+)",
            ]),
            ("kind: api", with_key("  alg: RS256\n"), &[
                "identity_assertion.alg: /etc/portcullis/keys/client.pem: the key cannot sign RS256 (set identity_assertion.alg to match the key: ES256 for EC P-256, PS256 or RS256 for RSA)",
            ]),
            ("kind: api", with_key("  header: Authorization\n  lifetime: 1h\n  claims: [email, exp]\n"), &[
                "identity_assertion.header: \"Authorization\" cannot carry the assertion (name a header of its own, e.g. X-Portcullis-Assertion)",
                "identity_assertion.lifetime: must be between 2s and 10m (upstreams see a fresh assertion on every request; a short life limits a leaked one)",
                "identity_assertion.claims[1]: \"exp\" cannot be copied (iss, aud, sub, iat and exp are portcullis's own; name an ID-token claim such as email)",
            ]),
        ];
        for (kind, section, expected) in cases {
            let text = format!("{}{section}", MINIMAL.replacen("kind: api", kind, 1));
            let expected: Vec<String> = expected.iter().map(|e| format!("{F}: {e}")).collect();
            assert_eq!(
                fapi_messages(&text),
                expected,
                "for {kind:?} and {section:?}"
            );
        }
    }
}

#[test]
fn a_misspelt_key_gets_the_key_it_was_meant_to_be() {
    const F: &str = "/etc/portcullis/config.yaml";
    let cases: &[(&str, &str, &str)] = &[
        (
            "routes:",
            "lsiten: \"0.0.0.0:4480\"\nroutes:",
            "lsiten: is not a known key (did you mean \"listen\"?)",
        ),
        (
            "client_id: \"spa\"",
            "client_id: \"spa\"\n  client_secert: \"x\"",
            "oidc.client_secert: is not a known key (did you mean \"client_secret\"?)",
        ),
        (
            "routes:",
            "session:\n  cookie_nmae: x\nroutes:",
            "session.cookie_nmae: is not a known key (did you mean \"cookie_name\"?)",
        ),
        (
            "kind: api",
            "kind: api\n    websockets: true",
            "routes[0].websockets: is not a known key (did you mean \"websocket\"?)",
        ),
        (
            "routes:",
            "ingress_auth:\n  hosts:\n    - host: a.example.com\n      path: []\nroutes:",
            "ingress_auth.hosts[0].path: is not a known key (did you mean \"paths\"?)",
        ),
        (
            "routes:",
            "colour: blue\nroutes:",
            "colour: is not a known key (check its spelling and indentation)",
        ),
    ];
    for (from, to, expected) in cases {
        let got = messages(&MINIMAL.replacen(from, to, 1));
        assert!(
            got.contains(&format!("{F}: {expected}")),
            "for {to:?}: {got:?}"
        );
    }
}

#[test]
fn routes_may_name_a_host_and_the_same_path_on_two_hosts_is_two_routes() {
    let cfg = load(&MINIMAL.replacen(
        "  - path: \"/\"",
        "  - host: \"*.Shop.example.com\"\n    path: \"/api/\"\n    upstream: \"http://127.0.0.1:8081\"\n    kind: public\n  - path: \"/\"",
        1,
    ))
    .expect("valid");
    assert_eq!(
        cfg.routes[1].host,
        Some(HostPattern::Under(".shop.example.com".into()))
    );
    assert_eq!(cfg.routes[0].host, None);
    assert_eq!(cfg.routes[0].prefix, cfg.routes[1].prefix);
    let needs_session = messages(&MINIMAL.replacen(
        "  - path: \"/\"",
        "  - host: \"*.shop.example.com\"\n    path: \"/\"\n    upstream: \"http://127.0.0.1:8081\"\n    kind: page\n  - path: \"/\"",
        1,
    ));
    assert_eq!(needs_session, ["/etc/portcullis/config.yaml: routes[1].host: names hosts by a wildcard and needs a session, but without session.cookie_domain its logins end on public_url's host, whose cookie it never sees (set session.cookie_domain, or name the hosts exactly)"]);
}

/// MINIMAL with its page route replaced by a static one; `extra` is added to that route.
fn with_static_route(root: &Path, extra: &str) -> String {
    MINIMAL.replacen(
        "    upstream: \"http://127.0.0.1:3000\"\n    kind: page",
        &format!(
            "    kind: static\n    root: {:?}{extra}",
            root.display().to_string()
        ),
        1,
    )
}

#[test]
fn a_static_route_serves_a_directory_with_spa_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), "<!doctype html>").expect("index");
    let cfg = load(&with_static_route(dir.path(), "")).expect("valid");
    let route = &cfg.routes[1];
    assert_eq!(route.kind, RouteKind::Static);
    assert!(route.upstream().is_none());
    let RouteTarget::Static(site) = &route.target else {
        panic!("not static: {:?}", route.target);
    };
    assert_eq!(
        site.root,
        std::fs::canonicalize(dir.path()).expect("canonical")
    );
    assert_eq!(site.index, "index.html");
    assert!(site.fallback && site.immutable_hashed);
    assert!(site.immutable_paths.is_empty());
    let cfg = load(&with_static_route(
        dir.path(),
        "\n    fallback: false\n    immutable_hashed: false\n    immutable_paths: [\"/assets/\"]\n    policy: user",
    ))
    .expect("valid");
    let RouteTarget::Static(site) = &cfg.routes[1].target else {
        panic!("not static");
    };
    assert!(!site.fallback && !site.immutable_hashed);
    assert_eq!(site.immutable_paths, ["/assets/"]);
    assert_eq!(cfg.routes[1].session, Some(SessionPolicy::User));
}

#[test]
fn static_route_problems_name_the_key_and_the_file() {
    const F: &str = "/etc/portcullis/config.yaml";
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let empty = tempfile::tempdir().expect("tempdir");
    std::fs::write(root.join("index.html"), "<!doctype html>").expect("index");
    std::fs::write(root.join("file"), "x").expect("file");
    let missing = root.join("missing");
    let cases: Vec<(String, String)> = vec![
        (
            MINIMAL.replacen("upstream: \"http://127.0.0.1:3000\"\n    kind: page", "kind: static", 1),
            "routes[1].root: is required with kind static (the directory holding the SPA's build, e.g. \"/srv/spa\")".into(),
        ),
        (
            with_static_route(&missing, ""),
            format!("routes[1].root: cannot open {}: No such file or directory (os error 2) (check the path and its permissions)", missing.display()),
        ),
        (
            with_static_route(&root.join("file"), ""),
            format!("routes[1].root: {} is not a directory", root.join("file").display()),
        ),
        (
            with_static_route(empty.path(), ""),
            format!("routes[1].index: {}/index.html is not a file (build the SPA into the root, or name its index file)", std::fs::canonicalize(empty.path()).expect("canonical").display()),
        ),
        (
            with_static_route(root, "\n    index: \"../index.html\""),
            "routes[1].index: \"../index.html\" must be a file name in the root (no path, not hidden)".into(),
        ),
        (
            with_static_route(root, "\n    upstream: \"http://127.0.0.1:3000\""),
            "routes[1].upstream: does not apply to kind static (portcullis serves its files itself: GET and HEAD, nothing forwarded; remove it)".into(),
        ),
        (
            with_static_route(root, "\n    methods: [POST]"),
            "routes[1].methods: does not apply to kind static (portcullis serves its files itself: GET and HEAD, nothing forwarded; remove it)".into(),
        ),
        (
            with_static_route(root, "\n    allow_ambiguous_paths: true"),
            "routes[1].allow_ambiguous_paths: does not apply to kind static (portcullis serves its files itself: GET and HEAD, nothing forwarded; remove it)".into(),
        ),
        (
            with_static_route(root, "\n    immutable_paths: [\"assets/\"]"),
            "routes[1].immutable_paths: \"assets/\" must be a plain path under the route, starting with \"/\" (e.g. \"/assets/\")".into(),
        ),
        (
            MINIMAL.replacen("kind: page", "kind: page\n    root: \"/srv/spa\"", 1),
            "routes[1].root: applies only to kind static (remove it, or set kind: static)".into(),
        ),
        (
            with_static_route(root, "\n    fallbak: false"),
            "routes[1].fallbak: is not a known key (did you mean \"fallback\"?)".into(),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(messages(&text), vec![format!("{F}: {expected}")], "{text}");
    }
}

#[test]
fn static_is_no_kind_for_an_ingress_path() {
    const F: &str = "/etc/portcullis/config.yaml";
    let got = messages(&MINIMAL.replacen(
        "routes:",
        "ingress_auth:\n  enabled: true\n  trusted_ingress: [\"10.0.0.0/8\"]\n  hosts:\n    - host: app.example.com\n      paths:\n        - { path: \"/\", kind: static }\nroutes:",
        1,
    ));
    assert!(
        got.contains(&format!("{F}: ingress_auth.hosts[0].paths[0].kind: \"static\" is not a route kind (use api, public or page)")),
        "{got:?}"
    );
}

#[test]
fn machine_clients_take_defaults_and_each_bad_key_is_named() {
    let with =
        |block: &str| MINIMAL.replacen("    kind: api", &format!("    kind: api\n{block}"), 1);
    let cfg = load(&with(
        "    machine_clients:\n      audiences: [\"https://api.example.com\"]",
    ))
    .expect("valid");
    let m = cfg.routes[0].machine_clients.as_ref().expect("configured");
    assert_eq!(m.audiences, ["https://api.example.com"]);
    assert!(m.issuers.is_empty());
    assert!(!m.introspection);
    assert_eq!(m.cache_ttl, Duration::from_secs(30));
    let cfg = load(&with("    machine_clients:\n      audiences: [api]\n      issuers: [\"https://other.example.com\"]\n      introspection: true\n      cache_ttl: 5s")).expect("valid");
    let m = cfg.routes[0].machine_clients.as_ref().expect("configured");
    assert_eq!(
        (m.issuers.len(), m.introspection, m.cache_ttl),
        (1, true, Duration::from_secs(5))
    );

    const F: &str = "/etc/portcullis/config.yaml";
    let cases = [
        (
            "    machine_clients:\n      introspection: true",
            "routes[0].machine_clients.audiences: must list at least one non-empty audience",
        ),
        (
            "    machine_clients:\n      audiences: [spa]",
            "routes[0].machine_clients.audiences: \"spa\" is oidc.client_id",
        ),
        (
            "    machine_clients:\n      audiences: [api]\n      issuers: [\"ftp://x\"]",
            "routes[0].machine_clients.issuers[0]: \"ftp://x\" must be an http(s) URL",
        ),
        (
            "    machine_clients:\n      audiences: [api]\n      issuers: [\"http://idp.corp.example\"]",
            "routes[0].machine_clients.issuers[0]: \"http://idp.corp.example\": plain http is accepted only for loopback hosts",
        ),
        (
            "    machine_clients:\n      audiences: [api]\n      cache_ttl: 1h",
            "routes[0].machine_clients.cache_ttl: must be at most 10m",
        ),
        (
            "    policy: none\n    machine_clients:\n      audiences: [api]",
            "routes[0].machine_clients: has no effect on a route that needs no session",
        ),
        (
            "    machine_clients:\n      audience: [api]",
            "routes[0].machine_clients.audience: is not a known key (did you mean \"audiences\"?)",
        ),
    ];
    for (block, expected) in cases {
        let got = messages(&with(block));
        assert!(
            got.iter()
                .any(|m| m.starts_with(&format!("{F}: {expected}"))),
            "for {block:?}: {got:?}"
        );
    }
}

#[test]
fn claim_rules_on_a_route_that_looks_no_session_up_are_refused() {
    for (kind, policy) in [("public", ""), ("api", "\n    policy: none")] {
        let text = MINIMAL.replacen(
            "kind: api",
            &format!("kind: {kind}{policy}\n    access: {{ groups: [admins] }}"),
            1,
        );
        assert_eq!(
            messages(&text),
            ["/etc/portcullis/config.yaml: routes[0].access: is never checked on a route that looks no session up (kind public or static, or policy none): give the route policy user (or optional), or remove the rules"],
            "{kind}{policy}"
        );
    }
    let optional = MINIMAL.replacen(
        "kind: api",
        "kind: public\n    policy: optional\n    access: { groups: [admins] }",
        1,
    );
    assert!(messages(&optional).is_empty());
}
