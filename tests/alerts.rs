//! The chart's alerts, tested as they ship: the PrometheusRule is rendered by `helm template`,
//! its groups go through `promtool check rules`, and `promtool test rules` runs the unit tests
//! in `tests/fixtures/alerts/alerts.test.yaml` against them, in which every alert fires once and
//! stays silent at least once. Every alert queries only families portcullis exports.

mod k8s;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

const UNIT_TESTS: &str = "tests/fixtures/alerts/alerts.test.yaml";

/// The PrometheusRule the chart renders with these extra `helm template` arguments.
fn rendered_rule(extra: &[&str]) -> Value {
    let mut args = vec!["--set", "prometheusRule.enabled=true"];
    args.extend_from_slice(extra);
    let yaml = k8s::render(&[], &args).unwrap_or_else(|e| panic!("helm template {args:?}: {e}"));
    k8s::documents(&yaml)
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule is rendered")
}

/// Writes the rule's groups as a Prometheus rules file, `rules.yaml`, with a copy of the unit
/// tests beside it (they name that file), into `dir`; returns the unit tests' path.
fn write_rules_and_tests(rule: &Value, dir: &Path) -> PathBuf {
    let groups = serde_json::json!({"groups": rule["spec"]["groups"]});
    let text = serde_yaml::to_string(&groups).expect("rules as YAML");
    fs::write(dir.join("rules.yaml"), text).expect("write rules.yaml");
    let tests = dir.join("alerts.test.yaml");
    fs::copy(k8s::repo().join(UNIT_TESTS), &tests).expect("copy the unit tests");
    tests
}

fn promtool(args: &[&str], dir: &Path) -> Result<String, String> {
    let mut cmd = k8s::promtool();
    cmd.args(args).current_dir(dir);
    k8s::run(cmd)
}

fn alert_names(rule: &Value) -> BTreeSet<String> {
    rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .map(|r| r["alert"].as_str().expect("an alerting rule").to_string())
        .collect()
}

#[test]
fn the_rendered_rules_pass_promtool_check() {
    for extra in [
        &[][..],
        // What operators change: grouping, extra labels, tuned thresholds, an alert turned off.
        &[
            "--set",
            "prometheusRule.groupBy={cluster,namespace}",
            "--set",
            "prometheusRule.additionalRuleLabels.team=shop",
            "--set",
            "prometheusRule.additionalRuleAnnotations.runbook_url=https://runbooks.example.com/portcullis",
            // Helm's --set makes 0.025 a string; the schema wants a number.
            "--set-json",
            "prometheusRule.alerts.storeLatency.p99Seconds=0.025",
            "--set",
            "prometheusRule.alerts.rateLimited.enabled=false",
        ][..],
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_rules_and_tests(&rendered_rule(extra), dir.path());
        if let Err(e) = promtool(&["check", "rules", "rules.yaml"], dir.path()) {
            panic!("promtool check rules failed for {extra:?}:\n{e}");
        }
    }
}

#[test]
fn every_alert_passes_its_unit_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rules_and_tests(&rendered_rule(&[]), dir.path());
    if let Err(e) = promtool(&["test", "rules", "alerts.test.yaml"], dir.path()) {
        panic!("promtool test rules failed:\n{e}");
    }
}

/// Guards the test above: the unit tests pin the shipped thresholds, so a changed one fails.
#[test]
fn the_unit_tests_notice_a_changed_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = rendered_rule(&[
        "--set-json",
        "prometheusRule.alerts.loginFailures.ratio=0.5",
    ]);
    write_rules_and_tests(&rule, dir.path());
    match promtool(&["test", "rules", "alerts.test.yaml"], dir.path()) {
        Ok(out) => panic!("the unit tests passed against a changed threshold:\n{out}"),
        Err(e) => assert!(e.contains("PortcullisLoginFailuresHigh"), "{e}"),
    }
}

/// Each alert has a case where it fires and one where it must not.
#[test]
fn every_alert_is_tested_firing_and_silent() {
    let text = fs::read_to_string(k8s::repo().join(UNIT_TESTS)).expect("unit tests");
    let tests: Value = serde_yaml::from_str(&text).expect("unit tests YAML");
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().expect("alert_rule_test"))
        .collect();
    let with = |firing: bool| -> BTreeSet<String> {
        cases
            .iter()
            .filter(|c| {
                c["exp_alerts"]
                    .as_array()
                    .is_some_and(|a| a.is_empty() != firing)
            })
            .map(|c| c["alertname"].as_str().expect("alertname").to_string())
            .collect()
    };
    let shipped = alert_names(&rendered_rule(&[]));
    assert!(shipped.len() >= 10, "too few alerts: {shipped:?}");
    assert_eq!(with(true), shipped, "alerts without a firing case");
    assert_eq!(with(false), shipped, "alerts without a silent case");
}

