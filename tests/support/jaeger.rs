//! Jaeger (`make test-deps` builds it into `.tools/bin`) as the trace backend: in-memory
//! storage, an OTLP/HTTP receiver and the query API on free loopback ports. Traces are read
//! back through the query API (`/api/traces`), as Jaeger's UI reads them.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{eventually, free_port};

/// How long a span may take to reach Jaeger: portcullis exports every 5 s (OpenTelemetry's
/// default batch delay), then Jaeger stores it.
const EXPORT_DEADLINE: Duration = Duration::from_secs(30);

pub struct Jaeger {
    pub otlp_port: u16,
    pub query_port: u16,
    /// Holds the configuration and the log.
    _dir: tempfile::TempDir,
    child: Child,
    http: reqwest::Client,
}

/// One span as the query API shows it.
#[derive(Debug, Clone)]
pub struct Span {
    pub span_id: String,
    pub operation: String,
    /// The span it is a child of, in this trace or (for a continued trace) the caller's.
    pub parent: Option<String>,
    pub service: String,
    pub tags: Value,
}

impl Span {
    /// A tag's value (`span.kind`, `http.response.status_code`, …).
    pub fn tag(&self, key: &str) -> Option<&Value> {
        self.tags
            .as_array()?
            .iter()
            .find(|t| t["key"] == key)
            .map(|t| &t["value"])
    }
}

#[derive(Debug, Clone)]
pub struct Trace {
    pub id: String,
    pub spans: Vec<Span>,
}

impl Trace {
    fn from_json(trace: &Value) -> Trace {
        let processes = &trace["processes"];
        let spans = trace["spans"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|s| Span {
                span_id: s["spanID"].as_str().unwrap_or_default().to_string(),
                operation: s["operationName"].as_str().unwrap_or_default().to_string(),
                parent: s["references"]
                    .as_array()
                    .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
                    .and_then(|r| r["spanID"].as_str())
                    .map(str::to_string),
                service: processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                tags: s["tags"].clone(),
            })
            .collect();
        Trace {
            id: trace["traceID"].as_str().unwrap_or_default().to_string(),
            spans,
        }
    }

    pub fn operations(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|s| s.operation.as_str()).collect()
    }

    pub fn span(&self, operation: &str) -> &Span {
        self.spans
            .iter()
            .find(|s| s.operation == operation)
            .unwrap_or_else(|| panic!("no {operation:?} span in {:?}", self.operations()))
    }

    pub fn by_id(&self, span_id: &str) -> &Span {
        self.spans
            .iter()
            .find(|s| s.span_id == span_id)
            .unwrap_or_else(|| panic!("no span {span_id} in {:?}", self.operations()))
    }

    /// The spans whose parent is `parent`.
    pub fn children(&self, parent: &Span) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|s| s.parent.as_deref() == Some(parent.span_id.as_str()))
            .collect()
    }
}

impl Jaeger {
    pub async fn start() -> Jaeger {
        let binary = super::repo_root().join(".tools/bin/jaeger");
        assert!(
            binary.exists(),
            "{} is missing: run `make test-deps` (make test does)",
            binary.display()
        );
        let (otlp_port, query_port, grpc_port) = (free_port(), free_port(), free_port());
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("jaeger.yaml");
        std::fs::write(&config, config_yaml(otlp_port, query_port, grpc_port))
            .expect("write jaeger config");
        let log = std::fs::File::create(dir.path().join("jaeger.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config=file:{}", config.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("jaeger starts");
        let jaeger = Jaeger {
            otlp_port,
            query_port,
            _dir: dir,
            child,
            http: reqwest::Client::new(),
        };
        jaeger.wait_ready().await;
        jaeger
    }

    async fn wait_ready(&self) {
        let services = self.query_url("/api/services");
        let otlp = format!("127.0.0.1:{}", self.otlp_port);
        eventually(
            "jaeger's query API and OTLP receiver to answer",
            Duration::from_secs(60),
            || {
                let query = self.http.get(&services).send();
                let otlp = otlp.clone();
                async move {
                    let query_up = query.await.is_ok_and(|r| r.status() == 200);
                    let otlp_up = tokio::net::TcpStream::connect(otlp).await.is_ok();
                    (query_up && otlp_up).then_some(())
                }
            },
        )
        .await;
    }

    fn query_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.query_port)
    }

