//! Golden-file tests, BuildKit-style: each `testfiles/<case>/` holds a `Dockerfile`, optional
//! `options` (lines `build-arg NAME=value`, `target NAME`, `platform os/arch`) and `plan.json`,
//! the expected plan. Each `testfiles-negative/<case>/` holds a `Dockerfile` (and optional
//! `options`) that must fail, and `error`, the expected message.
//!
//! `KILN_UPDATE_GOLDEN=1 cargo test -p kiln-dockerfile --test golden` rewrites the expected
//! files; review every change against BuildKit's behaviour before committing it.

use kiln_dockerfile::{plan, Dockerfile, PlanOptions, Platform};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn options(dir: &Path) -> PlanOptions {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let mut options = PlanOptions {
        build_args: BTreeMap::new(),
        target: None,
        build_platform: amd64.clone(),
        target_platform: amd64,
        ..PlanOptions::default()
    };
    let Ok(text) = fs::read_to_string(dir.join("options")) else {
        return options;
    };
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "build-arg" => {
                let (k, v) = value.split_once('=').expect("build-arg NAME=value");
                options.build_args.insert(k.to_string(), v.to_string());
            }
            "target" => options.target = Some(value.to_string()),
            "platform" => options.target_platform = Platform::parse_flag(value).unwrap(),
            other => panic!("{}: unknown option {other}", dir.display()),
        }
    }
    options
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").exists())
        .collect();
    cases.sort();
    cases
}

fn update() -> bool {
    std::env::var_os("KILN_UPDATE_GOLDEN").is_some()
}

fn outcome(dir: &Path) -> Result<String, String> {
    let text = fs::read_to_string(dir.join("Dockerfile")).unwrap();
    let dockerfile = Dockerfile::parse(&text, "Dockerfile").map_err(|e| e.to_string())?;
    let plan = plan(&dockerfile, &options(dir)).map_err(|e| e.to_string())?;
    Ok(serde_json::to_string_pretty(&plan).unwrap() + "\n")
}

#[test]
fn positive_cases_match_their_plans() {
    let mut failures = Vec::new();
    let cases = cases("testfiles");
    assert!(!cases.is_empty());
    for dir in &cases {
        let expected_path = dir.join("plan.json");
        match outcome(dir) {
            Err(e) => failures.push(format!("{}: unexpected error: {e}", dir.display())),
            Ok(actual) => {
                if update() {
                    fs::write(&expected_path, &actual).unwrap();
                    continue;
                }
                let expected = fs::read_to_string(&expected_path).unwrap_or_default();
                if expected != actual {
                    failures.push(format!(
                        "{}: plan differs from plan.json (rerun with KILN_UPDATE_GOLDEN=1 and review the diff)\n{}",
                        dir.display(),
                        first_difference(&expected, &actual)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn negative_cases_fail_with_their_errors() {
    let mut failures = Vec::new();
    let cases = cases("testfiles-negative");
    assert!(!cases.is_empty());
    for dir in &cases {
        let expected_path = dir.join("error");
        match outcome(dir) {
            Ok(_) => failures.push(format!(
                "{}: parsed and planned, but must fail",
                dir.display()
            )),
            Err(actual) => {
                if update() {
                    fs::write(&expected_path, format!("{actual}\n")).unwrap();
                    continue;
                }
                let expected = fs::read_to_string(&expected_path).unwrap_or_default();
                if expected.trim_end() != actual {
                    failures.push(format!(
                        "{}:\n  expected: {}\n  actual:   {actual}",
                        dir.display(),
                        expected.trim_end()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!("  line {}:\n  expected: {e}\n  actual:   {a}", i + 1);
        }
    }
    format!(
        "  lengths differ: expected {} lines, actual {}",
        expected.lines().count(),
        actual.lines().count()
    )
}
