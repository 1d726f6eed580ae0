//! A syntax check of image references (docker's grammar), so a typo in FROM or `--from` is
//! reported at its line. Normalisation (`busybox` → `docker.io/library/busybox:latest`) belongs
//! to the registry client.

/// Checks `[host[:port]/]path[:tag][@algorithm:hex]` as docker's reference grammar defines it.
pub fn check_image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("empty image reference".into());
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(format!(
                "invalid tag {tag:?}: up to 128 letters, digits, '_', '.', '-'"
            ));
        }
    }
    if name.len() > 255 {
        return Err("repository name must not be longer than 255 characters".into());
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase())
        {
            check_domain(first)?;
            components.remove(0);
        }
    }
    for component in components {
        check_path_component(component)?;
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(stripped) = domain.strip_prefix('[') {
        let end = stripped
            .find(']')
            .ok_or_else(|| format!("invalid registry host {domain:?}"))?;
        (&domain[..end + 2], domain[end + 2..].strip_prefix(':'))
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid port in registry host {domain:?}"));
        }
    }
    if host.starts_with('[') {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("invalid registry host {domain:?}"))
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn check_path_component(component: &str) -> Result<(), String> {
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "repository name must be lowercase (got {component:?})"
        ));
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bad = || format!("invalid repository name component {component:?}");
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("invalid digest {digest:?}: expected algorithm:hex"))?;
    let algorithm_ok = algorithm
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c));
    if !algorithm_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("invalid digest {digest:?}"));
    }
    if algorithm == "sha256" && hex.len() != 64 {
        return Err(format!(
            "invalid digest {digest:?}: sha256 has 64 hex digits"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_references() {
        for ok in [
            "busybox",
            "library/busybox:1.36",
            "localhost:5000/a/b",
            "registry.example.com/team/app:v1.2-rc_3",
            "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a/b:t@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my-app__x.y",
            "[::1]:5000/img",
        ] {
            assert!(check_image_reference(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "Busybox",
            "a/B",
            "a:",
            "a:-x",
            "-a",
            "a..b",
            "a@sha256:12",
            "host:x/a",
            "a b",
            "$X",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad}");
        }
    }
}
