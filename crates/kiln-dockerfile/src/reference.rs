//! Image-reference syntax for FROM and `--from`, so a typo is reported at its line. The grammar
//! (docker's, with normalisation) lives in `kiln_oci::reference`, shared with the registry client.

/// Checks `[host[:port]/]path[:tag][@algorithm:hex]` as docker's reference grammar defines it;
/// the error says what is wrong.
pub fn check_image_reference(reference: &str) -> Result<(), String> {
    kiln_oci::Reference::parse(reference)
        .map(|_| ())
        .map_err(|e| e.reason)
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
