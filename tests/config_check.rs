//! `portcullis check` and `serve` on fixture files: exit codes per the contract and the exact
//! problem lines users read.

use std::path::Path;
use std::process::Command;

fn portcullis(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("portcullis runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixtures(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .expect("fixture dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

#[test]
fn valid_configurations_pass_check() {
    for file in fixtures("tests/fixtures/config/valid") {
        let (code, stdout, stderr) = portcullis(&["check", "--config", &file]);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert_eq!(stdout, format!("{file}: ok\n"));
    }
}

#[test]
fn invalid_configurations_print_every_problem_and_exit_2() {
    for file in fixtures("tests/fixtures/config/invalid") {
        let expected = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(file.replace(".yaml", ".stderr")),
        )
        .unwrap_or_else(|_| panic!("{file} needs a .stderr twin"));
        let (code, _, stderr) = portcullis(&["check", "--config", &file]);
        assert_eq!(code, 2, "{file}");
        assert_eq!(stderr, expected, "{file}");
        let (code, _, serve_stderr) = portcullis(&["serve", "--config", &file]);
        assert_eq!(
            (code, serve_stderr),
            (2, expected),
            "serve refuses the same file the same way"
        );
    }
}

#[test]
fn a_missing_file_is_a_configuration_error() {
    let (code, _, stderr) = portcullis(&["check", "--config", "no/such.yaml"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "no/such.yaml: (file): cannot read the file: No such file or directory (os error 2)\n"
    );
}

#[test]
fn the_config_may_come_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .env(
            "PORTCULLIS_CONFIG",
            "tests/fixtures/config/valid/contract-example.yaml",
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_prints_the_crate_version() {
    let (code, stdout, _) = portcullis(&["version"]);
    assert_eq!(
        (code, stdout),
        (0, format!("portcullis {}\n", env!("CARGO_PKG_VERSION")))
    );
}