    /// The `telemetry:` block that makes portcullis export here, trusting `trusted` callers.
    pub fn portcullis_config(&self, trusted: &[&str]) -> String {
        format!(
            "telemetry:\n  enabled: true\n  otlp_endpoint: \"http://127.0.0.1:{}\"\n  trusted_trace_callers: {trusted:?}\n",
            self.otlp_port
        )
    }

    /// The trace with this id as Jaeger holds it now, if it holds any of its spans.
    pub async fn trace(&self, trace_id: &str) -> Option<Trace> {
        let body = self.get_json(&format!("/api/traces/{trace_id}")).await;
        body["data"].as_array()?.first().map(Trace::from_json)
    }

    /// Waits until the trace with this id satisfies `complete` (its spans arrive in batches).
    pub async fn wait_for_trace(&self, trace_id: &str, complete: impl Fn(&Trace) -> bool) -> Trace {
        eventually(
            &format!("trace {trace_id} in jaeger"),
            EXPORT_DEADLINE,
            || async { self.trace(trace_id).await.filter(|t| complete(t)) },
        )
        .await
    }

    /// Every trace of `service` Jaeger holds, as the query API's JSON (for leak scans).
    pub async fn all_traces_json(&self, service: &str) -> Value {
        self.get_json(&format!(
            "/api/traces?service={service}&limit=10000&lookback=2h"
        ))
        .await
    }

    /// Every trace of `service` Jaeger holds.
    pub async fn traces(&self, service: &str) -> Vec<Trace> {
        self.all_traces_json(service).await["data"]
            .as_array()
            .map(|traces| traces.iter().map(Trace::from_json).collect())
            .unwrap_or_default()
    }

    /// Waits until some trace of `service` has a span named `operation` and satisfies
    /// `complete`; returns that trace.
    pub async fn wait_for_operation(
        &self,
        service: &str,
        operation: &str,
        complete: impl Fn(&Trace) -> bool,
    ) -> Trace {
        eventually(
            &format!("a {operation:?} trace in jaeger"),
            EXPORT_DEADLINE,
            || async {
                self.traces(service)
                    .await
                    .into_iter()
                    .find(|t| t.operations().contains(operation) && complete(t))
            },
        )
        .await
    }

    /// Reports a span as an instrumented service would (OTLP/HTTP with a JSON body): what the
    /// test upstream does with the `traceparent` portcullis sent it.
    pub async fn report_span(&self, service: &str, trace_id: &str, parent: &str, name: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let span = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"scope": {"name": "tests"}, "spans": [{
                "traceId": trace_id,
                "spanId": "5e2f0c1d9a7b3c41",
                "parentSpanId": parent,
                "name": name,
                "kind": 2,
                "startTimeUnixNano": (now - 1_000_000).to_string(),
                "endTimeUnixNano": now.to_string(),
            }]}],
        }]});
        let resp = self
            .http
            .post(format!("http://127.0.0.1:{}/v1/traces", self.otlp_port))
            .json(&span)
            .send()
            .await
            .expect("jaeger's OTLP receiver answers");
        assert_eq!(resp.status(), 200, "jaeger took the span");
    }

    async fn get_json(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(self.query_url(path))
            .send()
            .await
            .expect("jaeger's query API answers");
        resp.json().await.expect("JSON from jaeger")
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Only what the tests read: OTLP/HTTP in, memory storage, the query API out; the collector's
/// own metrics endpoint is off so it claims no fixed port.
fn config_yaml(otlp: u16, query: u16, grpc: u16) -> String {
    format!(
        r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{grpc}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
    )
}
