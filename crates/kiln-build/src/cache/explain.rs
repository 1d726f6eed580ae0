//! Why a step missed: the inputs that differ from the closest entry found at its place.

use super::key::looks_secret;
use super::KeyInputs;
use std::collections::BTreeMap;

fn shown(name: &str, value: Option<&str>) -> String {
    match value {
        None => "unset".into(),
        Some(_) if looks_secret(name) => "(value hidden)".into(),
        Some(v) if v.starts_with("hidden ") => "(value hidden)".into(),
        Some(v) if v.chars().count() > 60 => {
            format!("{:?}…", v.chars().take(60).collect::<String>())
        }
        Some(v) => format!("{v:?}"),
    }
}

/// Lists what differs between `now` and the entry among `earlier` sharing the most inputs
/// with it; `None` when there is no earlier entry.
pub(super) fn closest_difference(now: &KeyInputs, earlier: &[KeyInputs]) -> Option<String> {
    let current: BTreeMap<&str, &str> = now
        .0
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let closest = earlier.iter().max_by_key(|e| {
        let same_parent = e.get("parent") == now.get("parent");
        let shared =
            e.0.iter()
                .filter(|(n, v)| current.get(n.as_str()) == Some(&v.as_str()))
                .count();
        (same_parent, shared)
    })?;
    let before: BTreeMap<&str, &str> = closest
        .0
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut reasons = Vec::new();
    let (mut changed, mut added, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    let names: std::collections::BTreeSet<&str> =
        current.keys().chain(before.keys()).copied().collect();
    for name in names {
        let (old, new) = (before.get(name).copied(), current.get(name).copied());
        if old == new {
            continue;
        }
        if let Some(path) = name.strip_prefix("file ") {
            match (old, new) {
                (Some(_), Some(_)) => changed.push(path),
                (None, _) => added.push(path),
                (_, None) => removed.push(path),
            }
            continue;
        }
        let reason = match name {
            "parent" => match (old, new) {
                (Some(o), Some(n)) if o.starts_with("base ") || n.starts_with("base ") => {
                    format!(
                        "base image changed: {} → {}",
                        o.trim_start_matches("base "),
                        n.trim_start_matches("base ")
                    )
                }
                _ => "an earlier step's result changed".into(),
            },
            "instruction" => "the instruction changed".into(),
            n if n.starts_with("var ") => {
                let var = &n[4..];
                format!("variable {var}: {} → {}", shown(var, old), shown(var, new))
            }
            other => format!("{other}: {} → {}", shown(other, old), shown(other, new)),
        };
        reasons.push(reason);
    }
    for (what, list) in [
        ("content changed", changed),
        ("added", added),
        ("removed", removed),
    ] {
        if list.is_empty() {
            continue;
        }
        let mut text = format!(
            "{what}: {}",
            list.iter().take(3).copied().collect::<Vec<_>>().join(", ")
        );
        if list.len() > 3 {
            text.push_str(&format!(" and {} more", list.len() - 3));
        }
        reasons.push(text);
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> KeyInputs {
        KeyInputs(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn names_the_changed_file_and_variable_but_no_secret() {
        let before = inputs(&[
            ("parent", "k1"),
            ("var NODE_ENV", "production"),
            ("var NPM_TOKEN", "s3cr3t"),
            ("file a.json", "file sha256:1"),
            ("file b.json", "file sha256:2"),
        ]);
        let now = inputs(&[
            ("parent", "k1"),
            ("var NODE_ENV", "test"),
            ("var NPM_TOKEN", "0ther"),
            ("file a.json", "file sha256:9"),
            ("file c.json", "file sha256:3"),
        ]);
        let why = closest_difference(&now, &[before]).unwrap();
        assert!(
            why.contains(r#"variable NODE_ENV: "production" → "test""#),
            "{why}"
        );
        assert!(why.contains("content changed: a.json"), "{why}");
        assert!(why.contains("added: c.json"), "{why}");
        assert!(why.contains("removed: b.json"), "{why}");
        assert!(!why.contains("s3cr3t") && !why.contains("0ther"), "{why}");
    }

    #[test]
    fn a_base_change_is_named_and_no_entry_explains_nothing() {
        let before = inputs(&[("parent", "base image a@sha256:1"), ("instruction", "x")]);
        let now = inputs(&[("parent", "base image a@sha256:2"), ("instruction", "x")]);
        let why = closest_difference(&now, &[before]).unwrap();
        assert_eq!(
            why,
            "base image changed: image a@sha256:1 → image a@sha256:2"
        );
        assert_eq!(closest_difference(&now, &[]), None);
    }
}