#[test]
fn the_rule_is_off_by_default_and_labelled_for_the_operators_prometheus() {
    assert!(
        !k8s::kinds(&k8s::documents(&k8s::render(&[], &[]).expect("render")))
            .contains(&"PrometheusRule".to_string())
    );
    let rule = rendered_rule(&[
        "--set",
        "prometheusRule.namespace=monitoring",
        "--set",
        "prometheusRule.labels.release=kube-prometheus-stack",
        "--set",
        "prometheusRule.additionalRuleLabels.team=shop",
        "--set",
        "prometheusRule.alerts.failClosed.severity=page",
        "--set",
        "prometheusRule.alerts.injectorCertificate.enabled=false",
    ]);
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let rules: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    for r in &rules {
        assert_eq!(r["labels"]["team"], "shop", "{}", r["alert"]);
        assert!(r["annotations"]["summary"].is_string(), "{}", r["alert"]);
        assert!(
            r["annotations"]["description"].is_string(),
            "{}",
            r["alert"]
        );
    }
    let fail_closed = rules
        .iter()
        .find(|r| r["alert"] == "PortcullisFailingClosed")
        .expect("PortcullisFailingClosed");
    assert_eq!(fail_closed["labels"]["severity"], "page");
    let names = alert_names(&rule);
    assert!(!names.contains("PortcullisInjectorCertificateExpiring"));
    assert!(names.contains("PortcullisInjectorErrors"));
}

#[test]
fn values_the_schema_refuses() {
    for (args, expected) in [
        (
            &["--set", "prometheusRule.groupBy={pod}"][..],
            "/prometheusRule/groupBy",
        ),
        (
            &["--set-json", "prometheusRule.alerts.failClosed.ratio=5"][..],
            "/prometheusRule/alerts/failClosed/ratio': maximum",
        ),
        (
            &[
                "--set",
                "prometheusRule.alerts.storeLatency.for=ten minutes",
            ][..],
            "/prometheusRule/alerts/storeLatency/for",
        ),
        (
            &["--set", "prometheusRule.alerts.loginFailure.enabled=true"][..],
            "loginFailure",
        ),
    ] {
        match k8s::render(&[], args) {
            Ok(_) => panic!("{args:?} rendered"),
            Err(e) => assert!(e.contains(expected), "{args:?}: {expected:?} not in:\n{e}"),
        }
    }
}

/// `portcullis_…` families an expression uses, histogram suffixes removed.
fn portcullis_families(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("portcullis_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_string()
        })
        .collect()
}

#[test]
fn every_alert_queries_families_portcullis_exports() {
    let sources: String = ["src/metrics.rs", "src/webhook/http.rs"]
        .iter()
        .map(|p| fs::read_to_string(k8s::repo().join(p)).expect("metrics source"))
        .collect();
    let rule = rendered_rule(&[]);
    let mut queried = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            queried.extend(portcullis_families(r["expr"].as_str().expect("expr")));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for family in &queried {
        assert!(
            sources.contains(&format!("\"{family}\"")),
            "an alert queries {family}, which portcullis does not export"
        );
    }
}

/// The API-server alert watches the webhook the chart registers, by its name.
#[test]
fn the_unreachable_alert_names_the_registered_webhook() {
    let docs = k8s::documents(
        &k8s::render(&[], &["--set", "prometheusRule.enabled=true"]).expect("render"),
    );
    let hook = &k8s::find(&docs, "MutatingWebhookConfiguration", "portcullis-injector")["webhooks"]
        [0]["name"];
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("PrometheusRule");
    let expr = rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .find(|r| r["alert"] == "PortcullisInjectorUnreachable")
        .and_then(|r| r["expr"].as_str())
        .expect("PortcullisInjectorUnreachable");
    assert!(
        expr.contains(&format!("name=\"{}\"", hook.as_str().expect("name"))),
        "{expr}"
    );
}

/// The alert's threshold: the number after its first comparison (`> 0.25`, `< 14 * 86400`).
fn threshold(expr: &str) -> f64 {
    let at = expr
        .char_indices()
        .find(|&(i, c)| (c == '>' || c == '<') && expr[i + 1..].starts_with(' '))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no comparison in {expr}"));
    expr[at + 2..]
        .lines()
        .next()
        .unwrap_or_default()
        .split('*')
        .map(|n| {
            n.trim()
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("threshold in {expr}"))
        })
        .product()
}

/// The Grafana dashboard has a panel per alert ("Alert <name>: …" in its description) that
/// plots the alert's families with the alert's default threshold drawn as its red step.
#[test]
fn the_dashboard_has_a_panel_per_alert_with_its_threshold() {
    let text =
        fs::read_to_string(k8s::repo().join("deploy/grafana/portcullis.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let rule = rendered_rule(&[]);
    for r in rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
    {
        let (name, expr) = (
            r["alert"].as_str().expect("alert"),
            r["expr"].as_str().expect("expr"),
        );
        let panel = panels
            .iter()
            .find(|p| {
                p["description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(&format!("Alert {name}: ")))
            })
            .unwrap_or_else(|| panic!("no dashboard panel for {name}"));
        let query = panel["targets"][0]["expr"].as_str().expect("expr");
        assert_eq!(
            portcullis_families(query),
            portcullis_families(expr),
            "{name}: the panel plots other families than the alert"
        );
        let red = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .expect("threshold steps")
            .iter()
            .find(|s| s["color"] == "red")
            .and_then(|s| s["value"].as_f64())
            .or_else(|| {
                // An alert that fires below its threshold: red up to the green step.
                panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"].as_f64()
            })
            .expect("a threshold value");
        assert_eq!(red, threshold(expr), "{name}: the panel's threshold");
    }
}
